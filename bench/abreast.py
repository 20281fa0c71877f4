"""The A/B side by side: this commit's seatbelt and another's, loaded at the same time.

    ./run.sh bench --only abreast [--against REV] [--windows N] [--restarts N]

The alternating A/B (`--against` with the throughput part) compares runs made seconds apart,
and on a shared VM the machine's own speed moves by up to half within seconds (docs/speed.md).
Here both proxies are pinned to the same core and each is loaded by its own wrk *at the same
time*, for short windows; each window gives both proxies' CPU time per request under the same
conditions, and the comparison is the ratio within a window: REV's CPU per request over this
commit's (above 1: this commit is cheaper). Two processes of the same code still differ a
little, so `--restarts` starts both afresh and deals the windows out over the starts.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench import proxies, wrk

BODIES = ("json", "sse")


@dataclass(frozen=True)
class Window:
    """One window's figures for one body kind: CPU us per request and requests/s, each proxy."""

    body: str
    new_cpu_us: float
    old_cpu_us: float
    new_rps: float
    old_rps: float

    @property
    def cpu_ratio(self) -> float:
        return self.old_cpu_us / self.new_cpu_us

    @property
    def rps_ratio(self) -> float:
        return self.new_rps / self.old_rps


def summarize(windows: list[Window]) -> dict[str, dict[str, Any]]:
    """Per body kind: the median and range of the within-window ratios (pure)."""
    out: dict[str, dict[str, Any]] = {}
    for body in BODIES:
        rows = [w for w in windows if w.body == body]
        if not rows:
            continue
        cpu = [w.cpu_ratio for w in rows]
        out[body] = {
            "windows": len(rows),
            "cpu_ratio": round(statistics.median(cpu), 3),
            "cpu_ratio_min": round(min(cpu), 3),
            "cpu_ratio_max": round(max(cpu), 3),
            "rps_ratio": round(statistics.median(w.rps_ratio for w in rows), 3),
            "new_cpu_us": round(statistics.median(w.new_cpu_us for w in rows)),
            "old_cpu_us": round(statistics.median(w.old_cpu_us for w in rows)),
        }
    return out


Load = Callable[[proxies.Proc, str, float], wrk.WrkResult]


def window(new: proxies.Proc, old: proxies.Proc, body: str, seconds: float,
           load: Load) -> Window:
    """Load both proxies at once for `seconds`; their CPU per request over that time."""
    results: dict[str, wrk.WrkResult] = {}
    errors: list[BaseException] = []

    def drive(p: proxies.Proc) -> None:
        try:
            results[p.name] = load(p, body, seconds)
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)

    before = {p.name: p.cpu_seconds() for p in (new, old)}
    threads = [threading.Thread(target=drive, args=(p,)) for p in (new, old)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    cpu = {p.name: (p.cpu_seconds() - before[p.name]) / max(results[p.name].requests, 1) * 1e6
           for p in (new, old)}
    return Window(body, cpu[new.name], cpu[old.name], results[new.name].rps,
                  results[old.name].rps)


def run(rev: str, upstream: int, workdir: Path, cpus: set[int] | None, load: Load, *,
        windows: int, seconds: float, starts: int = 1,
        log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """`windows` windows per body kind, dealt out over `starts` starts of both proxies."""
    configs = ("seatbelt", f"seatbelt@{rev}")
    found: list[Window] = []
    starts = max(1, min(starts, windows))
    for start in range(starts):
        mine = [w for w in range(windows) if w % starts == start]
        with proxies.started(configs, upstream, workdir / "abreast", cpus) as procs:
            new, old = procs[configs[0]], procs[configs[1]]
            for p in (new, old):  # warm-up: imports, caches, SQLite WAL
                for body in BODIES:
                    load(p, body, 1)
            for w in mine:
                for body in BODIES:
                    found.append(window(new, old, body, seconds, load))
                log(f"abreast window {w + 1}/{windows}: " + ", ".join(
                    f"{x.body} {x.cpu_ratio:.3f}" for x in found[-len(BODIES):]))
    return {"against": rev, "seconds": seconds, "starts": starts, **summarize(found)}
