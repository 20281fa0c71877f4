"""The WebSocket hooks (seatbelt/sockets/hooks.py) on mitmproxy's own flow objects: a create
is held before it passes, the response's usage settles it, what cannot be metered is
dropped and answered, the end settles what is open. The error events the hooks send go
through mitmproxy's `inject.websocket` command, recorded here; over a real socket they reach
the client (tests/e2e/test_websocket.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mitmproxy import command, flow, http, websocket
from mitmproxy.test import taddons, tflow
from wsproto.frame_protocol import Opcode

from seatbelt.admission.gate import Gate
from seatbelt.ledger.base import Cap
from seatbelt.runtime import Runtime
from seatbelt.sockets import hooks
from seatbelt.sockets.events import Kind
from tests.sockets.test_admit import policy_at, ready_gate

CAP = Cap("key:alice", 1000)


class Injections:
    """mitmproxy's `inject.websocket`, recorded: (to_client, event)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bool, dict[str, Any]]] = []

    @command.command("inject.websocket")
    def inject_websocket(self, f: flow.Flow, to_client: bool, message: bytes,
                         is_text: bool = True) -> None:
        self.sent.append((to_client, json.loads(message)))


def realtime_socket() -> http.HTTPFlow:
    f = tflow.twebsocketflow()
    f.request.host = "api.openai.com"
    f.request.path = "/v1/realtime?model=gpt-realtime"
    f.request.headers["authorization"] = "Bearer sk-alice"
    assert f.websocket is not None
    f.websocket.messages = []
    return f


def say(f: http.HTTPFlow, event: dict[str, Any] | bytes, from_client: bool = True
        ) -> websocket.WebSocketMessage:
    content = event if isinstance(event, bytes) else json.dumps(event).encode()
    message = websocket.WebSocketMessage(Opcode.TEXT, from_client, content)
    assert f.websocket is not None
    f.websocket.messages.append(message)
    return message


Scenario = Callable[[hooks.Sockets, http.HTTPFlow, Injections], Awaitable[Any]]


def run(tmp_path: Path, scenario: Scenario) -> tuple[Any, Runtime, Injections]:
    """An admitted Realtime socket of key alice (cap 1000), then `scenario` on it."""
    injections = Injections()

    async def go() -> tuple[Any, Runtime]:
        gate: Gate = await ready_gate(policy_at(tmp_path))
        sockets = hooks.Sockets(gate)
        with taddons.context(injections):
            f = realtime_socket()
            await sockets.handshake(f, Kind.REALTIME)
            assert f.id in sockets.sessions and f.response is not None  # the 101 stays
            return await scenario(sockets, f, injections), gate.rt

    got, rt = asyncio.run(go())
    return got, rt, injections


async def reserved_and_spent(rt: Runtime) -> tuple[int, int]:
    assert rt.ledger is not None
    await asyncio.sleep(0)
    (state,) = await rt.ledger.snapshot([CAP])
    return state.reserved, state.spent


def test_upgrade_requests_are_told_apart() -> None:
    assert hooks.is_upgrade(tflow.twebsocketflow().request)
    assert not hooks.is_upgrade(tflow.tflow().request)


def test_a_create_is_held_with_a_limit_written_and_settled_by_its_usage(tmp_path: Path) -> None:
    async def scenario(sockets: hooks.Sockets, f: http.HTTPFlow, _: Injections) -> Any:
        create = say(f, {"type": "response.create", "response": {"max_output_tokens": 100}})
        await sockets.websocket_message(f)
        held = await reserved_and_spent(sockets.rt)
        say(f, {"type": "response.created", "response": {"id": "r1"}}, from_client=False)
        await sockets.websocket_message(f)
        say(f, {"type": "response.done", "response": {
            "id": "r1", "usage": {"input_tokens": 11, "output_tokens": 7}}}, from_client=False)
        await sockets.websocket_message(f)
        return create, held, await reserved_and_spent(sockets.rt)

    (create, held, settled), _, injections = run(tmp_path, scenario)
    assert not create.dropped and held[0] > 100 and held[1] == 0
    assert settled == (0, 18) and injections.sent == []


