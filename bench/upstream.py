"""The benchmark's upstream: a minimal asyncio HTTP/1.1 server with canned LLM answers.

    python -m bench.upstream --port PORT

Why not the stand-in (tests/standin): that is a test fixture that parses and checks every
request; here the upstream must never be the bottleneck (the harness measures it alone
and wants it well over 3x faster than mitmdump). So every answer is prebuilt bytes:

- POST with `"stream":true` in the body: OpenAI chat SSE, 200 content frames, a finish
  frame, a usage frame and `[DONE]`, one HTTP chunk per frame (as real servers flush);
- any other request: a small OpenAI chat JSON (Content-Length);
- header `x-bench: slow`: the same SSE, but its first frame after SLOW_FIRST_S and the
  rest SLOW_GAP_S apart (time to first byte through a streaming proxy);
- header `x-bench: big-N`: an SSE stream of N bytes (64 KiB chunks, flow-controlled),
  usage at its end (proxy memory while a huge response streams through).

Keep-alive and pipelining are supported; nothing is logged. `--tls-cert/--tls-key` serve the
same over HTTPS (the explicit-proxy-with-TLS configuration, bench/tls.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl

SSE_FRAMES = 200
SLOW_FIRST_S = 0.05
SLOW_GAP_S = 0.005
SLOW_FRAMES = 10
BIG_CHUNK = 64 << 10
MAX_HEAD = 64 << 10

_ID = '"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1753357673'
_MODEL = '"model":"gpt-4o-mini","system_fingerprint":"fp_bench"'


def sse_frame(text: str) -> bytes:
    """One OpenAI chat content chunk, with `"usage":null` as include_usage streams send."""
    delta = json.dumps({"content": text}, separators=(",", ":"))
    return (
        f'data: {{{_ID},{_MODEL},"choices":[{{"index":0,"delta":{delta},"logprobs":null,'
        f'"finish_reason":null}}],"usage":null}}\n\n'
    ).encode()


def sse_tail(prompt: int, completion: int) -> list[bytes]:
    """The finish frame, the usage frame and [DONE]."""
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    return [
        f'data: {{{_ID},{_MODEL},"choices":[{{"index":0,"delta":{{}},"logprobs":null,'
        f'"finish_reason":"stop"}}],"usage":null}}\n\n'.encode(),
        f'data: {{{_ID},{_MODEL},"choices":[],"usage":{json.dumps(usage)}}}\n\n'.encode(),
        b"data: [DONE]\n\n",
    ]


def sse_frames(n: int = SSE_FRAMES) -> list[bytes]:
    words = ("The", " budget", " of", " every", " agent", " is", " checked", " first.")
    return [sse_frame(words[i % len(words)]) for i in range(n)] + sse_tail(19, n)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"
SSE_BODY = b"".join(sse_frames())  # the body a client reads (chunking removed)
SSE_RESPONSE = SSE_HEAD + b"".join(chunk(f) for f in sse_frames()) + LAST_CHUNK

JSON_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1753357765,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi! How can I help?",
                                          "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 19, "completion_tokens": 8, "total_tokens": 27,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_bench",
}, separators=(",", ":")).encode()
JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(JSON_BODY), JSON_BODY)
)
NOT_FOUND = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def big_block() -> bytes:
    """About BIG_CHUNK bytes of whole content frames."""
    frame = sse_frame(" token")
    return frame * (BIG_CHUNK // len(frame))


class Upstream(asyncio.Protocol):
    """One client connection: parse requests just enough to answer them."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a slow/big answer is being written: queue what follows
        self._can_write: asyncio.Future[None] | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self._serve()

    def _serve(self) -> None:
        while self.transport is not None and not self.busy:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._close(NOT_FOUND)
                return
            head = buf[:end].lower()
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            body = buf[end + 4 : total]
            self.buf = buf[total:]
            i = head.find(b"\r\nx-bench:")
            mode = b""
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                mode = head[i + 10 : j if j >= 0 else len(head)].strip()
            if mode == b"slow":
                self.busy = True
                asyncio.ensure_future(self._slow())
            elif mode.startswith(b"big-"):
                self.busy = True
                asyncio.ensure_future(self._big(int(mode[4:])))
            elif b'"stream":true' in body or b'"stream": true' in body:
                self.transport.write(SSE_RESPONSE)
            else:
                self.transport.write(JSON_RESPONSE)

    def _close(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.transport.close()

    async def _drain(self) -> None:
        if self._can_write is not None:
            await self._can_write
            self._can_write = None

    async def _slow(self) -> None:
        frames = sse_frames(SLOW_FRAMES)
        if self.transport is None:
            return
        self.transport.write(SSE_HEAD)
        await asyncio.sleep(SLOW_FIRST_S)
        for n, frame in enumerate(frames):
            if n:
                await asyncio.sleep(SLOW_GAP_S)
            if self.transport is None:
                return
            self.transport.write(chunk(frame))
        self._done()

    async def _big(self, size: int) -> None:
        block = chunk(big_block())
        per = len(big_block())
        if self.transport is None:
            return
        self.transport.write(SSE_HEAD)
        sent = 0
        while sent + per <= size:
            if self.transport is None:
                return
            self.transport.write(block)
            sent += per
            await self._drain()
        tail = b"".join(sse_tail(19, sent // 40))
        if self.transport is not None:
            self.transport.write(chunk(tail))
        self._done()

    def _done(self) -> None:
        if self.transport is None:
            return
        self.transport.write(LAST_CHUNK)
        self.busy = False
        self._serve()


async def serve(host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=1024, ssl=tls)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM) ...")
    parser.add_argument("--tls-key", help="... and its key")
    args = parser.parse_args(argv)
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        tls.set_alpn_protocols(["http/1.1"])
    try:
        asyncio.run(serve(args.host, args.port, tls))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
