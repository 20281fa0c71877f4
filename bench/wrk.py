"""Load generation with wrk (Debian's package): its Lua request script and its output.

wrk is C and event-driven: on a 2-core machine one wrk thread drives thousands of
requests a second while using a fraction of a core, so the proxy stays the bottleneck.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")
_SIZE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


class WrkError(RuntimeError):
    """wrk is missing, failed, or its output is not what we parse."""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # "50" -> ms, "99" -> ms
    errors: int = 0  # socket errors of every kind
    non_2xx: int = 0

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.errors == 0 and self.non_2xx == 0


def duration_ms(text: str) -> float:
    """wrk's '812.00us' / '1.20ms' / '2.00s' as milliseconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise WrkError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_output(text: str) -> WrkResult:
    """Parse `wrk --latency` output (the stable human format of wrk 4.x)."""
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m is None or rps is None:
        raise WrkError("unrecognised wrk output:\n" + text[-2000:])
    seconds = float(m.group(2)) * _UNITS[m.group(3)] / 1e3
    latency = {
        p: duration_ms(v)
        for p, v in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", text, re.M)
    }
    errors = 0
    s = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if s is not None:
        errors = sum(int(x) for x in s.groups())
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        requests=int(m.group(1)),
        seconds=seconds,
        rps=float(rps.group(1)),
        latency_ms=latency,
        errors=errors,
        non_2xx=int(bad.group(1)) if bad else 0,
    )


def lua_script(body: dict, headers: dict[str, str]) -> str:
    """A wrk script that POSTs one fixed JSON body with fixed headers."""

    def lua_str(s: str) -> str:
        return json.dumps(s)  # a JSON string literal is a valid Lua string literal here

    lines = ['wrk.method = "POST"', f"wrk.body = {lua_str(json.dumps(body))}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{lua_str(name)}] = {lua_str(value)}")
    return "\n".join(lines) + "\n"


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(
            "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), or run "
            "`./run.sh bench --install-wrk` as root"
        )
    return path


def install_wrk() -> None:
    """apt-get install wrk (as root); WrkError when that is not possible."""
    if shutil.which("wrk"):
        return
    if shutil.which("apt-get") is None:
        raise WrkError("wrk is missing and there is no apt-get here: install wrk by hand")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise WrkError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")


def pin(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and the threads it starts) to cpus."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def run(
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    cpus: set[int] | None = None,
) -> WrkResult:
    cmd = [find_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--latency", "-s", str(script), url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                       preexec_fn=pin(cpus))
    if r.returncode != 0:
        raise WrkError(f"wrk failed ({r.returncode}): {r.stderr.strip()[-1000:]}")
    return parse_output(r.stdout)
