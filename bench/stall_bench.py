"""The event loop's worst stall while seatbelt admits one worst-shape request body.

    python -m bench.stall_bench [--mb N] [--shapes a,b] [--families a,b] [--json]

seatbelt runs in mitmproxy's event loop: while it parses and bounds a body, no other
client's bytes move. This drives the addon's request hooks in-process (mitmproxy's test
flows, the memory ledger, a policy key with a cap that never refuses) for each body of
bench/stall_shapes.py, while a probe task sleeps 1 ms at a time and records how late it
wakes: the worst lateness is the longest the loop was blocked. Each case runs in a fresh
interpreter state (the flow dropped, the collector run) so one case's garbage is not
the next one's stall.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy.test import taddons, tflow

from bench import stall_shapes
from bench.proxies import policy_yaml

CREDENTIAL = "sk-bench-" + "0" * 32
TICK_S = 0.001
_HEADERS = {
    "openai": {"authorization": f"Bearer {CREDENTIAL}"},
    "responses": {"authorization": f"Bearer {CREDENTIAL}"},
    "anthropic": {"x-api-key": CREDENTIAL, "anthropic-version": "2023-06-01"},
    "gemini": {"x-goog-api-key": CREDENTIAL},
}


def make_flow(family: str, body: bytes) -> Any:
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = stall_shapes.PATHS[family]
    f.request.headers["content-type"] = "application/json"
    for k, v in _HEADERS[family].items():
        f.request.headers[k] = v
    f.request.set_content(body)
    f.response = None
    return f


class LagProbe:
    """Sleeps TICK_S at a time on the loop; `worst` is the latest it ever woke (seconds)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = False

    async def run(self) -> None:
        clock = time.perf_counter
        while not self._stop:
            t = clock()
            await asyncio.sleep(TICK_S)
            self.worst = max(self.worst, clock() - t - TICK_S)

    def stop(self) -> None:
        self._stop = True


async def idle_stall(seconds: float = 1.0) -> float:
    """The probe's worst lateness on an idle loop (ms): what the machine itself adds (other
    processes, the scheduler) to every figure."""
    probe = LagProbe()
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(seconds)
    probe.stop()
    await task
    return round(probe.worst * 1e3, 1)


async def admit_one(sb: Any, family: str, body: bytes) -> dict[str, Any]:
    """One body admitted while the probe runs: worst stall, wall time, the answer."""
    flow = make_flow(family, body)
    gc.collect()
    probe = LagProbe()
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(TICK_S * 3)  # the probe is ticking
    probe.worst = 0.0
    t0 = time.perf_counter()
    sb.requestheaders(flow)
    await sb.request(flow)
    wall = time.perf_counter() - t0
    await asyncio.sleep(TICK_S * 3)
    probe.stop()
    await task
    status = flow.response.status_code if flow.response is not None else 200  # forwarded
    if flow.response is None:  # release the hold as a client that left would
        flow.error = tflow.terr()
        await sb.error(flow)
    return {"stall_ms": round(probe.worst * 1e3, 1), "admit_ms": round(wall * 1e3, 1),
            "status": status}


def run(mb: float = 10, shapes: tuple[str, ...] = tuple(stall_shapes.SHAPES),
        families: tuple[str, ...] = stall_shapes.FAMILIES,
        log: Any = None) -> dict[str, Any]:
    """{"mb": N, "idle_stall_ms": ms, "cases": {shape: {family: {"stall_ms", "admit_ms",
    "status"}}}}."""
    import seatbelt.addon as entry
    from seatbelt.runtime import Runtime

    size = int(mb * 1_000_000)
    entry.RUNTIME = Runtime()
    out: dict[str, Any] = {"mb": mb, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp, "policy.yaml")
        policy.write_text(policy_yaml(hashlib.sha256(CREDENTIAL.encode()).hexdigest()))

        async def go() -> None:
            sb = entry.Seatbelt()
            with taddons.context(sb) as tctx:
                tctx.configure(sb, seatbelt_policy=str(policy), seatbelt_ledger="memory://",
                               seatbelt_metrics="", seatbelt_audit="")
                while not entry.RUNTIME.ready():
                    await asyncio.sleep(0.01)
                sb.running()  # starts the body worker, as mitmproxy's `running` event does
                for warm in (10_000, 200_000):  # the in-loop path, then the worker's
                    await admit_one(sb, "openai", stall_shapes.body("messages", "openai", warm))
                out["idle_stall_ms"] = await idle_stall()
                for shape in shapes:
                    for family in families:
                        res = await admit_one(sb, family,
                                              stall_shapes.body(shape, family, size))
                        out["cases"].setdefault(shape, {})[family] = res
                        if log is not None:
                            log(f"stall {shape} {family}: {res}")
                await entry.RUNTIME.shutdown(lambda m: asyncio.sleep(0))

        asyncio.run(go())
    return out


def worst(result: dict[str, Any]) -> tuple[float, str] | None:
    """(worst stall in ms, "shape/family") over every case."""
    cases = [(c["stall_ms"], f"{s}/{f}") for s, row in result.get("cases", {}).items()
             for f, c in row.items()]
    return max(cases) if cases else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=10)
    p.add_argument("--shapes", default=",".join(stall_shapes.SHAPES))
    p.add_argument("--families", default=",".join(stall_shapes.FAMILIES))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    res = run(a.mb, tuple(a.shapes.split(",")), tuple(a.families.split(",")),
              log=None if a.json else lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(res, indent=None if a.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
