"""The A/B in instructions: what each commit's proxy executes per request, counted.

    ./run.sh bench --only instructions [--against REV] [--ir-requests N]

Timings on a shared VM move with the machine (docs/speed.md); an instruction count does not.
Each commit's mitmdump runs under valgrind's callgrind (`apt-get install valgrind`), which
counts the user-space instructions the process executes (kernel time is not in it).
Counting is switched on only after start-up and a warm-up (`--instr-atstart=no`, then
`callgrind_control -i on`), for N requests on one keep-alive connection, so the figure is
instructions per request of the whole proxy: mitmproxy, seatbelt, SQLite, the interpreter.
Two runs of the same commit agree within ~0.3%. Callgrind runs the process ~50x slower,
which no timing here depends on.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from bench import clients, proxies

BODIES = ("json", "sse")
WARM_UP = 50  # requests before counting starts: imports, caches, the SQLite WAL


class ValgrindMissing(RuntimeError):
    """valgrind / callgrind_control are not installed."""


def callgrind_total(text: str) -> int:
    """The instruction total of a callgrind output file: its `totals:` line (written at the
    end), else its `summary:` (in the header, 0 when counting started late)."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(("totals:", "summary:")):
            name, value = line.split()[:2]
            found[name] = int(value)
    if not found:
        raise ValueError("no totals: or summary: line in the callgrind output")
    return found.get("totals:", found.get("summary:", 0))


def summarize(counts: dict[str, dict[str, float]], new: str, old: str) -> dict[str, Any]:
    """Per body kind: each commit's instructions per request and old / new (pure)."""
    out: dict[str, Any] = {}
    for body, row in counts.items():
        out[body] = {"new_ir": round(row[new]), "old_ir": round(row[old]),
                     "ratio": round(row[old] / row[new], 4)}
    return out


def _requests(port: int, headers: dict[str, str], body: str, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    payload = clients.request_body(body == "sse")
    try:
        for _ in range(n):
            conn.request("POST", "/v1/chat/completions", payload,
                         {**headers, "Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"port {port}: answered {answer.status} under callgrind")
    finally:
        conn.close()


def count(config: str, upstream: int, workdir: Path, body: str, n: int,
          warm_up: int = WARM_UP) -> float:
    """Instructions per request of one configuration for one body kind."""
    d = workdir / "instructions" / body
    out = d / f"{config.replace('@', '_')}.callgrind"
    wrap = ("valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}")
    p = proxies.start_proxy(config, upstream, d, None, wrap=wrap, ready_timeout=300)
    try:
        headers = proxies.auth_headers(p)
        _requests(p.port, headers, body, warm_up)
        control = shutil.which("callgrind_control") or "callgrind_control"
        subprocess.run([control, "-i", "on", str(p.pid)], check=True, capture_output=True)
        _requests(p.port, headers, body, n)
        subprocess.run([control, "-i", "off", str(p.pid)], check=True, capture_output=True)
    finally:
        p.stop(timeout=300)  # callgrind writes its file as the process exits
    return callgrind_total(out.read_text(errors="replace")) / n


def run(rev: str, upstream: int, workdir: Path, *, requests: int,
        log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise ValgrindMissing("the instructions part needs valgrind: apt-get install valgrind")
    new, old = "seatbelt", f"seatbelt@{rev}"
    counts: dict[str, dict[str, float]] = {}
    for body in BODIES:
        counts[body] = {c: count(c, upstream, workdir, body, requests) for c in (new, old)}
        log(f"instructions {body}: " + ", ".join(f"{c} {v:,.0f}"
                                                 for c, v in counts[body].items()))
    return {"against": rev, "requests": requests, **summarize(counts, new, old)}
