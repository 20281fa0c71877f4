"""seatbelt's benchmarks: `./run.sh bench [--quick] [--json] [--write] [--only PART ...]`.

Side by side in one run, alternating configurations round by round and taking medians:
plain mitmdump (reverse mode, no-op addon), mitmdump with a pass-through stream callable
(the fair baseline) and mitmdump with seatbelt (auth, reserve, scan, settle, SQLite ledger,
metrics and audit on), all in front of bench/upstream.py (prebuilt answers, measured alone
too), loaded by wrk. Plus: time to first byte on a slow stream, proxy memory while a huge
response streams through, the scanner in-process and the ledger's reserve+settle pairs.

Parts: throughput, latency, ttfb, memory, tls (the explicit proxy with TLS on both sides,
loaded by bench/tls.py), scanner, ledger, exact (the cost per KB of an exact prompt count,
and the hooks' cost per request A/B against the commit before it: bench/exact_bench.py),
stall, abreast (the A/B against --against REV, default HEAD~1, with both proxies loaded at
the same time on one core: bench/abreast.py), instructions (the same A/B counted in
instructions per request under valgrind's callgrind: bench/instructions.py). `--write`
regenerates
bench/results.md and the docs/speed.md block between `<!-- bench:begin -->` and
`<!-- bench:end -->`. Take final numbers on a quiet machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import clients, proxies, report, tls, wrk
from bench.proxies import CONFIGS, REPO
from bench.upstream import JSON_BODY, SLOW_FIRST_S, SSE_BODY

PARTS = ("throughput", "latency", "ttfb", "memory", "tls", "scanner", "ledger", "exact",
         "stall", "abreast", "instructions")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def environment() -> dict[str, Any]:
    from mitmproxy.version import VERSION

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = 0
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
        wrk_version = out.split()[1] if out.startswith("wrk ") else "?"
    except OSError:
        wrk_version = "-"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} x {cpu}, {mem_gb:.0f} GB, {platform.system()}",
        "python": platform.python_version(),
        "mitmproxy": VERSION,
        "wrk": wrk_version,
        "load_before": load_average(),
    }


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.proxy_cpus, self.load_cpus = proxies.cpu_plan(not args.no_pin)
        self.result: dict[str, Any] = {"quick": args.quick, "checks": []}
        self.tmp = Path(tempfile.mkdtemp(prefix="seatbelt-bench-"))
        self.scripts: dict[tuple[str, str], Path] = {}
        self.configs: tuple[str, ...] = (
            CONFIGS + (proxies.EXTRA_CONFIGS if args.memory_ledger else ())
            + ((f"seatbelt@{args.against}",) if args.against else ()))
        # --restarts: how many times the proxies are started, at most one per round.
        self.starts = self.starts_for(args.rounds)

    def starts_for(self, rounds: int) -> int:
        return max(1, min(self.args.restarts, rounds))

    def other_commit(self) -> str:
        """What the A/B parts compare with: --against, else the commit before this one."""
        return self.args.against or "HEAD~1"

    # -- helpers ---------------------------------------------------------------------

    def script(self, proc: proxies.Proc, body: str) -> Path:
        """The wrk Lua script for a proxy (its credential) and a body kind."""
        key = (proc.name, proxies.auth_headers(proc)["Authorization"], body)
        if key not in self.scripts:
            path = self.tmp / f"{proc.name}-{body}.lua"
            path.write_text(wrk.lua_script(json.loads(clients.request_body(body == "sse")),
                                           proxies.auth_headers(proc)))
            self.scripts[key] = path
        return self.scripts[key]

    def wrk(self, proc: proxies.Proc, body: str, connections: int,
            seconds: float) -> wrk.WrkResult:
        res = wrk.run(f"http://127.0.0.1:{proc.port}/v1/chat/completions",
                      self.script(proc, body), connections=connections, seconds=seconds,
                      cpus=self.load_cpus)
        if not res.ok:
            raise RuntimeError(f"{proc.name} {body}: {res.non_2xx} non-2xx answers, "
                               f"{res.errors} socket errors in {res.requests} requests")
        return res

    def order(self, rnd: int, configs: tuple[str, ...] | None = None) -> list[str]:
        """Rotate the configuration order each round: none always runs first or last."""
        configs = configs or self.configs
        k = rnd % len(configs)
        return list(configs[k:] + configs[:k])

    # -- parts -----------------------------------------------------------------------

    def upstream_alone(self, up: proxies.Proc) -> None:
        out = {}
        for body in ("json", "sse"):
            res = self.wrk(up, body, 8, self.args.seconds)
            out[body] = {"rps": round(res.rps)}
        self.result["upstream"] = out
        log(f"upstream alone: {out}")

    def verify(self, procs: dict[str, proxies.Proc]) -> None:
        """Every configuration answers 200 with the upstream's exact bytes."""
        for name, proc in procs.items():
            for stream, expected in ((False, JSON_BODY), (True, SSE_BODY)):
                status, body = clients.fetch(proc.port, proxies.auth_headers(proc), stream)
                if status != 200 or body != expected:
                    raise RuntimeError(f"{name}: stream={stream} answered {status}, "
                                       f"{len(body)} bytes, not the upstream's bytes")
        self.result["checks"].append("every configuration passed the upstream's bytes "
                                     "unchanged (JSON and SSE)")

    def new_runs(self) -> dict[str, dict[str, list[dict[str, float]]]]:
        return {b: {c: [] for c in self.configs} for b in ("json", "sse")}

    def throughput(self, procs: dict[str, proxies.Proc], rounds: list[int],
                   runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
        """These rounds of the throughput runs, added to `runs` (summed up by
        throughput_result once every start of the proxies has had its rounds)."""
        for rnd in rounds:
            for body in ("json", "sse"):
                for c in self.order(rnd):
                    before = procs[c].cpu_seconds()
                    res = self.wrk(procs[c], body, 8, self.args.seconds)
                    used = procs[c].cpu_seconds() - before
                    runs[body][c].append({"rps": res.rps, "cpu_us": used / max(res.requests, 1)
                                          * 1e6})
            log(f"throughput round {rnd + 1}/{self.args.rounds}: " + ", ".join(
                f"{b} {c} {runs[b][c][-1]['rps']:.0f}" for b in runs for c in self.configs))

    def throughput_result(self, runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
        self.result["throughput"] = {
            b: {c: {"rps": round(median_of(runs[b][c], "rps")),
                    "cpu_us": round(median_of(runs[b][c], "cpu_us")),
                    "rounds": [round(r["rps"]) for r in runs[b][c]]} for c in self.configs}
            for b in runs}

    def latency(self, procs: dict[str, proxies.Proc], rounds: list[int],
                runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
        for rnd in rounds:
            for body in ("json", "sse"):
                for c in self.order(rnd):
                    res = self.wrk(procs[c], body, 1, self.args.latency_seconds)
                    runs[body][c].append({"p50_ms": res.latency_ms["50"],
                                          "p99_ms": res.latency_ms["99"]})

    def latency_result(self, runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
        self.result["latency"] = {
            b: {c: {"p50_ms": median_of(runs[b][c], "p50_ms"),
                    "p99_ms": median_of(runs[b][c], "p99_ms")} for c in self.configs}
            for b in runs}
        log(f"latency: {self.result['latency']}")

    def proxy_parts(self, up: proxies.Proc, parts: set[str]) -> None:
        """Throughput, latency and ttfb against the configurations. With --restarts N the
        proxies are started afresh N times and the rounds dealt out over the starts: two
        processes of the same code differ by up to ~6% in requests/s here (A/A runs, see
        docs/speed.md), so a median over one process per configuration can mislead an A/B."""
        starts = self.starts
        tp, lat = self.new_runs(), self.new_runs()
        for start in range(starts):
            rounds = [r for r in range(self.args.rounds) if r % starts == start]
            with proxies.started(self.configs, up.port, self.tmp, self.proxy_cpus) as procs:
                if start == 0:
                    self.verify(procs)
                for c in self.configs:  # warm-up: imports, caches, SQLite WAL
                    self.wrk(procs[c], "json", 8, 1)
                    self.wrk(procs[c], "sse", 8, 1)
                if "throughput" in parts:
                    self.throughput(procs, rounds, tp)
                if "latency" in parts:
                    self.latency(procs, rounds, lat)
                if start == starts - 1:
                    if "ttfb" in parts:
                        self.ttfb(up, procs)
                    self.audit_check(procs)
        if "throughput" in parts:
            self.throughput_result(tp)
        if "latency" in parts:
            self.latency_result(lat)

    def ttfb(self, up: proxies.Proc, procs: dict[str, proxies.Proc]) -> None:
        targets = {"upstream": up, **procs}
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in targets}
        for rnd in range(self.args.rounds):
            for c in ["upstream", *self.order(rnd)]:
                p = targets[c]
                runs[c].append(clients.ttfb(p.port, proxies.auth_headers(p),
                                            self.args.ttfb_count))
        self.result["ttfb_wait_ms"] = round(SLOW_FIRST_S * 1e3)
        self.result["ttfb"] = {c: {"ttfb_ms": median_of(r, "ttfb_ms")} for c, r in runs.items()}
        log(f"ttfb: {self.result['ttfb']}")

    def memory(self, up: proxies.Proc) -> None:
        """A fresh proxy per configuration (an earlier load would have grown its heap),
        warmed up, then one huge SSE response."""
        size = self.args.memory_mb * 1_000_000
        out = {}
        for c in CONFIGS:
            if c == "plain" and not self.args.memory_plain:
                continue
            with proxies.started((c,), up.port, self.tmp / "memory", self.proxy_cpus) as ps:
                p = ps[c]
                for _ in range(20):
                    for stream in (False, True):
                        clients.fetch(p.port, proxies.auth_headers(p), stream)
                time.sleep(0.5)
                out[c] = clients.big_stream(p.port, proxies.auth_headers(p), size, p.rss_bytes)
                if c == "seatbelt":
                    time.sleep(1.5)  # the audit line is written when the response ends
                    self.audit_big(p)
            log(f"memory {c}: {out[c]}")
        self.result["memory_mb"] = self.args.memory_mb
        self.result["memory"] = out

    def audit_big(self, p: proxies.Proc) -> None:
        lines = Path(p.extra["audit"]).read_text().splitlines()
        last = json.loads(lines[-1]) if lines else {}
        if last.get("usage_source") != "reported" or last.get("outcome") != "served":
            raise RuntimeError(f"the big stream was not metered as reported: {last}")
        self.result["checks"].append(
            f"the {self.args.memory_mb} MB stream was metered from its usage frame "
            f"({last.get('completion_tokens')} completion tokens, reported)")

    def audit_check(self, procs: dict[str, proxies.Proc], what: str = "",
                    key: str = "audit") -> None:
        """seatbelt really metered the load: count its audit lines by outcome and source."""
        p = procs.get("seatbelt")
        if p is None:
            return
        time.sleep(1.0)
        counts: dict[str, int] = {}
        with open(p.extra["audit"]) as f:
            for line in f:
                rec = json.loads(line)
                k = f"{rec['outcome']}/{rec['usage_source']}"
                counts[k] = counts.get(k, 0) + 1
        served = counts.get("served/reported", 0)
        self.result[key] = counts
        if served == 0 or any(k.startswith("refused") or k == "unauthorized/none"
                              for k in counts):
            raise RuntimeError(f"seatbelt did not meter the load as expected: {counts}")
        other = {k: v for k, v in counts.items() if k != "served/reported"}
        self.result["checks"].append(
            f"seatbelt's audit log{what}: {served:,} requests served and settled from reported "
            "usage" + (f", {other} (cut off by the load's stop)" if other else ""))

    def tls_part(self) -> None:
        """The explicit proxy with TLS on both sides (the main deployment): each configuration
        in regular mode, its client CONNECTing and trusting only that proxy's CA, the proxy
        verifying the HTTPS upstream against its self-signed certificate."""
        d = self.tmp / "tls"
        d.mkdir(parents=True, exist_ok=True)
        cert, key = tls.make_cert(d)
        up = proxies.start_upstream(d, self.load_cpus, (cert, key))
        target = f"{tls.HOST}:{up.port}"
        try:
            alone = {b: self.tls_load(0, target, cert, b, {}, 8, self.args.seconds).rps
                     for b in ("json", "sse")}
            with proxies.started(CONFIGS, up.port, d, self.proxy_cpus, cert) as procs:
                for p in procs.values():  # warm-up: TLS certificates, imports, WAL
                    for b in ("json", "sse"):
                        self.tls_load(p.port, target, Path(p.extra["ca"]), b,
                                      proxies.auth_headers(p), 8, 1)
                self.result["tls"] = {"upstream": alone, **self.tls_rounds(procs, target)}
                self.audit_check(procs, " (explicit proxy, TLS)", "tls_audit")
        finally:
            up.stop()
        log(f"tls: {self.result['tls']}")

    def tls_rounds(self, procs: dict[str, proxies.Proc], target: str) -> dict[str, Any]:
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            b: {c: [] for c in CONFIGS} for b in ("json", "sse")}
        for rnd in range(self.args.rounds):
            for body in ("json", "sse"):
                for c in self.order(rnd, CONFIGS):
                    p, ca = procs[c], Path(procs[c].extra["ca"])
                    h = proxies.auth_headers(p)
                    before = p.cpu_seconds()
                    many = self.tls_load(p.port, target, ca, body, h, 8, self.args.seconds)
                    used = (p.cpu_seconds() - before) / max(many.requests, 1) * 1e6
                    one = self.tls_load(p.port, target, ca, body, h, 1, self.args.latency_seconds)
                    runs[body][c].append({"rps": many.rps, "cpu_us": used,
                                          "client_cpu": many.client_cpu,
                                          "p50_ms": one.p50_ms, "p99_ms": one.p99_ms})
            log(f"tls round {rnd + 1}/{self.args.rounds}: " + ", ".join(
                f"{b} {c} {runs[b][c][-1]['rps']:.0f}" for b in runs for c in CONFIGS))
        return {b: {c: {"rps": round(median_of(runs[b][c], "rps")),
                        "cpu_us": round(median_of(runs[b][c], "cpu_us")),
                        "p50_ms": median_of(runs[b][c], "p50_ms"),
                        "p99_ms": median_of(runs[b][c], "p99_ms"),
                        "client_cpu": median_of(runs[b][c], "client_cpu"),
                        "rounds": [round(r["rps"]) for r in runs[b][c]]} for c in CONFIGS}
                for b in runs}

    def tls_load(self, port: int, target: str, ca: Path, body: str, headers: dict[str, str],
                 connections: int, seconds: float) -> tls.TlsResult:
        res = tls.run(port, target, ca, body, headers, connections=connections,
                      seconds=seconds, cpus=self.load_cpus)
        if not res.ok:
            raise RuntimeError(f"TLS load on port {port}, {body}: {res.non_2xx} non-2xx "
                               f"answers, {res.errors} connection errors in "
                               f"{res.requests} requests")
        return res

    def scanner(self) -> None:
        from bench import scanner_bench

        with self.pinned():
            self.result["scanner"] = scanner_bench.run(self.args.scanner_seconds)
        log(f"scanner: {self.result['scanner']}")

    def ledger(self) -> None:
        from bench import ledger_bench

        with self.pinned():
            self.result["ledger"] = ledger_bench.run(ledger_bench.BACKENDS, self.args.pairs)
        log(f"ledger: {self.result['ledger']}")

    def exact(self) -> None:
        from bench import exact_bench

        self.result["exact"] = exact_bench.run(self.args.exact_base, self.args.exact_rounds,
                                               self.args.exact_requests)
        log(f"exact: {self.result['exact']['hot_path']}")

    def abreast(self, up: proxies.Proc) -> None:
        """The A/B side by side (bench/abreast.py): against --against, else HEAD~1."""
        from bench import abreast

        a = self.args
        self.result["abreast"] = abreast.run(
            self.other_commit(), up.port, self.tmp, self.proxy_cpus,
            lambda p, body, seconds: self.wrk(p, body, 8, seconds),
            windows=a.windows, seconds=a.window_seconds, starts=self.starts_for(a.windows),
            log=log)
        log(f"abreast: {self.result['abreast']}")

    def instructions(self, up: proxies.Proc) -> None:
        """The A/B in instructions per request (bench/instructions.py), when valgrind is
        there; without it the part says so and the rest of the run goes on."""
        from bench import instructions

        try:
            self.result["instructions"] = instructions.run(
                self.other_commit(), up.port, self.tmp,
                requests=self.args.ir_requests, log=log)
        except instructions.ValgrindMissing as e:
            log(str(e))
            return
        log(f"instructions: {self.result['instructions']}")

    def stall(self) -> None:
        from bench import stall_bench

        # Not pinned: the body worker is a process of its own, on whichever core is free.
        self.result["stall"] = stall_bench.run(self.args.stall_mb, log=log)
        found = stall_bench.worst(self.result["stall"])
        log(f"stall: worst {found}")

    def pinned(self):
        """In-process benches run on the proxy's CPU (nothing else is running then)."""
        import contextlib

        @contextlib.contextmanager
        def cm():
            before = os.sched_getaffinity(0) if self.proxy_cpus else None
            if self.proxy_cpus:
                os.sched_setaffinity(0, self.proxy_cpus)
            try:
                yield
            finally:
                if before is not None:
                    os.sched_setaffinity(0, before)

        return cm()

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.args
        env = environment()
        env["method"] = (
            f"{a.rounds} round(s) alternating the configurations"
            + (f" over {self.starts} starts of the proxies" if self.starts > 1 else "")
            + f", {a.seconds:g} s per "
            f"throughput run and {a.latency_seconds:g} s per latency run; "
            + ("proxy pinned to its own core, upstream and wrk on the other."
               if self.proxy_cpus else "no CPU pinning.")
        )
        self.result["env"] = env
        log(f"load average {env['load_before']} ({env['machine']}); work dir {self.tmp}")
        parts = set(a.only or PARTS)
        needs_proxies = parts & {"throughput", "latency", "ttfb", "memory", "abreast",
                                 "instructions"}
        if needs_proxies:
            if needs_proxies - {"instructions"}:  # the instruction count sends its own load
                wrk.find_wrk()
            up = proxies.start_upstream(self.tmp, self.load_cpus)
            try:
                if parts & {"throughput", "latency", "ttfb"}:
                    if "throughput" in parts:
                        self.upstream_alone(up)
                    self.proxy_parts(up, parts)
                if "memory" in parts:
                    self.memory(up)
                if "abreast" in parts:
                    self.abreast(up)
                if "instructions" in parts:
                    self.instructions(up)
            finally:
                up.stop()
        if "tls" in parts:
            self.tls_part()
        if "scanner" in parts:
            self.scanner()
        if "ledger" in parts:
            self.ledger()
        if "exact" in parts:
            self.exact()
        if "stall" in parts:
            self.stall()
        env["load_after"] = load_average()
        return self.result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="./run.sh bench", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quick", action="store_true", help="a fast smoke run (about three minutes)")
    p.add_argument("--write", action="store_true",
                   help="write bench/results.md and the docs/speed.md block")
    p.add_argument("--only", nargs="+", choices=PARTS, metavar="PART",
                   help=f"run only these parts ({', '.join(PARTS)})")
    p.add_argument("--rounds", type=int, help="rounds per measurement (default 5; quick 1)")
    p.add_argument("--seconds", type=float, help="seconds per throughput run (default 4)")
    p.add_argument("--latency-seconds", type=float, help="seconds per latency run (default 3)")
    p.add_argument("--ttfb-count", type=int, default=None, help="slow streams per round")
    p.add_argument("--memory-mb", type=int, help="size of the huge response (default 100)")
    p.add_argument("--memory-plain", action="store_true",
                   help="also stream it through plain mitmdump (buffers it all: slow, big)")
    p.add_argument("--pairs", type=int, help="ledger reserve+settle pairs (default 20000)")
    p.add_argument("--scanner-seconds", type=float, help="seconds per scanner case")
    p.add_argument("--exact-base", help="commit the hot-path A/B compares with (default: "
                   "the merge-base with main)")
    p.add_argument("--exact-rounds", type=int, help="hot-path A/B rounds (default 3; quick 1)")
    p.add_argument("--exact-requests", type=int, help="requests per A/B run (default 1000)")
    p.add_argument("--stall-mb", type=float,
                   help="size of each worst-shape body of the stall part (default 10)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (logs, audit, ledger) instead of deleting it")
    p.add_argument("--against", metavar="REV",
                   help="also run seatbelt as of commit REV in the same rounds (A/B; e.g. "
                        "HEAD~1); results add seatbelt / seatbelt@REV")
    p.add_argument("--restarts", type=int, default=1, metavar="N",
                   help="start the proxies afresh N times, the rounds dealt out over the "
                        "starts (for an A/B: medians over N processes per configuration)")
    p.add_argument("--windows", type=int,
                   help="abreast: windows per body kind (default 10; quick 2)")
    p.add_argument("--window-seconds", type=float,
                   help="abreast: seconds per window (default 3; quick 1)")
    p.add_argument("--ir-requests", type=int,
                   help="instructions: requests counted per commit and body (default 300; "
                        "quick 50)")
    p.add_argument("--memory-ledger", action="store_true",
                   help="also run seatbelt with the in-memory ledger (how much is SQLite)")
    p.add_argument("--install-wrk", action="store_true",
                   help="apt-get install wrk first when it is missing (root)")
    a = p.parse_args(argv)
    quick = a.quick
    defaults = {"rounds": 1 if quick else 5, "seconds": 2 if quick else 4,
                "latency_seconds": 1 if quick else 3, "ttfb_count": 5 if quick else 10,
                "memory_mb": 20 if quick else 100, "pairs": 2000 if quick else 20000,
                "scanner_seconds": 0.3 if quick else 1.5,
                "exact_rounds": 1 if quick else 3, "exact_requests": 300 if quick else 1000,
                "stall_mb": 1 if quick else 10,
                "windows": 2 if quick else 10, "window_seconds": 1 if quick else 3,
                "ir_requests": 50 if quick else 300}
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.install_wrk:
        wrk.install_wrk()
    bench = Bench(args)
    try:
        result = bench.run()
    except wrk.WrkError as e:
        log(str(e))
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    text = report.markdown(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(text)
    if args.write:
        (REPO / "bench" / "results.md").write_text("# seatbelt benchmark results\n\n" + text)
        if report.write_readme(REPO / "docs" / "speed.md", text):
            log("wrote bench/results.md and the docs/speed.md block")
        else:
            log(f"wrote bench/results.md; docs/speed.md has no {report.BEGIN} block to update")
    failed = [n for n, v in report.goal_values(result).items() if report.goal_met(n, v) is False]
    if failed:
        log(f"goals not met: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
