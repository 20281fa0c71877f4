"""Single-request measurements that wrk cannot make: time to first body byte on a slow
stream, proxy memory while a huge response streams through, and a byte-for-byte check."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from typing import Callable

from bench.upstream import SLOW_FIRST_S


def request_body(stream: bool, max_tokens: int = 256) -> bytes:
    """The benchmark request: an OpenAI chat call with max_tokens; a stream asks for usage
    itself (what the SDKs send with stream_options), so no configuration edits the body."""
    body: dict = {
        "model": "gpt-4o-mini",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def _post(port: int, headers: dict[str, str], stream: bool, timeout: float = 60.0,
          max_tokens: int = 256):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", body=request_body(stream, max_tokens),
                 headers={"Content-Type": "application/json", **headers})
    return conn, conn.getresponse()


def fetch(port: int, headers: dict[str, str], stream: bool) -> tuple[int, bytes]:
    conn, resp = _post(port, headers, stream)
    try:
        return resp.status, resp.read()
    finally:
        conn.close()


def ttfb(port: int, headers: dict[str, str], count: int) -> dict[str, float]:
    """Time from sending a request to the first body byte, on a stream whose upstream waits
    SLOW_FIRST_S before its first frame; returns the median and the excess over that wait,
    in ms. A buffering proxy would show the whole stream's duration here."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        conn, resp = _post(port, {**headers, "x-bench": "slow"}, True)
        try:
            if resp.status != 200:
                raise RuntimeError(f"slow stream answered {resp.status}: {resp.read()[:300]!r}")
            first = resp.read(1)
            times.append(time.perf_counter() - t0)
            if not first:
                raise RuntimeError("slow stream had no body")
            resp.read()
        finally:
            conn.close()
    median = statistics.median(times)
    return {"ttfb_ms": round(median * 1e3, 3),
            "over_upstream_ms": round((median - SLOW_FIRST_S) * 1e3, 3)}


def big_stream(port: int, headers: dict[str, str], size: int,
               rss: Callable[[], int]) -> dict[str, float]:
    """Stream `size` bytes through the proxy, sampling its RSS every 10 ms; returns the
    growth over the RSS just before the request, in MB, and the rate."""
    before = rss()
    peak = before
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss())
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    received = 0
    try:
        # The canned upstream reports a token per 40 bytes of it: a limit below that would
        # have seatbelt cut the stream off (seatbelt/metering/cutoff.py).
        conn, resp = _post(port, {**headers, "x-bench": f"big-{size}"}, True, timeout=300,
                           max_tokens=size // 40 + 64)
        try:
            if resp.status != 200:
                raise RuntimeError(f"big stream answered {resp.status}")
            while True:
                piece = resp.read1(1 << 20)
                if not piece:
                    break
                received += len(piece)
        finally:
            conn.close()
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        sampler.join()
    peak = max(peak, rss())
    return {
        "received_mb": round(received / 1e6, 1),
        "rss_before_mb": round(before / 1e6, 1),
        "rss_peak_mb": round(peak / 1e6, 1),
        "growth_mb": round((peak - before) / 1e6, 1),
        "mb_per_s": round(received / 1e6 / elapsed, 1),
    }