def test_a_create_that_does_not_fit_is_dropped_and_answered_with_an_error_event(
    tmp_path: Path,
) -> None:
    async def scenario(sockets: hooks.Sockets, f: http.HTTPFlow, _: Injections) -> Any:
        create = say(f, {"type": "response.create", "event_id": "ev_1",
                         "response": {"max_output_tokens": 5000}})
        await sockets.websocket_message(f)
        return create, await reserved_and_spent(sockets.rt)

    (create, state), _, injections = run(tmp_path, scenario)
    assert create.dropped and state == (0, 0)
    ((to_client, event),) = injections.sent
    assert to_client and event["type"] == "error"
    assert (event["error"]["code"], event["event_id"].startswith("seatbelt_")) == (
        "insufficient_quota", True)
    assert "need up to" in event["error"]["message"]


def test_what_cannot_be_metered_seals_the_socket(tmp_path: Path) -> None:
    async def scenario(sockets: hooks.Sockets, f: http.HTTPFlow, _: Injections) -> Any:
        odd = say(f, {"type": "response.future"})
        await sockets.websocket_message(f)
        later = say(f, {"type": "input_audio_buffer.append", "audio": ""})
        await sockets.websocket_message(f)
        return odd, later, sockets.sessions[f.id].closed

    (odd, later, closed), _, injections = run(tmp_path, scenario)
    assert odd.dropped and later.dropped and closed
    ((_, event),) = injections.sent
    assert "'response.future' cannot be metered" in event["error"]["message"]


def test_a_socket_that_skipped_the_handshake_passes_nothing(tmp_path: Path) -> None:
    async def go() -> websocket.WebSocketMessage:
        sockets = hooks.Sockets(await ready_gate(policy_at(tmp_path)))
        f = realtime_socket()
        sockets.websocket_start(f)  # no handshake hook ran for it
        message = say(f, {"type": "response.create"})
        await sockets.websocket_message(f)
        return message

    assert asyncio.run(go()).dropped


def test_the_end_settles_what_is_open_and_frees_the_slot(tmp_path: Path) -> None:
    async def scenario(sockets: hooks.Sockets, f: http.HTTPFlow, _: Injections) -> Any:
        say(f, {"type": "response.create", "response": {"max_output_tokens": 100}})
        await sockets.websocket_message(f)
        say(f, {"type": "response.output_text.delta", "delta": "x" * 40}, from_client=False)
        await sockets.websocket_message(f)
        sockets.websocket_end(f)
        return f.id in sockets.sessions, await reserved_and_spent(sockets.rt)

    (still_open, (reserved, spent)), rt, _ = run(tmp_path, scenario)
    assert not still_open and reserved == 0
    assert spent > 10  # cut short: the prompt bound and the output seen are charged
    assert rt.fanout.in_flight == {}


def test_an_upgrade_the_upstream_refused_gives_its_slot_back(tmp_path: Path) -> None:
    async def scenario(sockets: hooks.Sockets, f: http.HTTPFlow, _: Injections) -> Any:
        assert f.response is not None
        f.response.status_code = 403
        sockets.handshake_over(f)
        return f.id in sockets.sessions

    still_open, rt, _ = run(tmp_path, scenario)
    assert not still_open and rt.fanout.in_flight == {}


def test_a_policy_route_with_api_none_takes_a_host_off_the_sockets(tmp_path: Path) -> None:
    text = "version: 1\nroutes:\n  - {{host: internal.example, api: none}}\n"  # a format string

    async def go() -> tuple[Kind | None, Kind | None]:
        sockets = hooks.Sockets(await ready_gate(policy_at(tmp_path, text)))
        f = realtime_socket()
        listed = sockets.socket_kind(f)
        f.request.host = "internal.example"
        return listed, sockets.socket_kind(f)

    assert asyncio.run(go()) == (Kind.REALTIME, None)
