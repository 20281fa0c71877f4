"""seatbelt's own CPU cost per request, in-process, without sockets or mitmproxy's layers.

    python -m bench.hooks_bench [--requests N] [--profile]

Drives the addon's hooks the way mitmproxy does (requestheaders, request, responseheaders,
one stream-callable call per chunk, the final b"", response) on flows made by mitmproxy's
own test helpers, with the configuration of the throughput bench: SQLite ledger, audit
log and metrics on (the metrics HTTP endpoint off: it costs nothing per request). The
flows are built before the clock starts. This is the number that decides the throughput
ratio: at ~1,000 requests/s through mitmdump, 10% is ~100 us per request.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy.test import taddons, tflow

from bench.clients import request_body
from bench.proxies import policy_yaml
from bench.upstream import JSON_BODY, SSE_BODY, sse_frames

CREDENTIAL = "sk-bench-" + "0" * 32


def make_flow(stream: bool) -> Any:
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = "/v1/chat/completions"
    f.request.headers["content-type"] = "application/json"
    f.request.headers["authorization"] = f"Bearer {CREDENTIAL}"
    f.request.set_content(request_body(stream))
    f.response = None
    return f


def response_for(stream: bool) -> Any:
    """Response headers as the bench upstream sends them: SSE chunked, JSON with a length."""
    if stream:
        headers = ((b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked"))
    else:
        headers = ((b"content-type", b"application/json"),
                   (b"content-length", str(len(JSON_BODY)).encode()))
    return tflow.tresp(status_code=200, headers=headers, content=b"")


STAGES = ("request", "responseheaders", "stream", "response")


async def _run(sb: Any, requests: int, stream: bool, prof: cProfile.Profile | None
               ) -> tuple[float, dict[str, float]]:
    """(total seconds, seconds per stage) for `requests` requests."""
    chunks = sse_frames() if stream else [JSON_BODY]
    flows = [make_flow(stream) for _ in range(requests)]
    responses = [response_for(stream) for _ in range(requests)]
    clock = time.perf_counter
    stages = dict.fromkeys(STAGES, 0.0)
    if prof is not None:
        prof.enable()
    t0 = clock()
    for f, resp in zip(flows, responses):
        a = clock()
        sb.requestheaders(f)
        await sb.request(f)
        f.response = resp
        b = clock()
        sb.responseheaders(f)
        c = clock()
        call = resp.stream
        if callable(call):  # streamed: one call per chunk, then b""
            for chunk in chunks:
                call(chunk)
            call(b"")
        else:  # read whole by mitmproxy (a small JSON document, seatbelt/metering/scanner.py)
            resp.raw_content = b"".join(chunks)
        d = clock()
        await sb.response(f)
        e = clock()
        stages["request"] += b - a
        stages["responseheaders"] += c - b
        stages["stream"] += d - c
        stages["response"] += e - d
    elapsed = clock() - t0
    if prof is not None:
        prof.disable()
    return elapsed, stages


def run(requests: int = 2000, profile: bool = False, ledger: str = "sqlite") -> dict[str, Any]:
    """{"json": {"us_per_request": ...}, "sse": {...}} (+ "profile" text when asked)."""
    import seatbelt.addon as entry
    from seatbelt.runtime import Runtime

    entry.RUNTIME = Runtime()
    out: dict[str, Any] = {}
    prof = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp, "policy.yaml")
        policy.write_text(policy_yaml(hashlib.sha256(CREDENTIAL.encode()).hexdigest()))

        async def go() -> None:
            sb = entry.Seatbelt()
            with taddons.context(sb) as tctx:
                tctx.configure(sb, seatbelt_policy=str(policy),
                               seatbelt_ledger=f"sqlite:///{tmp}/ledger.db"
                               if ledger == "sqlite" else "memory://",
                               seatbelt_metrics="", seatbelt_audit=f"{tmp}/audit.jsonl")
                for _ in range(200):
                    if entry.RUNTIME.ready():
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise RuntimeError(f"not ready: {entry.RUNTIME.config_error}")
                for stream in (False, True):
                    await _run(sb, min(200, requests), stream, None)  # warm-up
                    t, stages = await _run(sb, requests, stream, prof)
                    out["sse" if stream else "json"] = {
                        "us_per_request": round(t / requests * 1e6, 1),
                        **{f"{k}_us": round(v / requests * 1e6, 1) for k, v in stages.items()}}
                # the passthrough callable's share, for comparison
                chunks = sse_frames()
                t0 = time.perf_counter()
                for _ in range(requests):
                    for c in chunks:
                        (lambda x: x)(c)
                out["sse"]["passthrough_callable_us"] = round(
                    (time.perf_counter() - t0) / requests * 1e6, 1)
                with open(f"{tmp}/audit.jsonl") as f:
                    lines = [json.loads(x) for x in f]
                bad = [x for x in lines if x["usage_source"] != "reported"]
                if len(lines) < 2 * requests or bad:
                    raise RuntimeError(f"audit: {len(lines)} lines, {bad[:1]}")
                await entry.RUNTIME.shutdown(lambda m: asyncio.sleep(0))

        asyncio.run(go())
    assert SSE_BODY  # the bench's SSE body is what the upstream sends
    if prof is not None:
        stats = pstats.Stats(prof)
        import io

        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
        out["profile"] = buf.getvalue()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--profile", action="store_true", help="print a cProfile of the hooks")
    p.add_argument("--ledger", choices=("sqlite", "memory"), default="sqlite")
    a = p.parse_args(argv)
    out = run(a.requests, a.profile, a.ledger)
    text = out.pop("profile", None)
    print(json.dumps(out))
    if text:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
