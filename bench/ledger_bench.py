"""Ledger throughput: reserve+settle pairs per second, per backend.

    python bench/ledger_bench.py [--json] [--pairs N] [BACKEND ...]

Each pair is what one request costs the proxy: reserve on a key cap (rolling window)
and an account cap (balance), then settle. Latencies are per pair, measured on the
event loop, so they are also how long the loop is held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addon.ledger import Cap, Window, open_ledger  # noqa: E402

BACKENDS = ("memory", "sqlite")
CAPS = (
    Cap("key:bench", 10**15, Window("rolling", 3600)),
    Cap("account:bench", 10**15, Window("balance")),
)


async def _measure(url: str, pairs: int) -> dict[str, float]:
    ledger = open_ledger(url)
    await ledger.open()
    try:
        for _ in range(min(200, pairs)):  # warm up caches and the WAL
            r = await ledger.reserve(CAPS, 1000)
            assert r.hold_id is not None
            await ledger.settle(r.hold_id, 900, source="reported")
        lat: list[float] = []
        clock = time.perf_counter
        start = clock()
        for _ in range(pairs):
            t0 = clock()
            r = await ledger.reserve(CAPS, 1000)
            assert r.hold_id is not None, r
            await ledger.settle(r.hold_id, 900, source="reported")
            lat.append(clock() - t0)
        elapsed = clock() - start
    finally:
        await ledger.close()
    lat.sort()
    return {
        "pairs": pairs,
        "pairs_per_s": round(pairs / elapsed),
        "p50_us": round(statistics.median(lat) * 1e6, 1),
        "p99_us": round(lat[int(len(lat) * 0.99) - 1] * 1e6, 1),
        "max_us": round(lat[-1] * 1e6, 1),
    }


def run(backends: tuple[str, ...] | list[str] = BACKENDS, pairs: int = 20000) -> dict:
    """Measure each backend; returns {backend: {pairs_per_s, p50_us, p99_us, max_us}}."""
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "memory":
                url = "memory://"
            elif backend == "sqlite":
                url = f"sqlite:///{Path(tmp, 'bench', 'ledger.db')}"
            else:
                raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
            results[backend] = asyncio.run(_measure(url, pairs))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backends", nargs="*", default=list(BACKENDS))
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    results = run(args.backends, args.pairs)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            print(
                f"{name:8} {r['pairs_per_s']:>9,} pairs/s  p50 {r['p50_us']:>7} us  "
                f"p99 {r['p99_us']:>7} us  max {r['max_us']:>8} us"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
