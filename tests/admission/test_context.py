"""The admission context (seatbelt/admission/context.py): `Taken.undo` gives back all a
request took, and `Admission.enforced` is the one shadow-mode rule."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow
from prometheus_client import CollectorRegistry

from seatbelt.admission.context import Admission, Taken
from seatbelt.admission.refusals import Refusal
from seatbelt.apis import route_request
from seatbelt.config.policy import Policy, fingerprint, load_policy
from seatbelt.ledger import Cap, open_ledger
from seatbelt.ledger.base import Ledger, LedgerUnavailable
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime

CAPS = [Cap("key:alice", 1000)]

POLICY = """\
version: 1
require_auth: true
keys:
  - id: alice
    account: team
    credential_sha256: {fp}
    cap: 1000
    enforce: {enforce}
    models: [gpt-4o-mini]
    max_concurrent: 1
"""


def write_policy(tmp_path: Path, *, enforce: bool = True) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(fp=fingerprint("sk-alice"),
                                  enforce=str(enforce).lower()))
    return load_policy(str(path))


def chat(body: dict | None = None, credential: str = "sk-alice") -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "POST", "/v1/chat/completions"
    flow.request.host = "api.openai.com"
    flow.request.headers["authorization"] = f"Bearer {credential}"
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = json.dumps(
        body if body is not None else
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return flow


def admission(rt: Runtime, policy: Policy, flow: http.HTTPFlow) -> Admission:
    """The context the gate (seatbelt/admission/gate.py) builds for one request."""
    route = route_request(flow.request.method, flow.request.path, dict(flow.request.headers),
                          llm_host=True)
    assert route is not None
    return Admission(rt=rt, metrics=rt.metrics, flow=flow, route=route, policy=policy,
                     path=flow.request.path.split("?", 1)[0], taken=Taken(flow.id, rt.fanout))


def runtime() -> Runtime:
    return Runtime(metrics=Metrics(CollectorRegistry()))


def test_undo_gives_back_the_fanout_slot_and_every_hold() -> None:
    rt = runtime()

    async def go() -> tuple[int, dict[str, int]]:
        ledger = open_ledger("memory://")
        await ledger.open()
        taken = Taken("flow-1", rt.fanout)
        rt.fanout.acquire("alice", "flow-1")
        taken.fanout_slot = True
        for amount in (300, 200):
            taken.hold(ledger, (await ledger.reserve(CAPS, amount)).hold_id)
        taken.hold(ledger, None)  # a refused reservation holds nothing
        assert len(taken.hold_ids) == 2
        await taken.undo(rt)
        assert taken.hold_ids == [] and not taken.fanout_slot
        await taken.undo(rt)  # twice: nothing more to give back
        (state,) = await ledger.snapshot(CAPS)
        return state.reserved, dict(rt.fanout.in_flight)

    assert asyncio.run(go()) == (0, {})
    assert rt.budgets.dirty


def test_a_release_the_ledger_cannot_take_goes_to_the_retry_queue() -> None:
    rt = runtime()

    async def go() -> list[tuple[str, str]]:
        ledger: Ledger = open_ledger("memory://")
        await ledger.open()
        taken = Taken("flow-1", rt.fanout)
        hold = (await ledger.reserve(CAPS, 300)).hold_id
        taken.hold(ledger, hold)
        rt.ledger = ledger

        async def down(hold_id: str) -> None:
            raise LedgerUnavailable("gone")

        ledger.release = down  # type: ignore[method-assign]
        await taken.undo(rt)
        return [(u.hold_id, u.action) for u in rt.unfinished]

    (entry,) = asyncio.run(go())
    assert entry[1] == "release"


def test_an_anonymous_request_is_named_anonymous(tmp_path: Path) -> None:
    rt, policy = runtime(), write_policy(tmp_path)
    a = admission(rt, policy, chat())
    assert (a.key_id, a.account_id, a.stream, a.family.name) == (
        "anonymous", "anonymous", False, "openai")
    a.key = policy.keys[0]
    assert (a.key_id, a.account_id) == ("alice", "team")


def test_enforced_refuses_unless_the_key_is_in_shadow_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refusal = Refusal(403, "model_not_allowed", "no")
    rt = runtime()
    enforcing = write_policy(tmp_path)
    a = admission(rt, enforcing, chat())
    assert a.enforced(refusal)  # no key yet (ops None): always enforced
    a.key = enforcing.keys[0]
    a.ops = enforcing.effective(a.key)
    assert a.enforced(refusal) and a.shadow_edits == []
    shadow = write_policy(tmp_path, enforce=False)
    s = admission(rt, shadow, chat())
    s.key = shadow.keys[0]
    s.ops = shadow.effective(s.key)
    with caplog.at_level(logging.INFO, logger="seatbelt"):
        assert not s.enforced(refusal)
    assert s.shadow_edits == ["shadow_refused:model_not_allowed"]
    assert rt.metrics.registry.get_sample_value(
        "seatbelt_shadow_refusals_total",
        {"account": "team", "key": "alice", "outcome": refusal.outcome}) == 1
    assert "shadow mode: key alice would be refused model_not_allowed (403)" in caplog.text
