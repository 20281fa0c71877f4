"""What a response on a socket is charged (seatbelt/sockets/settle.py: outcome_of)."""

from __future__ import annotations

from seatbelt.apis.base import RequestFacts, Route, Usage
from seatbelt.metering.meter import Meter
from seatbelt.sockets.events import family_named
from seatbelt.sockets.session import Pending
from seatbelt.sockets.settle import outcome_of


def pending(**kw) -> Pending:  # type: ignore[no-untyped-def]
    family = family_named("responses")
    meter = Meter(flow_id="f/1", family=family, route=Route(family, "openai", "responses",
                                                             "metered"),
                  facts=RequestFacts("m", True, 100), account="a", key="k",
                  credential_fp=None, model="m", model_label="m", host="h", path="/v1/x",
                  reserved=150, prompt_estimate=50, ledger=None, hold_id=None)
    return Pending(meter, **kw)


def test_reported_usage_is_charged_as_reported() -> None:
    result = outcome_of(pending(), Usage(11, 7), failed=False, released_unsent=False)
    assert (result.action, result.charge, result.source) == ("settle", 18, "reported")


def test_an_error_before_the_response_began_releases() -> None:
    result = outcome_of(pending(), None, failed=True, released_unsent=False)
    assert (result.action, result.outcome) == ("release", "upstream_error")


def test_a_socket_cut_short_charges_the_prompt_and_the_output_seen() -> None:
    result = outcome_of(pending(created=True, output_tokens=9), None, failed=False,
                        released_unsent=False)
    assert (result.action, result.prompt_tokens, result.completion_tokens, result.outcome) \
        == ("settle", 50, 9, "aborted")
    # Sent but never begun: the prompt, as an HTTP request sent and cut off.
    assert outcome_of(pending(), None, failed=False, released_unsent=False).charge == 50


def test_a_live_turn_that_never_began_is_released() -> None:
    """Streamed Live audio opens a turn that may never run (no speech): nothing to charge."""
    result = outcome_of(pending(), None, failed=False, released_unsent=True)
    assert result.action == "release"
    began = outcome_of(pending(created=True), None, failed=False, released_unsent=True)
    assert began.action == "settle"
