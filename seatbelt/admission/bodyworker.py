"""Large request bodies are read in a worker process, so that no body stalls the event loop.

seatbelt runs in mitmproxy's event loop: while it parses and bounds a body nobody else's
bytes move. json.loads, the depth check and the media walk of a 10 MB body made of
millions of tiny arrays take hundreds of milliseconds of CPU whatever the parser
(bench/stall_bench.py), and hold the GIL, so a thread would not free the loop: a process
does. A body larger than OFFLOAD_BYTES, or compressed (it may decompress to 32 MB), is
decoded, parsed strictly, read by its family and bounded there (`read_body`, the same
functions the loop runs for small bodies); the loop gets back the facts, the prompt bound
and a *shallow* body: the top-level object whose large values are RawJSON, their compact
JSON text, which `dump` splices back as they are. Everything seatbelt edits in a body
(an output limit, `stream_options`, Gemini's generationConfig, Ollama's options) is a
top-level field or a field of a top-level object, so those objects are kept as objects
one level down. The worker's answers are plain data (no exception crosses the pipe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from seatbelt.apis.base import BadRequestBody, RequestFacts, Route, UnmeteredRequest
from seatbelt.codec.decoding import BodyTooLarge as DecodedTooLarge
from seatbelt.codec.decoding import decode_request_body
from seatbelt.codec.requestbody import (
    MAX_REQUEST_BODY,
    BodyTooLarge,
    UnreadableBody,
    dump_json,
    parse_json_object,
)

OFFLOAD_BYTES = 64 * 1024  # larger bodies are read in the worker (~1 ms of round trip)
RAW_BYTES = 1024  # values whose JSON text is longer travel back as RawJSON
# Top-level objects a family may edit (seatbelt/apis/*.py write_limit, request_usage).
EDITED = frozenset({"generationConfig", "generation_config", "options", "stream_options"})


class RawJSON(str):
    """A value as its compact JSON text: spliced into the body as it is."""


@dataclass(frozen=True)
class Read:
    """The worker's answer: `kind` is "ok" (facts, bound, body), "unmetered", "too_large"
    or "unreadable" (message)."""

    kind: str
    facts: RequestFacts | None = None
    prompt_bound: int = 0
    body: dict[str, Any] | None = None
    message: str = ""


def read_body(route: Route, raw: bytes, encoding: str) -> Read:
    """Decode, parse, read and bound one body (in the worker process)."""
    from seatbelt.admission import estimate  # the worker imports what it needs itself

    try:
        data = decode_request_body(raw, encoding, MAX_REQUEST_BODY) if encoding else raw
        body = parse_json_object(data)
        facts = route.family.parse_request(route, body)
        bound = estimate.prompt_bound(route, body, data)
    except UnmeteredRequest:
        return Read("unmetered")
    except (BodyTooLarge, DecodedTooLarge) as e:
        return Read("too_large", message=str(e))
    except (UnreadableBody, BadRequestBody, ValueError) as e:
        return Read("unreadable", message=str(e))
    return Read("ok", facts, bound, shallow(body))


def shallow(body: dict[str, Any]) -> dict[str, Any]:
    """The body with every large value as RawJSON, the edited objects one level down."""
    out: dict[str, Any] = {}
    for k, v in body.items():
        if k in EDITED and isinstance(v, dict):
            out[k] = {k2: _raw(v2) for k2, v2 in v.items()}
        else:
            out[k] = _raw(v)
    return out


def _raw(value: Any) -> Any:
    if not isinstance(value, (dict, list, str)):
        return value
    text = _compact(value)
    return RawJSON(text) if len(text) > RAW_BYTES else value


def _compact(value: Any) -> str:
    """Compact JSON text, UTF-8 encodable (a lone surrogate is written escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def dump(body: dict[str, Any]) -> bytes:
    """A (possibly shallow) body as compact UTF-8 JSON, RawJSON spliced as it is."""
    if not any(isinstance(v, RawJSON) or isinstance(v, dict) and _has_raw(v)
               for v in body.values()):
        try:
            return dump_json(body)
        except UnicodeEncodeError:
            return dump_json(body, ascii_only=True)
    return _splice(body).encode()


def _has_raw(d: dict[str, Any]) -> bool:
    return any(isinstance(v, RawJSON) for v in d.values())


def _splice(d: dict[str, Any]) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, RawJSON):
            text = str(v)
        elif isinstance(v, dict) and _has_raw(v):
            text = _splice(v)  # one level: the edited objects (see shallow)
        else:
            text = _compact(v)
        parts.append(json.dumps(k, ensure_ascii=False) + ":" + text)
    return "{" + ",".join(parts) + "}"


PARENT_CHECK_SECONDS = 1.0


def follow_parent(parent: int) -> None:
    """In the worker: exit once the proxy that spawned it is gone. A SIGKILLed proxy never
    tells its pool to stop, and the worker waits on a queue whose write end it holds itself,
    so it would wait for ever (~70 MB each, one per crash)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="seatbelt-parent-watch", daemon=True).start()


class BodyWorker:
    """One worker process, started on first use (spawned: mitmproxy's process has threads,
    so it is not forked); a worker that died is replaced for the next body, and a worker
    whose proxy died exits (follow_parent)."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=follow_parent, initargs=(os.getpid(),))
        return self._pool

    def start(self) -> None:
        """Spawn the worker now (at `running`), not under the first large body."""
        self._executor().submit(int)

    async def read(self, route: Route, raw: bytes, encoding: str) -> Read:
        """The worker's Read; a worker that dies on it raises (the gate refuses: 503)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), read_body, route, raw,
                                              encoding)
        except concurrent.futures.process.BrokenProcessPool:
            self.close()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


WORKER = BodyWorker()


def offloaded(raw: bytes, encoding: str) -> bool:
    """Whether a body is read in the worker: large, or compressed."""
    return len(raw) > OFFLOAD_BYTES or bool(encoding)
