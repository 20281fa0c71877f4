"""The processes under test: the fast upstream and mitmdump in three configurations.

- `plain`: mitmdump, reverse mode, a no-op addon (bench/noop_addon.py);
- `passthrough`: mitmdump with a stream callable that returns each chunk unchanged
  (bench/passthrough_addon.py): the fair baseline for a streaming proxy;
- `seatbelt`: mitmdump with seatbelt/addon.py: auth, reserve, scan, settle, SQLite ledger,
  Prometheus metrics and the audit log all on;
- `seatbelt@REV` (`--against REV`): the same configuration running the addon of another
  commit, extracted with `git archive`: the same-run A/B against a previous commit.

All three run at once (an idle mitmdump costs next to nothing), so rounds can alternate
between them. With 2+ CPUs the proxies share CPU 0 and the upstream and wrk CPU 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from bench.wrk import pin

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CONFIGS = ("plain", "passthrough", "seatbelt")
# A diagnostic extra (`--memory-ledger`): seatbelt with the in-memory ledger, which shows
# how much of seatbelt's cost is the durable SQLite ledger.
EXTRA_CONFIGS = ("seatbelt-memory",)
MODEL = "gpt-4o-mini"
HUGE_CAP = 10**15  # never refuses: the bench measures the admitted path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_plan(enabled: bool = True) -> tuple[set[int] | None, set[int] | None]:
    """(proxy CPUs, load CPUs): proxy alone on one core, upstream and wrk on another."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if not enabled or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def checkout(rev: str, workdir: Path) -> Path:
    """The seatbelt entry file of commit `rev`, extracted under workdir (once)."""
    dest = workdir / f"rev-{rev.replace('/', '_')}"
    if not dest.exists():
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            raise RuntimeError(f"--against {rev}: git archive failed: "
                               f"{archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    for entry in ("seatbelt/addon.py", "addon/seatbelt.py"):  # the layout before the rename
        if (dest / entry).is_file():
            return dest / entry
    raise RuntimeError(f"--against {rev}: no seatbelt entry file in that commit")


def mitmdump_binary() -> str:
    return os.environ.get("SEATBELT_MITMDUMP") or str(Path(sys.executable).with_name("mitmdump"))


def interpreter_of(script: str) -> str:
    """The interpreter a console script's `#!` line names (this Python when it has none)."""
    with open(script, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    return first[2:].split()[0] if first.startswith("#!") and len(first) > 2 else sys.executable


def policy_yaml(fingerprint: str) -> str:
    return f"""version: 1
require_auth: true
fallback_max_output: 4096
models:
  {MODEL}: {{max_output: 16384}}
accounts:
  bench: {{cap: {HUGE_CAP}, window: balance}}
keys:
  - id: bench
    account: bench
    credential_sha256: {fingerprint}
    cap: {HUGE_CAP}
    window: {{rolling: 3600}}
"""


@dataclass
class Proc:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident set size now (Linux /proc), 0 when unknown."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc), 0 if unknown.
        Per request, it is a cross-check of throughput that another tenant's load on
        the machine barely moves (stolen time is not counted)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _wait(name: str, proc: subprocess.Popen, log: Path, probe, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}): {_tail(log)}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            if probe():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready after {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def start_upstream(workdir: Path, cpus: set[int] | None,
                   tls: tuple[Path, Path] | None = None) -> Proc:
    """The canned upstream; over HTTPS with `tls` = (certificate, key)."""
    port = free_port()
    log = workdir / ("upstream-tls.log" if tls else "upstream.log")
    cmd = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    if tls:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                            stdin=subprocess.DEVNULL, preexec_fn=pin(cpus))
    if tls:
        _wait("upstream", proc, log, lambda: _tls_accepts(port))
    else:
        _wait("upstream", proc, log, lambda: _get(f"http://127.0.0.1:{port}/") == 200)
    return Proc("upstream", port, proc, log)


def _tls_accepts(port: int) -> bool:
    """Something accepts TCP connections on the port (the TLS upstream, an explicit proxy)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def mode_args(upstream: int, d: Path, upstream_ca: Path | None) -> list[str]:
    """Reverse mode in front of the plain upstream; with `upstream_ca`, the explicit proxy
    (regular mode, its CA in d/confdir) verifying the HTTPS upstream against that cert."""
    if upstream_ca is None:
        return ["--mode", f"reverse:http://127.0.0.1:{upstream}"]
    return ["--mode", "regular", "--set", f"confdir={d / 'confdir'}",
            "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]


def seatbelt_options(config: str, d: Path, metrics: int) -> list[str]:
    """The --set options of a seatbelt configuration. `seatbelt@REV` gets exactly what
    `seatbelt` gets (an SQLite ledger): an A/B that compared SQLite against memory would
    measure the ledger, not the commit."""
    ledger = "memory://" if config == "seatbelt-memory" else f"sqlite:///{d / 'ledger.db'}"
    return ["--set", f"seatbelt_policy={d / 'policy.yaml'}",
            "--set", f"seatbelt_ledger={ledger}",
            "--set", f"seatbelt_metrics=127.0.0.1:{metrics}",
            "--set", f"seatbelt_audit={d / 'audit.jsonl'}"]


def start_proxy(config: str, upstream: int, workdir: Path, cpus: set[int] | None,
                upstream_ca: Path | None = None, wrap: tuple[str, ...] = (),
                ready_timeout: float = 30.0) -> Proc:
    """Start one mitmdump configuration; returns when it forwards (seatbelt: /readyz).
    `wrap` runs mitmdump's interpreter under another program (bench/instructions.py:
    valgrind), given the script's own interpreter so the wrapper sees Python itself."""
    port = free_port()
    d = workdir / config
    d.mkdir(parents=True, exist_ok=True)
    log = d / "mitmdump.log"
    binary = mitmdump_binary()
    launcher = [*wrap, interpreter_of(binary), binary] if wrap else [binary]
    cmd = [*launcher, "-q", *mode_args(upstream, d, upstream_ca),
           "--listen-host", "127.0.0.1", "-p", str(port)]
    extra: dict[str, str] = {"ca": str(d / "confdir" / "mitmproxy-ca-cert.pem")} \
        if upstream_ca else {}
    if config == "plain":
        cmd += ["-s", str(BENCH / "noop_addon.py")]
    elif config == "passthrough":
        cmd += ["-s", str(BENCH / "passthrough_addon.py")]
    elif config in ("seatbelt", "seatbelt-memory") or config.startswith("seatbelt@"):
        credential = "sk-bench-" + secrets.token_hex(16)
        fp = hashlib.sha256(credential.encode()).hexdigest()
        (d / "policy.yaml").write_text(policy_yaml(fp))
        metrics = free_port()
        extra |= {"credential": credential, "metrics": str(metrics),
                  "audit": str(d / "audit.jsonl"), "ledger": str(d / "ledger.db")}
        entry = (checkout(config.split("@", 1)[1], workdir) if "@" in config
                 else REPO / "seatbelt" / "addon.py")
        cmd += ["-s", str(entry), *seatbelt_options(config, d, metrics)]
    else:
        raise ValueError(f"unknown proxy configuration {config!r}")
    proc = subprocess.Popen(cmd, cwd=d, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=pin(cpus))
    started = Proc(config, port, proc, log, extra)
    try:
        if "metrics" in extra:
            url = f"http://127.0.0.1:{extra['metrics']}/readyz"
            _wait(config, proc, log, lambda: _get(url) == 200, ready_timeout)
        elif upstream_ca:  # an explicit proxy answers nothing useful to GET /: it listens
            ca = Path(extra["ca"])
            _wait(config, proc, log, lambda: _tls_accepts(port) and ca.exists())
        else:  # forwarding: the upstream's own answer to GET / (a real engine's may be 404)
            url = f"http://127.0.0.1:{port}/"
            _wait(config, proc, log, lambda: _get(url) < 500)
    except BaseException:
        started.stop()  # never leave a proxy behind that nobody will stop
        raise
    return started


@contextlib.contextmanager
def started(configs: tuple[str, ...], upstream: int, workdir: Path,
            cpus: set[int] | None, upstream_ca: Path | None = None) -> Iterator[dict[str, Proc]]:
    procs: dict[str, Proc] = {}
    try:
        for c in configs:
            procs[c] = start_proxy(c, upstream, workdir, cpus, upstream_ca)
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def auth_headers(proc: Proc) -> dict[str, str]:
    """Headers every benchmark request sends; the credential only matters to seatbelt,
    but all configurations get the same bytes."""
    credential = proc.extra.get("credential", "sk-bench-baseline-" + "0" * 23)
    return {"Authorization": f"Bearer {credential}"}
