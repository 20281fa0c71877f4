"""Profile a proxy configuration under wrk load with py-spy (PyPI: `pip install py-spy`).

    python -m bench.profile [seatbelt|seatbelt@REV|passthrough|plain] [--body json|sse]
                            [--seconds N] [--top N] [--raw FILE]

Starts the bench upstream and one mitmdump, loads it with wrk at 8 connections, samples
it with `py-spy record --format raw` (collapsed stacks) and prints the functions with the
most samples: inclusive (on the stack) and self (on top), as shares of all samples.
Needs permission to ptrace the proxy (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench import clients, proxies, wrk


def parse_collapsed(text: str) -> tuple[Counter[str], Counter[str], int]:
    """(inclusive samples, self samples, total) per function from py-spy's raw format:
    one `frame;frame;...;leaf COUNT` line per distinct stack."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    return inclusive, own, total


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`: one row per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def summary(text: str, top: int = 25) -> str:
    inclusive, own, total = parse_collapsed(text)
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="seatbelt",
                   help="one of " + ", ".join(proxies.CONFIGS + proxies.EXTRA_CONFIGS)
                   + ", or seatbelt@REV: the addon of another commit")
    p.add_argument("--body", default="json", choices=("json", "sse"))
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--raw", help="also keep the collapsed stacks in this file")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    a = p.parse_args(argv)
    if a.config not in proxies.CONFIGS + proxies.EXTRA_CONFIGS \
            and not a.config.startswith("seatbelt@"):
        p.error(f"unknown configuration {a.config!r}")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    proxy_cpus, load_cpus = proxies.cpu_plan()
    tmp = Path(tempfile.mkdtemp(prefix="seatbelt-profile-"))
    up = proxies.start_upstream(tmp, load_cpus)
    try:
        with proxies.started((a.config,), up.port, tmp, proxy_cpus) as procs:
            proc = procs[a.config]
            script = tmp / "load.lua"
            body = json.loads(clients.request_body(a.body == "sse"))
            script.write_text(wrk.lua_script(body, proxies.auth_headers(proc)))
            url = f"http://127.0.0.1:{proc.port}/v1/chat/completions"
            wrk.run(url, script, connections=8, seconds=2, cpus=load_cpus)  # warm-up
            raw = tmp / "stacks.txt"
            result: list[wrk.WrkResult] = []
            load = threading.Thread(target=lambda: result.append(wrk.run(
                url, script, connections=8, seconds=a.seconds + 2, cpus=load_cpus)))
            load.start()
            subprocess.run([spy, "record", "--pid", str(proc.pid), "--format", "raw",
                            "--rate", str(a.rate), "--duration", str(round(a.seconds)),
                            "--output", str(raw), "--nonblocking"],
                           check=True, capture_output=True)
            load.join()
            text = raw.read_text()
            if a.raw:
                Path(a.raw).write_text(text)
            rps = result[0].rps if result else 0
            print(f"{a.config} {a.body}: {rps:.0f} requests/s under py-spy\n")
            print(summary(text, a.top))
    finally:
        up.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
