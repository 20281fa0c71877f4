"""Admission on a WebSocket (seatbelt/sockets/admit.py): the handshake authenticated like an
HTTP request, each response held like one, failures refused. Over a real socket:
tests/e2e/test_websocket.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import tflow
from prometheus_client import CollectorRegistry

from seatbelt.admission.gate import Gate
from seatbelt.admission.refusals import Refusal
from seatbelt.apis.base import RequestFacts
from seatbelt.config.policy import Policy, fingerprint, load_policy
from seatbelt.ledger import open_ledger
from seatbelt.ledger.base import LedgerUnavailable
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime
from seatbelt.sockets import admit
from seatbelt.sockets.events import Kind
from seatbelt.sockets.session import Pending, Session
from tests.admission.test_context import admission, chat

POLICY = """\
version: 1
require_auth: true
keys:
  - id: alice
    account: team
    credential_sha256: {fp}
    cap: 1000
    max_concurrent: 1
"""


def policy_at(tmp_path: Path, text: str = POLICY, name: str = "policy.yaml") -> Policy:
    (tmp_path / name).write_text(text.format(fp=fingerprint("sk-alice")))
    return load_policy(str(tmp_path / name))


def upgrade(credential: str | None = "sk-alice") -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.host = "api.openai.com"
    flow.request.path = "/v1/realtime?model=gpt-realtime"
    flow.request.headers["upgrade"] = "websocket"
    if credential is not None:
        flow.request.headers["authorization"] = f"Bearer {credential}"
    return flow


async def ready_gate(policy: Policy, audit: Path | None = None) -> Gate:
    rt = Runtime(metrics=Metrics(CollectorRegistry()))
    rt.policy = policy
    rt.ledger = open_ledger("memory://")
    await rt.open_ledger()
    if audit is not None:
        rt.audit.open(str(audit))
    return Gate(rt, rt.metrics)


def test_a_socket_route_is_metered_and_names_its_family() -> None:
    live = admit.socket_route(Kind.LIVE, upgrade().request)
    realtime = admit.socket_route(Kind.REALTIME, upgrade().request)
    assert (live.family.name, live.provider, live.kind) == ("gemini", "gemini", "metered")
    assert (realtime.family.name, realtime.endpoint, realtime.kind) == (
        "openai", "realtime", "metered")


def test_run_stops_at_the_first_refusal_and_turns_failures_into_refusals(
    tmp_path: Path,
) -> None:
    rt = Runtime(metrics=Metrics(CollectorRegistry()))
    a = admission(rt, policy_at(tmp_path), chat())
    ran: list[str] = []
    refusal = Refusal(403, "key_disabled", "no")

    def refuses(_: object) -> Refusal:
        ran.append("refuses")
        return refusal

    def never(_: object) -> None:
        ran.append("never")

    def faults(_: object) -> None:
        raise LedgerUnavailable("gone")

    def bug(_: object) -> None:
        raise KeyError("a bug")

    assert asyncio.run(admit.run(a, (refuses, never))) is refusal and ran == ["refuses"]
    rt.health.set_up(True)
    down = asyncio.run(admit.run(a, (faults,)))
    assert down is not None and down.status == 503 and not rt.health.up
    internal = asyncio.run(admit.run(a, (bug,)))
    assert internal is not None and internal.code == "internal_error"


def test_the_handshake_opens_a_session_for_a_known_key(tmp_path: Path) -> None:
    flow = upgrade()

    async def go() -> tuple[Session | None, Gate]:
        gate = await ready_gate(policy_at(tmp_path))
        return await admit.handshake(gate, flow, Kind.REALTIME), gate

    session, gate = asyncio.run(go())
    assert session is not None and flow.response is None  # on to the upstream
    assert (session.key_id, session.model, session.fanout_key) == (
        "alice", "gpt-realtime", "alice")
    assert gate.rt.fanout.in_flight == {"alice": 1}  # the socket holds its slot
    assert flow.comment == "seatbelt: socket key=alice account=team"


def test_the_handshake_of_an_unknown_key_is_refused_before_the_upstream(
    tmp_path: Path,
) -> None:
    flow = upgrade("sk-stranger")

    async def go() -> tuple[Session | None, Gate]:
        gate = await ready_gate(policy_at(tmp_path))
        return await admit.handshake(gate, flow, Kind.REALTIME), gate

    session, gate = asyncio.run(go())
    assert session is None and flow.response is not None and flow.response.status_code == 401
    assert gate.rt.fanout.in_flight == {}


def test_a_handshake_without_a_policy_is_refused_503() -> None:
    rt = Runtime(metrics=Metrics(CollectorRegistry()))
    rt.config_error = "policy.yaml: line 2: bad"
    flow = upgrade()
    assert asyncio.run(admit.handshake(Gate(rt, rt.metrics), flow, Kind.REALTIME)) is None
    assert flow.response is not None and flow.response.status_code == 503
    assert "policy.yaml: line 2: bad" in (flow.response.get_text() or "")


def test_a_handshake_waits_for_the_ledger_opening_at_start(tmp_path: Path) -> None:
    """Like an HTTP request (seatbelt/admission/gate.py, issue 12 item 5): a handshake that
    arrives while the ledger is still opening waits for it instead of a 503."""
    flow = upgrade()

    async def go() -> Session | None:
        rt = Runtime(metrics=Metrics(CollectorRegistry()))
        rt.policy = policy_at(tmp_path)
        rt.use_ledger("memory://")  # opens in the background
        assert not rt.ready()
        return await admit.handshake(Gate(rt, rt.metrics), flow, Kind.REALTIME)

    session = asyncio.run(go())
    assert flow.response is None and session is not None and session.key_id == "alice"


def test_a_socket_follows_policy_reloads_and_loses_a_removed_key(tmp_path: Path) -> None:
    async def go() -> tuple[Refusal | None, Refusal | None, Session]:
        gate = await ready_gate(policy_at(tmp_path))
        session = await admit.handshake(gate, upgrade(), Kind.REALTIME)
        assert session is not None
        unchanged = admit.follow_policy(gate.rt, session)
        gate.rt.policy = policy_at(tmp_path, "version: 1\nrequire_auth: true\n", "empty.yaml")
        return unchanged, admit.follow_policy(gate.rt, session), session

    unchanged, removed, session = asyncio.run(go())
    assert unchanged is None
    assert removed is not None and removed.status == 401 and session.key is None


def test_each_response_is_held_or_refused_and_a_refusal_is_audited(tmp_path: Path) -> None:
    audit = tmp_path / "a.jsonl"

    async def go() -> tuple[Pending | Refusal, Pending | Refusal, list[int]]:
        gate = await ready_gate(policy_at(tmp_path), audit)
        session = await admit.handshake(gate, upgrade(), Kind.REALTIME)
        assert session is not None
        facts = RequestFacts(model="gpt-realtime", stream=True, max_output=200)
        held = await admit.admit_response(gate.rt, gate, session, {}, facts, 100)
        big = RequestFacts(model="gpt-realtime", stream=True, max_output=5000)
        refused = await admit.admit_response(gate.rt, gate, session, {}, big, 100)
        assert gate.rt.ledger is not None
        states = await gate.rt.ledger.snapshot(admit.caps_to_charge(gate.rt, session))
        gate.rt.audit.close()
        return held, refused, [s.reserved for s in states]

    held, refused, reserved = asyncio.run(go())
    assert isinstance(held, Pending) and held.meter.reserved == 300
    assert held.meter.hold_id is not None and held.meter.key == "alice"
    assert isinstance(refused, Refusal) and refused.status == 429
    assert reserved[0] == 300  # only the first response is held
    (line,) = [json.loads(x) for x in audit.read_text().splitlines()]
    assert (line["key"], line["status"], line["reserved"]) == ("alice", 429, 5100)
