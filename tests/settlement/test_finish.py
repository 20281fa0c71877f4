"""Finishing a request (seatbelt/settlement/finish.py) against a real memory ledger and a
real scanner: settled once, the audit line after the ledger took it, a fault queued for
retry, the kept copy shown on a streamed flow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow

from seatbelt.apis import route_request
from seatbelt.apis.base import Usage
from seatbelt.config.policy import fingerprint
from seatbelt.ledger import Cap, open_ledger
from seatbelt.ledger.base import Ledger, LedgerUnavailable
from seatbelt.metering.meter import Meter, Outcome
from seatbelt.runtime import Runtime
from seatbelt.settlement import finish as settlement
from tests.codec.test_keptbody import feed, scanner_for
from tests.wire import FIXTURES

CAPS = (Cap("key:k1", 10_000), Cap("account:team", None))
FX = FIXTURES["openai_chat_stream"]  # usage 19 + 238, reported


def streamed_flow() -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request.method, flow.request.path = "POST", FX.path
    assert flow.response is not None
    flow.response.headers["content-type"] = FX.content_type
    flow.response.raw_content = None  # streamed: mitmproxy kept nothing
    return flow


async def admitted(rt: Runtime, ledger: Ledger, reserved: int = 500) -> Meter:
    """A meter as admission leaves it: its hold taken, its scanner fed the whole stream."""
    route = route_request("POST", FX.path, {})
    assert route is not None
    hold = (await ledger.reserve(CAPS, reserved)).hold_id
    meter = Meter(
        flow_id="flow-1", family=route.family, route=route,
        facts=route.family.parse_request(route, dict(FX.request)), account="team", key="k1",
        credential_fp=fingerprint("sk-test"), model="gpt-4.1", model_label="gpt-4.1",
        host="api.openai.com",
        path=FX.path, reserved=reserved, prompt_estimate=20, ledger=ledger, hold_id=hold,
        caps=CAPS, fanout_key="k1",
    )
    meter.scanner = scanner_for(FX, keep_limit=1 << 20)
    feed(meter.scanner, FX.body)
    rt.meters[meter.flow_id] = meter
    rt.fanout.acquire("k1", meter.flow_id)
    rt.fanout.commit(meter.flow_id)
    return meter


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_finished_stream_is_settled_once_audited_once_and_shown(tmp_path: Path) -> None:
    rt, flow = Runtime(), streamed_flow()
    rt.audit.open(str(tmp_path / "a.jsonl"))

    async def go() -> tuple[int, int]:
        ledger = open_ledger("memory://")
        await ledger.open()
        meter = await admitted(rt, ledger)
        await settlement.finish(rt, meter, flow, completed=True)
        await settlement.finish(rt, meter, flow, completed=True)  # a second finish: nothing
        (key,) = await ledger.snapshot(CAPS[:1])
        return key.spent, key.reserved

    assert asyncio.run(go()) == (19 + 238, 0)
    rt.audit.close()
    (line,) = audit_lines(tmp_path / "a.jsonl")
    assert (line["prompt_tokens"], line["completion_tokens"], line["usage_source"],
            line["outcome"], line["reserved"], line["overrun"]) == (
        19, 238, "reported", "served", 500, False)
    assert line["credential_fp"] == fingerprint("sk-test")[:12]  # never the credential
    assert rt.meters == {} and rt.fanout.in_flight == {}  # the request is over
    assert "seatbelt: key=k1 account=team reserved=500 spent=19+238 (reported)" in flow.comment
    assert flow.response is not None and flow.response.raw_content == FX.body  # kept copy


def test_a_finish_the_ledger_cannot_take_is_queued_and_still_audited(tmp_path: Path) -> None:
    rt, flow = Runtime(), streamed_flow()
    rt.audit.open(str(tmp_path / "a.jsonl"))

    async def go() -> Runtime:
        ledger = open_ledger("memory://")
        await ledger.open()
        meter = await admitted(rt, ledger)
        rt.ledger = ledger

        def down(hold_id, action, actual, *, source, done) -> None:  # type: ignore[no-untyped-def]
            done(None, LedgerUnavailable("the ledger went away"))

        ledger.finish_soon = down  # type: ignore[method-assign]
        await settlement.finish(rt, meter, flow, completed=True)
        return rt

    asyncio.run(go())
    rt.audit.close()
    assert [(u.action, u.charge, u.source) for u in rt.unfinished] == [
        ("settle", 19 + 238, "reported")]
    assert not rt.health.up
    assert [x["usage_source"] for x in audit_lines(tmp_path / "a.jsonl")] == ["reported"]


def test_an_overrun_is_usage_above_the_token_hold() -> None:
    meter: Any = SimpleNamespace(price=None, hold_id="h", reserved=100)
    over = Outcome("settle", 90, 20, Usage(90, 20), "reported", "served")
    within = Outcome("settle", 50, 50, Usage(50, 50), "reported", "served")
    released = Outcome("release", None, None, Usage(), "none", "upstream_error")
    assert settlement.charged(meter, over) == (None, True)
    assert settlement.charged(meter, within) == (None, False)
    assert settlement.charged(meter, released) == (None, False)


def test_holds_of_names_the_token_and_usd_holds_with_their_charges_and_caps() -> None:
    usd_caps = (Cap("usd:key:k1", 1_000_000),)
    meter: Any = SimpleNamespace(ledger=object(), hold_id="t1", caps=CAPS, usd_hold_id="u1",
                                 usd_caps=usd_caps)
    assert settlement.holds_of(meter, 257, 4200) == [("t1", 257, CAPS), ("u1", 4200, usd_caps)]
    meter.ledger = None  # anonymous traffic: no ledger, nothing to finish
    assert settlement.holds_of(meter, 257, 4200) == []


def test_finish_holds_without_holds_records_at_once() -> None:
    seen: list[str] = []
    settlement.finish_holds(Runtime(), None, [], "settle", "reported", "f",
                            lambda: seen.append("recorded"))
    assert seen == ["recorded"]


def test_a_request_never_sent_is_told_apart_from_one_sent() -> None:
    sent = tflow.tflow()
    assert settlement.request_was_sent(sent)
    never = tflow.tflow()
    never.server_conn.timestamp_start = None
    assert not settlement.request_was_sent(never)
