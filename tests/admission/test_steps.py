"""The admission steps (seatbelt/admission/steps.py), each on its own over a real context:
what it refuses, what it fills in, what it takes. How the gate runs them (all or nothing)
is tests/admission/test_gate.py."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
from pathlib import Path

from seatbelt.admission import steps
from seatbelt.admission.budgetheaders import REMAINING
from seatbelt.admission.context import Admission
from seatbelt.config.policy import Policy
from seatbelt.ledger import open_ledger
from seatbelt.runtime import Runtime
from tests.admission.test_context import admission, chat, runtime, write_policy


def read_body(a: Admission) -> steps.Verdict:
    """The step, run to its end (it reads the body asynchronously)."""
    verdict = steps.read_body(a)
    return asyncio.run(verdict) if inspect.isawaitable(verdict) else verdict  # type: ignore[arg-type]


def authenticated(tmp_path: Path, body: dict | None = None, **kw: bool) -> Admission:
    rt, policy = runtime(), write_policy(tmp_path, **kw)
    a = admission(rt, policy, chat(body))
    assert steps.authenticate(a) is None
    return a


def test_a_path_servers_read_differently_is_refused_before_anything_else(
    tmp_path: Path,
) -> None:
    rt, policy = runtime(), write_policy(tmp_path)
    flow = chat()
    flow.request.path = "/v1/models#/../chat/completions"
    refusal = steps.check_route(admission(rt, policy, flow))
    assert refusal is not None and (refusal.status, refusal.code) == (400, "invalid_request")
    assert "read differently by different servers" in refusal.message
    assert steps.check_route(admission(rt, policy, chat())) is None
    assert steps.STEPS[0] is steps.check_route


def test_nothing_is_admitted_before_the_ledger_answers(tmp_path: Path) -> None:
    rt, policy = runtime(), write_policy(tmp_path)
    rt.policy = policy
    refusal = steps.check_ready(admission(rt, policy, chat()))
    assert refusal is not None and refusal.status == 503
    assert "the ledger is not available" in refusal.message
    rt.config_error = "policy.yaml: line 3: bad"
    refusal = steps.check_ready(admission(rt, policy, chat()))
    assert refusal is not None and "policy.yaml: line 3: bad" in refusal.message


def test_authenticate_finds_the_key_or_refuses_an_unknown_credential(tmp_path: Path) -> None:
    a = authenticated(tmp_path)
    assert a.key is not None and a.key.id == "alice"
    assert a.identity == "credential" and a.ops is not None
    rt, policy = runtime(), write_policy(tmp_path)
    stranger = admission(rt, policy, chat(credential="sk-stranger"))
    refusal = steps.authenticate(stranger)
    assert refusal is not None and refusal.status == 401 and stranger.key is None


def test_unmetered_routes_are_forwarded_only_for_anonymous_traffic(tmp_path: Path) -> None:
    rt, policy = runtime(), write_policy(tmp_path)
    flow = chat()
    flow.request.path = "/v1/some/new/endpoint"
    a = admission(rt, policy, flow)
    assert a.route.kind == "unmetered"
    assert steps.pass_unmetered_routes(a) is steps.FORWARD  # no key: not a budget's business
    assert steps.authenticate(a) is None and a.key is not None
    refusal = steps.pass_unmetered_routes(a)
    assert refusal is not None and refusal.status == 403
    metered = admission(rt, policy, chat())
    assert steps.pass_unmetered_routes(metered) is None


def test_read_body_decodes_and_reads_the_facts_or_refuses_400(tmp_path: Path) -> None:
    a = authenticated(tmp_path)
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]}
    a.flow.request.headers["content-encoding"] = "gzip"
    a.flow.request.raw_content = gzip.compress(json.dumps(body).encode())
    assert read_body(a) is None
    assert a.facts is not None and (a.model, a.facts.stream, a.facts.max_output) == (
        "gpt-4o-mini", True, 50)
    assert a.body == body
    broken = authenticated(tmp_path)
    broken.flow.request.content = b"{not json"
    refusal = read_body(broken)
    assert refusal is not None and refusal.status == 400


def test_a_model_off_the_list_is_refused_unless_shadowed(tmp_path: Path) -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
    a = authenticated(tmp_path, body)
    assert read_body(a) is None
    refusal = steps.check_model(a)
    assert refusal is not None and (refusal.status, refusal.code) == (403, "model_not_allowed")
    shadow = authenticated(tmp_path, body, enforce=False)
    assert read_body(shadow) is None
    assert steps.check_model(shadow) is None
    assert shadow.shadow_edits == ["shadow_refused:model_not_allowed"]


def test_a_request_naming_no_limit_gets_one_written_and_held(tmp_path: Path) -> None:
    a = authenticated(tmp_path)
    assert read_body(a) is None
    assert steps.estimate_hold(a) is None
    assert a.write_limit is not None and a.prompt_estimate > 0
    assert a.amount == a.prompt_estimate + a.write_limit
    assert a.edits == ["limit_written"] and a.body_changed
    assert steps.encode_body(a) is None
    sent = json.loads(a.flow.request.get_content() or b"")
    assert a.write_limit in (sent.get("max_tokens"), sent.get("max_completion_tokens"))


def test_an_unchanged_body_is_sent_byte_for_byte(tmp_path: Path) -> None:
    a = authenticated(tmp_path)
    a.flow.request.content = b'{"model":"gpt-4o-mini",  "messages":[]}'
    assert read_body(a) is None
    assert steps.encode_body(a) is None
    assert a.flow.request.content == b'{"model":"gpt-4o-mini",  "messages":[]}'


def test_max_concurrent_takes_a_slot_and_refuses_the_next(tmp_path: Path) -> None:
    rt, policy = runtime(), write_policy(tmp_path)
    first, second = admission(rt, policy, chat()), admission(rt, policy, chat())
    for a in (first, second):
        assert steps.authenticate(a) is None
    assert steps.limit_fanout(first) is None and first.taken.fanout_slot
    refusal = steps.limit_fanout(second)
    assert refusal is not None and (refusal.status, refusal.retry_after) == (429, 1)
    assert not second.taken.fanout_slot and rt.fanout.in_flight == {"alice": 1}


async def ready(rt: Runtime, policy: Policy) -> None:
    rt.policy = policy
    rt.ledger = open_ledger("memory://")
    await rt.open_ledger()


def test_reserve_holds_the_amount_and_sets_the_budget_header(tmp_path: Path) -> None:
    async def go() -> tuple[Admission, Admission, int]:
        rt, policy = runtime(), write_policy(tmp_path)
        await ready(rt, policy)
        fits, too_big = (admission(rt, policy, chat({"model": "gpt-4o-mini", "max_tokens": n,
                                                     "messages": []})) for n in (200, 2000))
        for a in (fits, too_big):
            assert steps.authenticate(a) is None
            assert await steps.read_body(a) is None and steps.estimate_hold(a) is None
        assert await steps.reserve_tokens(fits) is None
        refused = await steps.reserve_tokens(too_big)
        assert refused is not None and refused.status == 429
        await too_big.taken.undo(rt)
        assert rt.ledger is not None
        states = await rt.ledger.snapshot(policy.caps_for(policy.keys[0]))
        return fits, too_big, next(s.reserved for s in states if s.subject == "key:alice")

    fits, too_big, reserved = asyncio.run(go())
    assert fits.hold_id is not None and fits.taken.hold_ids == [fits.hold_id]
    assert fits.amount > 200 and too_big.amount > 1000
    assert fits.headers == {REMAINING: str(1000 - fits.amount)}
    assert too_big.hold_id is None and reserved == fits.amount  # the refused one holds nothing


def test_the_steps_run_in_contract_order() -> None:
    order = [s.__name__ for s in steps.STEPS]
    assert order.index("authenticate") < order.index("check_operator_switches") \
        < order.index("read_body") < order.index("estimate_hold") \
        < order.index("reserve_tokens") < order.index("reserve_usd") \
        < order.index("encode_body")
    assert order.index("check_ready") < order.index("authenticate")
