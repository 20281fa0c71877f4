from types import SimpleNamespace

import pytest

from seatbelt.apis.base import RequestFacts, Route, Usage
from seatbelt.apis.openai import OpenAI as OpenAIFamily
from seatbelt.metering.meter import Meter, decide


def meter(scanner=None, produces_output=True):
    family = OpenAIFamily()
    route = Route(family, "openai", "chat", "metered")
    m = Meter(
        flow_id="f", family=family, route=route,
        facts=RequestFacts(model="m", stream=True, max_output=100, produces_output=produces_output),
        account="a", key="k", credential_fp=None, model="m", model_label="other", host="h",
        path="/v1/chat/completions", reserved=150, prompt_estimate=50, ledger=None, hold_id="h1",
    )
    m.scanner = scanner
    return m


def scanner(usage=None, output_chars=0, invalid=None, whole_seen=False, output_bytes=None,
            cut_off=False, bytes_in=0, upstream_error=None):
    return SimpleNamespace(usage=usage or Usage(), output_seen=output_chars > 0,
                           output_chars=output_chars, usage_invalid=invalid,
                           whole_seen=whole_seen, cut_off=cut_off, bytes_in=bytes_in,
                           upstream_error=upstream_error,
                           output_bytes=output_chars if output_bytes is None else output_bytes)


def test_claim_is_once():
    m = meter()
    assert m.claim() is True
    assert m.claim() is False


def test_reported_usage_settles_exactly():
    o = decide(meter(scanner(Usage(10, 20))), status=200, completed=True, sent=True)
    assert (o.action, o.charge, o.source, o.outcome) == ("settle", 30, "reported", "served")


def test_output_without_usage_is_estimated_never_free():
    o = decide(meter(scanner(output_chars=40)), status=200, completed=True, sent=True)
    assert o.source == "estimated" and o.prompt_tokens == 50 and o.completion_tokens == 10
    assert o.outcome == "served" and o.early_close is None


def test_left_early_is_charged_a_bound_on_the_output_seen():
    # 40 characters in 70 UTF-8 bytes: at most 70 tokens, whatever the tokenizer.
    o = decide(meter(scanner(output_chars=40, output_bytes=70)), status=200,
               completed=False, sent=True)
    assert (o.prompt_tokens, o.completion_tokens, o.outcome) == (50, 70, "aborted")
    assert o.early_close == "charged_output_bound" and o.source == "estimated"


def test_left_early_output_bound_stops_at_the_hold_never_below_the_estimate():
    o = decide(meter(scanner(output_chars=300, output_bytes=900)), status=200,
               completed=False, sent=True)
    assert o.completion_tokens == 100 and o.charge == 150  # the hold: 50 + 100
    m = meter(scanner(output_chars=600, output_bytes=600))
    m.reserved = 60  # allowance 10, below the chars/4 estimate of 150
    assert decide(m, status=200, completed=False, sent=True).completion_tokens == 150


@pytest.mark.parametrize("output_chars", [0, 8])
def test_left_early_with_hidden_reasoning_is_charged_the_hold(output_chars):
    m = meter(scanner(output_chars=output_chars))
    m.facts = RequestFacts(model="o3", stream=True, max_output=100, hidden_reasoning=True)
    o = decide(m, status=200, completed=False, sent=True)
    assert (o.charge, o.early_close, o.outcome) == (150, "charged_hold", "aborted")


def test_hidden_reasoning_with_its_usage_frame_settles_as_reported():
    m = meter(scanner(Usage(40, 90), output_chars=8))
    m.facts = RequestFacts(model="o3", stream=True, max_output=100, hidden_reasoning=True)
    o = decide(m, status=200, completed=False, sent=True)
    assert (o.charge, o.source, o.early_close) == (130, "reported", None)


