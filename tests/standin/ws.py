"""A WebSocket stand-in upstream speaking OpenAI Realtime, Responses WebSocket mode and
Gemini Live, with known usage, on loopback (the `websockets` library, in a thread).

  .../realtime      session.created on connect; response.create -> response.created,
                    response.output_text.delta, response.done {response: {usage}};
                    input_audio_buffer.commit starts the same response unasked (server VAD)
  .../responses     response.create -> response.created, response.output_text.delta,
                    response.completed {response: {usage}}
  ...BidiGenerateContent  setup -> setupComplete; clientContent (turnComplete) or
                    realtimeInput.text -> serverContent modelTurn, then turnComplete with
                    usageMetadata; streamed audio alone is only taken in

Usage is PROMPT input tokens and OUTPUT output tokens every time. The word `#hang` in a
create (Realtime instructions, Responses input, Live turn text) sends the first output and
never finishes, so the client can cut the socket; `#reject` answers an `error` event. A
path under `/deny/` refuses the upgrade. `received` logs every message and the
handshake's credential headers, per path.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

PROMPT = 11
OUTPUT = 7


@dataclass
class Socket:
    path: str
    headers: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


def _deny(ws: ServerConnection, request: Any) -> Any:
    """`/deny/...`: the upgrade is refused (403), as an upstream refusing a key does."""
    if request.path.startswith("/deny/"):
        return ws.respond(403, "forbidden\n")
    return None


class WsStandIn:
    def __init__(self) -> None:
        self.port = 0
        self.sockets: list[Socket] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="ws-standin")
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WsStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=_deny)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def received(self, word: str) -> list[Socket]:
        """The sockets whose messages mention `word` (a test's tag)."""
        return [s for s in self.sockets if word in json.dumps(s.messages)]

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in ws.request.headers.raw_items()
                   if k.lower() in ("authorization", "api-key", "x-goog-api-key")}
        sock = Socket(ws.request.path, headers)
        self.sockets.append(sock)
        if path.endswith("/realtime"):
            await ws.send(json.dumps({"type": "session.created", "event_id": "ev_0",
                                      "session": {"id": "sess_1"}}))
        try:
            await self._serve(ws, sock, path)
        finally:
            sock.closed = True

    async def _serve(self, ws: ServerConnection, sock: Socket, path: str) -> None:
        n = 0
        async for raw in ws:
            msg = json.loads(raw)
            sock.messages.append(msg)
            n += 1
            if path.endswith("/realtime") and msg.get("type") in (
                    "response.create", "input_audio_buffer.commit"):
                # A committed audio buffer answers by itself, as server voice activity does.
                await self._openai(ws, msg, n, "response.done", realtime=True)
            elif path.endswith("/responses") and msg.get("type") == "response.create":
                await self._openai(ws, msg, n, "response.completed", realtime=False)
            elif "BidiGenerateContent" in path:
                await self._live(ws, msg)

    async def _openai(self, ws: ServerConnection, msg: dict[str, Any], n: int, end: str,
                      *, realtime: bool) -> None:
        rid = f"resp_{n}"
        if "#reject" in json.dumps(msg):
            await ws.send(json.dumps({"type": "error", "event_id": f"ev_{n}e", "error": {
                "type": "invalid_request_error", "code": "invalid_value", "param": None,
                "message": "rejected", "event_id": msg.get("event_id")}}))
            return
        await ws.send(json.dumps({"type": "response.created", "event_id": f"ev_{n}a",
                                  "response": {"id": rid, "status": "in_progress"}}))
        await ws.send(json.dumps({"type": "response.output_text.delta", "event_id": f"ev_{n}b",
                                  "response_id": rid, "delta": "hello there"}))
        if "#hang" in json.dumps(msg):
            return
        usage = {"input_tokens": PROMPT, "output_tokens": OUTPUT,
                 "total_tokens": PROMPT + OUTPUT}
        await ws.send(json.dumps({"type": end, "event_id": f"ev_{n}c", "sequence_number": 3,
                                  "response": {"id": rid, "status": "completed",
                                               "object": "realtime.response" if realtime
                                               else "response", "usage": usage}}))

    async def _live(self, ws: ServerConnection, msg: dict[str, Any]) -> None:
        if "setup" in msg:
            await ws.send(json.dumps({"setupComplete": {}}))
            return
        streamed_text = isinstance((msg.get("realtimeInput") or {}).get("text"), str)
        if not ((msg.get("clientContent") or {}).get("turnComplete") or streamed_text):
            return
        await ws.send(json.dumps({"serverContent": {"modelTurn": {"parts": [
            {"text": "hello there"}]}}}))
        if "#hang" in json.dumps(msg):
            return
        await ws.send(json.dumps({
            "serverContent": {"turnComplete": True},
            "usageMetadata": {"promptTokenCount": PROMPT, "responseTokenCount": OUTPUT,
                              "totalTokenCount": PROMPT + OUTPUT}}))
