"""End-to-end harness: real `mitmdump` processes with the addon, in front of the stand-in API.

Why real processes: start-up failure, fail-closed loading, shutdown, metrics and the audit
file only exist in a running mitmdump. `SEATBELT_MITMDUMP` picks the binary (CI points it at
mitmproxy 11), else the `mitmdump` next to this interpreter. Proxies are shared per module
(2-core machine); each test uses its own policy keys so tests do not see each other's spend.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from tests.standin import StandIn

REPO = Path(__file__).resolve().parents[2]
ADDON = REPO / "seatbelt" / "addon.py"
T = TypeVar("T")


# --------------------------------------------------------------------------- small helpers


def mitmdump_binary() -> str:
    return os.environ.get("SEATBELT_MITMDUMP") or str(Path(sys.executable).with_name("mitmdump"))


# Ports handed to servers a test starts are picked below the kernel's ephemeral range: a
# port from bind(0) is one the next outgoing connection of any process may take before the
# server binds it (a CI run lost a mitmdump start so: "address already in use").
LOWEST_PORT = 10000


def ephemeral_start() -> int:
    """The first port the kernel gives outgoing connections (0 when unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A port nothing listens on now, outside the ephemeral range where there is room."""
    top = ephemeral_start()
    for _ in range(200):
        port = secrets.randbelow(top - LOWEST_PORT) + LOWEST_PORT if top > LOWEST_PORT else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port below the ephemeral range")


def tag() -> str:
    """A unique word a test writes into its prompts, to find its requests upstream."""
    return "tag" + secrets.token_hex(6)


def fingerprint(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll until probe() is truthy; fail naming `what` (and the last value) otherwise."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}; last value: {value!r}")
        time.sleep(0.05)
        value = probe()
    return value


def http_module() -> Any:
    """The httpx flavour the installed SDKs speak (openai 3.x: httpx2; openai 1.x: httpx)."""
    import openai._base_client as base

    if hasattr(base, "httpx2"):
        import httpx2

        return httpx2
    import httpx

    return httpx


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


# --------------------------------------------------------------------------- policy


@dataclass
class Key:
    """One policy key; the raw credential exists only in the test process and the client."""

    id: str
    cap: int | None = None
    window: str | dict[str, int] = "balance"
    account: str = "team"
    credential: str = field(default_factory=lambda: "sk-test-" + secrets.token_hex(16))

    @property
    def fp(self) -> str:
        return fingerprint(self.credential)


def _yaml_window(window: str | dict[str, int]) -> str:
    if isinstance(window, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in window.items()) + "}"
    return window


def policy_text(
    keys: list[Key],
    *,
    accounts: dict[str, dict[str, Any]] | None = None,
    require_auth: bool = True,
    models: dict[str, int | None] | None = None,
    fallback_max_output: int = 4096,
) -> str:
    """A version-1 policy (CONTRACT §3) declaring every account its keys name."""
    accounts = dict(accounts or {})
    for k in keys:
        accounts.setdefault(k.account, {})
    lines = [
        "version: 1",
        f"require_auth: {'true' if require_auth else 'false'}",
        f"fallback_max_output: {fallback_max_output}",
    ]
    if models:
        lines.append("models:")
        for name, limit in models.items():
            lines.append(f"  {name}: " + ("{}" if limit is None else f"{{max_output: {limit}}}"))
    lines.append("accounts:")
    for name, spec in accounts.items():
        parts = []
        if spec.get("cap") is not None:
            parts.append(f"cap: {spec['cap']}")
            parts.append(f"window: {_yaml_window(spec.get('window', 'balance'))}")
        lines.append(f"  {name}: {{{', '.join(parts)}}}")
    lines.append("keys:")
    for k in keys:
        lines += [f"  - id: {k.id}", f"    account: {k.account}",
                  f"    credential_sha256: {k.fp}"]
        if k.cap is not None:
            lines += [f"    cap: {k.cap}", f"    window: {_yaml_window(k.window)}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the proxy


class Proxy:
    """One mitmdump with the addon, its files in `workdir`, started and stopped by the test."""

    def __init__(
        self,
        workdir: Path,
        policy: str,
        *,
        upstream: str | None = None,
        mode: str = "reverse",
        options: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        script: Path | None = None,
    ) -> None:
        self.script = script or ADDON  # the `-s` file mitmproxy loads (and watches)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.policy_path = workdir / "policy.yaml"
        self.policy_path.write_text(policy)
        self.ledger_path = workdir / "ledger.db"
        self.audit_path = workdir / "audit.jsonl"
        self.confdir = workdir / "confdir"
        self.log_path = workdir / "mitmdump.log"
        self.upstream = upstream
        self.mode = mode
        self.options = options or {}
        self.extra_args = extra_args or []
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # ---- addresses

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.ledger_path}"

    @property
    def ca_path(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def command(self) -> list[str]:
        opts = {
            "seatbelt_policy": str(self.policy_path),
            "seatbelt_ledger": self.ledger_url,
            "seatbelt_metrics": f"127.0.0.1:{self.metrics_port}",
            "seatbelt_audit": str(self.audit_path),
            "confdir": str(self.confdir),
            **self.options,
        }
        mode = f"reverse:{self.upstream}" if self.mode == "reverse" else self.mode
        cmd = [mitmdump_binary(), "-s", str(self.script), "--mode", mode,
               "--listen-host", "127.0.0.1", "-p", str(self.port)]
        for k, v in opts.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd + self.extra_args

    # ---- lifecycle

    def start(self, timeout: float = 30.0) -> Proxy:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mitmdump exited with {self.proc.returncode} during start-up:\n{self.log()}"
                )
            if self._listening() and http_get(self.metrics_url + "/readyz", 1.0)[0] == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mitmdump not ready after {timeout}s:\n{self.log()}")

    def _listening(self) -> bool:
        """True once something has bound the listen port.

        Probed by trying to bind it ourselves, not by connecting: mitmproxy 11 prints an
        asyncio traceback when it stops while a probe connection is still being handled.
        """
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError:
                return True
        return False

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL, without waiting (reap() waits): nothing is settled or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def reap(self, timeout: float = 10) -> None:
        """Wait for a killed (or exited) mitmdump and forget it."""
        if self.proc is not None:
            self.proc.wait(timeout)
            self.proc = None

    def restart(self) -> Proxy:
        self.stop()
        return self.start()

    # ---- outputs

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def audit(self) -> list[dict[str, Any]]:
        try:
            text = self.audit_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def audit_for(self, key: str) -> list[dict[str, Any]]:
        return [a for a in self.audit() if a.get("key") == key]

    def wait_audit(self, key: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The audit lines of `key` once there are at least `count` of them."""
        return wait_for(
            f"{count} audit line(s) for key {key!r}",
            lambda: (lines if len(lines := self.audit_for(key)) >= count else None),
            timeout,
        )

    def metrics_text(self) -> str:
        status, text = http_get(self.metrics_url + "/metrics")
        assert status == 200, f"/metrics answered {status}: {text[:200]}"
        return text

    def metrics(self) -> Metrics:
        return Metrics.parse(self.metrics_text())

    def report(self) -> list[dict[str, Any]]:
        """`python -m seatbelt.cli.report --json` against this proxy's ledger and policy."""
        out = subprocess.run(
            [sys.executable, "-m", "seatbelt.cli.report", "--ledger", self.ledger_url,
             "--policy", str(self.policy_path), "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, f"report failed ({out.returncode}): {out.stderr}"
        rows = json.loads(out.stdout)
        assert isinstance(rows, list), out.stdout
        return rows

    def row(self, key: str) -> dict[str, Any]:
        rows = [r for r in self.report() if r.get("key") == key]
        assert len(rows) == 1, f"report has {len(rows)} rows for key {key!r}"
        return rows[0]


# --------------------------------------------------------------------------- metrics


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """A parsed Prometheus text exposition (just enough for assertions)."""

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if m:
                labels = dict(_LABEL.findall(m.group(2) or ""))
                samples.append((m.group(1), labels, float(m.group(3))))
        return cls(samples)

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for n, lab, v in self.samples
                if n == name and all(lab.get(k) == v2 for k, v2 in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample matching name and labels (None if absent; fails if ambiguous)."""
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name}{labels} is ambiguous: {found}"
        return found[0][1] if found else None

    def total(self, name: str, **labels: str) -> float:
        return sum(v for _, v in self.find(name, **labels))


# --------------------------------------------------------------------------- clients


def openai_client(proxy: Proxy | str, key: Key | str | None, **kw: Any) -> Any:
    import openai

    base = proxy if isinstance(proxy, str) else proxy.url + "/v1"
    cred = key.credential if isinstance(key, Key) else key
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 30.0)
    return openai.OpenAI(base_url=base, api_key=cred or "unused", **kw)


def anthropic_client(proxy: Proxy | str, key: Key | str | None, **kw: Any) -> Any:
    import anthropic

    base = proxy if isinstance(proxy, str) else proxy.url
    cred = key.credential if isinstance(key, Key) else key
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 30.0)
    return anthropic.Anthropic(base_url=base, api_key=cred or "unused", **kw)


def chat(text: str, **kw: Any) -> dict[str, Any]:
    """Arguments of a one-message chat request."""
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **kw}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def standin() -> Iterator[StandIn]:
    server = StandIn(tls=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proxy_factory(
    tmp_path_factory: pytest.TempPathFactory, standin: StandIn
) -> Iterator[Callable[..., Proxy]]:
    """make(name, policy, **Proxy kwargs) -> a started Proxy, stopped at session end."""
    started: list[Proxy] = []

    def make(name: str, policy: str, *, start: bool = True, **kw: Any) -> Proxy:
        kw.setdefault("upstream", standin.url)
        p = Proxy(tmp_path_factory.mktemp(name), policy, **kw)
        started.append(p)
        return p.start() if start else p

    yield make
    # Killed, not stopped: nothing reads a session proxy after the session, and a graceful
    # exit costs each ~0.5 s of CPU (settling, closing the ledger): 14 s of each CI pass for
    # the session's dozens. The graceful stop has its own tests (test_crash.py's SIGTERM).
    for p in started:
        p.kill()  # all of them first: they die in parallel
    for p in started:
        p.reap()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the tail of every mitmdump log the test could see."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name, value in funcargs.items():
        if isinstance(value, Proxy):
            report.sections.append((f"mitmdump log ({name})", value.log()[-6000:]))


def refusal(exc: Any) -> tuple[int, Any, dict[str, Any]]:
    """(status, headers, whole JSON body) of an SDK APIStatusError."""
    resp = exc.response
    return resp.status_code, resp.headers, resp.json()


def fan_out_streams(clients: list[Any], t: str) -> list[str]:
    """One streamed chat per client, all released at once: "served", the refusal code of a
    429, or the name of any other SDK error (so an assertion shows it, never swallowed)."""
    import openai

    start = threading.Barrier(len(clients))

    def one(i: int) -> str:
        start.wait()
        try:
            stream = clients[i].chat.completions.create(
                **chat(f"{t} {i} #slow:20 #len:10", max_tokens=10), stream=True,
                stream_options={"include_usage": True},
            )
            for _ in stream:
                pass
            return "served"
        except openai.RateLimitError as e:
            return refusal(e)[1].get("x-seatbelt-refused", "?")
        except openai.APIError as e:
            return f"{type(e).__name__}: {getattr(e, 'status_code', '')} {e}"[:200]

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(one, range(len(clients))))