def test_cut_off_is_charged_the_allowance_or_what_the_upstream_counted():
    o = decide(meter(scanner(output_chars=500, cut_off=True)), status=200, completed=False,
               sent=True)
    assert (o.prompt_tokens, o.completion_tokens, o.source) == (50, 100, "estimated")
    o = decide(meter(scanner(Usage(30, 180), cut_off=True)), status=200, completed=False,
               sent=True)
    assert (o.prompt_tokens, o.completion_tokens, o.source) == (30, 180, "reported")


def test_invalid_usage_falls_back_to_estimate():
    o = decide(meter(scanner(Usage(10, 20), output_chars=8, invalid="negative")),
               status=200, completed=True, sent=True)
    assert o.source == "estimated"


def test_sent_but_no_output_charges_the_prompt():
    o = decide(meter(None), status=None, completed=False, sent=True)
    assert (o.action, o.charge, o.source) == ("settle", 50, "estimated")


@pytest.mark.parametrize("status,sent", [(500, True), (429, True), (None, False)])
def test_release_when_never_sent_or_upstream_error(status, sent):
    m = meter(scanner(Usage(10, 20)) if status is not None else None)
    o = decide(m, status=status, completed=status is not None, sent=sent)
    assert (o.action, o.source) == ("release", "none")


def test_embeddings_have_no_completion():
    o = decide(meter(scanner(Usage(12, None)), produces_output=False), status=200,
               completed=True, sent=True)
    assert (o.source, o.prompt_tokens, o.completion_tokens) == ("reported", 12, 0)


def test_client_closing_after_the_usage_frame_was_served():
    """The error hook fired (client left after [DONE]) but the whole answer went out."""
    o = decide(meter(scanner(Usage(10, 20))), status=200, completed=False, sent=True)
    assert (o.source, o.outcome) == ("reported", "served")


@pytest.mark.parametrize("completed", [True, False])
def test_a_body_read_whole_but_never_seen_charges_the_hold(completed):
    """Cut before its end (or taken by another addon): the upstream may have generated up
    to the limit, and nothing of it was seen."""
    m = meter(scanner())
    m.read_whole = True
    o = decide(m, status=200, completed=completed, sent=True)
    assert (o.action, o.prompt_tokens, o.completion_tokens, o.source) == (
        "settle", 50, 100, "estimated")


def test_a_body_read_whole_and_seen_is_judged_as_usual():
    m = meter(scanner(Usage(10, 20), whole_seen=True))
    m.read_whole = True
    o = decide(m, status=200, completed=True, sent=True)
    assert (o.charge, o.source) == (30, "reported")


def test_a_completed_body_none_of_which_could_be_read_is_charged_the_hold():
    """200 and bytes, but no output text, no output count and no error in them (a framing
    seatbelt does not read): the upstream may have generated up to its limit."""
    o = decide(meter(scanner(bytes_in=900)), status=200, completed=True, sent=True)
    assert (o.action, o.prompt_tokens, o.completion_tokens, o.source, o.outcome) == (
        "settle", 50, 100, "estimated", "served")
    o = decide(meter(scanner(Usage(70, None), bytes_in=900)), status=200, completed=True,
               sent=True)
    assert (o.prompt_tokens, o.completion_tokens) == (70, 100)  # a prompt count alone


@pytest.mark.parametrize("read", [
    {"output_chars": 8}, {"usage": Usage(10, 20)}, {"upstream_error": "overloaded: busy"}])
def test_a_body_with_anything_read_in_it_is_not_charged_the_hold(read):
    o = decide(meter(scanner(bytes_in=900, **read)), status=200, completed=True, sent=True)
    assert o.charge < 150
    assert decide(meter(scanner()), status=200, completed=True, sent=True).charge == 50


def test_a_real_scanner_that_read_nothing_of_a_body_leaves_it_charged_the_hold():
    from seatbelt.metering.scanner import Scanner

    m = meter()
    sc = Scanner(m.family, m.route, m.facts, content_type="text/event-stream",
                 content_encoding="", hide_injected_usage=False)
    sc(b"\x00\x9f binary \xff" * 40)
    sc(b"")
    m.scanner = sc
    assert decide(m, status=200, completed=True, sent=True).charge == 150
