"""Ledger throughput: reserve+settle pairs per second, per backend.

    python bench/ledger_bench.py [--json] [--pairs N] [--redis-url URL] [BACKEND ...]

Each pair is what one request costs the proxy: reserve on a key cap (rolling window)
and an account cap (balance), then settle. Latencies are per pair, measured on the
event loop (for Redis: two round trips over loopback, so the loop is free meanwhile).

Backend `redis` uses --redis-url when given (the bench writes under a `{seatbelt-bench}`
namespace there, never the ledger's own keys), else starts a throw-away `redis-server`
without persistence on a free 127.0.0.1 port. `redis-aof` does the same with
`--appendonly yes --appendfsync everysec`, the setting docs/operations.md recommends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seatbelt.ledger import Cap, Window, open_ledger  # noqa: E402

# redis joins the default set where a redis-server can be started (name it to insist)
BACKENDS = ("memory", "sqlite", "redis") if shutil.which("redis-server") else ("memory", "sqlite")
KNOWN = ("memory", "sqlite", "redis", "redis-aof")
CAPS = (
    Cap("key:bench", 10**15, Window("rolling", 3600)),
    Cap("account:bench", 10**15, Window("balance")),
)


CALLERS = 8  # as many concurrent requests as the throughput bench's wrk connections
CONCURRENT = f"pairs_per_s_{CALLERS}_callers"  # the result key of that measurement


async def _pair(ledger: Any, lat: list[float]) -> None:
    t0 = time.perf_counter()
    r = await ledger.reserve(CAPS, 1000)
    assert r.hold_id is not None, r
    await ledger.settle(r.hold_id, 900, source="reported")
    lat.append(time.perf_counter() - t0)


async def _measure(url: str, pairs: int, **kw: Any) -> dict[str, float]:
    """One caller at a time (p50/p99 per pair), then CALLERS at once: how a proxy under
    load calls it (a backend may share work between concurrent calls: SQLite commits)."""
    ledger = open_ledger(url, **kw)
    await ledger.open()
    try:
        for _ in range(min(200, pairs)):  # warm up caches and the WAL
            await _pair(ledger, [])
        lat: list[float] = []
        clock = time.perf_counter
        start = clock()
        for _ in range(pairs):
            await _pair(ledger, lat)
        elapsed = clock() - start

        async def caller(n: int) -> None:
            for _ in range(n):
                await _pair(ledger, [])

        start = clock()
        await asyncio.gather(*(caller(pairs // CALLERS) for _ in range(CALLERS)))
        concurrent = pairs // CALLERS * CALLERS / (clock() - start)
    finally:
        await ledger.close()
    lat.sort()
    return {
        "pairs": pairs,
        "pairs_per_s": round(pairs / elapsed),
        "p50_us": round(statistics.median(lat) * 1e6, 1),
        "p99_us": round(lat[int(len(lat) * 0.99) - 1] * 1e6, 1),
        "max_us": round(lat[-1] * 1e6, 1),
        CONCURRENT: round(concurrent),
    }


@contextlib.contextmanager
def redis_server(directory: str, *, aof: bool = False) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else [
        "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory,
         *persistence],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)


def run(
    backends: tuple[str, ...] | list[str] = BACKENDS,
    pairs: int = 20000,
    redis_url: str | None = None,
) -> dict:
    """Measure each backend; returns {backend: {pairs_per_s, p50_us, p99_us, max_us}}."""
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            kw: dict[str, Any] = {}
            if backend == "memory":
                url = "memory://"
            elif backend == "sqlite":
                url = f"sqlite:///{Path(tmp, 'bench', 'ledger.db')}"
            elif backend in ("redis", "redis-aof"):
                kw["namespace"] = "seatbelt-bench"
                if redis_url is not None and backend == "redis":
                    results[backend] = asyncio.run(_measure(redis_url, pairs, **kw))
                    continue
                directory = Path(tmp, backend)
                directory.mkdir()
                with redis_server(str(directory), aof=backend == "redis-aof") as url:
                    results[backend] = asyncio.run(_measure(url, pairs, **kw))
                continue
            else:
                raise ValueError(f"unknown backend {backend!r}; known: {', '.join(KNOWN)}")
            results[backend] = asyncio.run(_measure(url, pairs, **kw))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backends", nargs="*", default=list(BACKENDS))
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--redis-url", help="an existing Redis for the redis backend")
    args = parser.parse_args(argv)
    results = run(args.backends, args.pairs, args.redis_url)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            print(
                f"{name:9} {r['pairs_per_s']:>9,} pairs/s  p50 {r['p50_us']:>7} us  "
                f"p99 {r['p99_us']:>7} us  max {r['max_us']:>8} us  "
                f"{CALLERS} callers {r[CONCURRENT]:>9,} pairs/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
