"""deploy/Dockerfile built and run for real with Debian's podman, on a base image made here.

No container registry is reachable from this machine, so `python:3.12-slim` cannot be pulled:
the base is Debian bookworm made by mmdebstrap from the Debian mirror (python3.11, so the image
runs mitmproxy 11.0.2) holding this machine's CA certificates (pip inside the build reaches
PyPI through them), `podman import`ed and kept in podman's store under a tag naming its recipe,
so a machine makes it once; it carries Debian's redis-server and prometheus too. Compose's
topology then runs as containers on the host network on loopback ports: the seatbelt image in
front of the stand-in, its ledger redis-server with compose.yaml's arguments, scraped by
Prometheus with the alert rules loaded (Grafana: in no registry reachable here).

Two quirks of this machine, both handled by flags rather than host changes: crun refuses its
mixed cgroup v1/v2 mounts ("cgroups in hybrid mode not supported"), so runc runs the
containers; and root here lacks CAP_SYS_RESOURCE, so podman's default rlimits (nofile
1048576) cannot be set and every container gets limits no higher than this process's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

from tests.deploy.test_rules import ALERTS, Prometheus
from tests.e2e.conftest import (
    REPO,
    Key,
    chat,
    free_port,
    http_get,
    openai_client,
    policy_text,
    refusal,
    tag,
    wait_for,
)
from tests.e2e.test_fleet_deploy import AofRedis
from tests.standin import StandIn

pytestmark = [pytest.mark.slow]

MIRROR = "http://deb.debian.org/debian"  # the mirror /etc/apt/sources.list.d names here
# redis-server and prometheus too: one mmdebstrap run is the base of all three containers.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd", "redis-server",
                 "prometheus")
CA_DIR = Path("/usr/local/share/ca-certificates")
IMAGE = "localhost/seatbelt:test"
UID = 10001  # deploy/Dockerfile's USER
KEY = Key("image", cap=500)


def tool(name: str) -> str:
    """A host binary the image test needs: a failure under CI (.ci/run installs it), else a skip."""
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        if (p := Path(d) / name).is_file() and os.access(p, os.X_OK):
            return str(p)
    msg = f"{name} not found (Debian: apt-get install podman runc mmdebstrap)"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{msg}; .ci/run installs it, so CI must have it")
    pytest.skip(msg)


class Podman:
    """The podman CLI with this machine's runtime and rlimit flags (module docstring)."""

    def __init__(self) -> None:
        self.cmd = [tool("podman"), "--runtime", tool("runc")]
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 8192)
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
        self.limits = ["--ulimit", f"nofile={nofile}:{nofile}",
                       "--ulimit", f"nproc={nproc}:{nproc}"]

    def run_line(self, name: str, image: str, *shared: Path) -> list[str]:
        """`podman run` in the foreground on the host network, `shared` mounted at their own
        paths: a Popen of it stops the container on SIGTERM (podman proxies the signal)."""
        mounts = [a for d in shared for a in ("-v", f"{d}:{d}")]
        return [*self.cmd, "run", "--rm", "--name", name, "--network", "host", *self.limits,
                *mounts, image]

    def __call__(self, *args: str, timeout: float = 60, check: bool = True,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*self.cmd, *args], capture_output=True, text=True,
                             timeout=timeout, **kw)
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:2])} exited {out.returncode}:\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out


def base_recipe() -> list[str]:
    """The mmdebstrap arguments of the base (output last); the tag hashes them and the CAs."""
    return ["--mode=root", "--variant=essential", "--dpkgopt=force-unsafe-io",
            "--include=" + ",".join(BASE_PACKAGES),
            f"--customize-hook=copy-in {CA_DIR}/. {CA_DIR}",
            '--customize-hook=chroot "$1" update-ca-certificates', "bookworm"]


def base_image(podman: Podman) -> str:
    """localhost/seatbelt-debian-base:bookworm-HASH, made once per machine and recipe."""
    digest = hashlib.sha256(json.dumps(base_recipe()).encode())
    for ca in sorted(CA_DIR.glob("*.crt")):
        digest.update(ca.read_bytes())
    name = f"localhost/seatbelt-debian-base:bookworm-{digest.hexdigest()[:12]}"
    if podman("image", "exists", name, check=False).returncode == 0:
        return name
    with tempfile.TemporaryDirectory(prefix="seatbelt-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        made = subprocess.run([tool("mmdebstrap"), *base_recipe(), str(tar), MIRROR],
                              capture_output=True, text=True, timeout=900)
        assert made.returncode == 0, f"mmdebstrap failed:\n{made.stderr[-3000:]}"
        podman("import", str(tar), name, timeout=300)
    return name


def build_image(podman: Podman, base: str) -> str:
    """deploy/Dockerfile on the local base; podman's layer cache keeps a rebuild short."""
    podman("build", "--format", "docker", *podman.limits, "--build-arg", f"BASE={base}",
           "-f", "deploy/Dockerfile", "-t", IMAGE, ".", cwd=REPO, timeout=900)
    return IMAGE


class RedisContainer(AofRedis):
    """compose's redis service: Debian's redis-server in a container of the base image."""

    def __init__(self, podman: Podman, image: str) -> None:
        super().__init__()
        self.podman, self.image = podman, image
        self.name = f"seatbelt-test-redis-{os.getpid()}"

    def command(self) -> list[str]:
        return [*self.podman.run_line(self.name, self.image, self.dir), "redis-server",
                *self.arguments()]

    def crash(self) -> None:
        """kill -9 of the container, not of the podman client that started it."""
        time.sleep(1.5)  # appendfsync everysec, as AofRedis.crash
        self.podman("kill", "--signal", "KILL", self.name)
        assert self.proc is not None
        self.proc.wait(30)
        self.podman("rm", "-f", self.name, check=False)

    def stop(self) -> None:
        super().stop()
        self.podman("rm", "-f", self.name, check=False)


class PrometheusContainer(Prometheus):
    """compose's prometheus service: Debian's Prometheus in a container, the rules mounted."""

    def __init__(self, podman: Podman, image: str, workdir: Path, targets: list[str]) -> None:
        super().__init__(workdir, targets, [ALERTS])
        self.podman, self.image = podman, image
        self.name = f"seatbelt-test-prometheus-{os.getpid()}"

    def command(self) -> list[str]:
        line = self.podman.run_line(self.name, self.image, self.workdir, ALERTS.parent)
        return [*line, "prometheus", *self.arguments()]

    def stop(self) -> None:
        super().stop()
        self.podman("rm", "-f", self.name, check=False)


class Container:
    """The seatbelt image on the host network, its state directory and policy on the host."""

    def __init__(self, podman: Podman, workdir: Path, upstream: str, ledger: str) -> None:
        self.podman = podman
        self.name = f"seatbelt-test-{os.getpid()}"
        self.state = workdir / "state"
        self.state.mkdir()
        os.chown(self.state, UID, UID)  # the image's user writes its audit and confdir here
        self.policy = workdir / "policy.yaml"
        self.policy.write_text(policy_text([KEY]))
        self.port, self.metrics_port = free_port(), free_port()
        self.env = {"SEATBELT_MODE": f"reverse:{upstream}", "SEATBELT_LEDGER": ledger,
                    "SEATBELT_LISTEN": f"127.0.0.1:{self.port}",
                    "SEATBELT_METRICS": f"127.0.0.1:{self.metrics_port}"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self, image: str) -> Container:
        env = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        self.podman("run", "-d", "--name", self.name, "--network", "host", *self.podman.limits,
                    *env, "-v", f"{self.policy}:/etc/seatbelt/policy.yaml:ro",
                    "-v", f"{self.state}:/var/lib/seatbelt", image)
        wait_for("the container's /readyz", self._ready, 60)
        return self

    def _ready(self) -> bool | None:
        state = self.podman("inspect", "--format", "{{.State.Status}}", self.name).stdout
        assert state.strip() == "running", f"container {state.strip()}:\n{self.logs()}"
        return http_get(self.metrics_url + "/readyz", 1.0)[0] == 200 or None

    def logs(self) -> str:
        return self.podman("logs", self.name, check=False).stderr[-4000:]

    def audit(self) -> list[dict[str, Any]]:
        path = self.state / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self) -> None:
        self.podman("rm", "-f", "-t", "5", self.name, check=False)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    podman = Podman()
    base = base_image(podman)
    image = build_image(podman, base)
    standin = StandIn().start()
    redis = RedisContainer(podman, base)
    box = Container(podman, tmp_path_factory.mktemp("image"), standin.url, redis.url())
    prom = PrometheusContainer(podman, base, tmp_path_factory.mktemp("prom"),
                               [f"127.0.0.1:{box.metrics_port}"])
    try:
        redis.start()
        box.start(image)
        prom.start()
        yield podman, box, standin, redis, prom
    finally:
        prom.stop()
        box.stop()
        redis.stop()
        standin.stop()


def test_container_runs_mitmproxy_11_as_uid_10001_and_is_healthy(deployed: Any) -> None:
    podman, box, *_ = deployed
    pid = podman("inspect", "--format", "{{.State.Pid}}", box.name).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
    assert uids == [str(UID)] * 4, f"mitmdump runs as {uids}"
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1].endswith(b"mitmdump")
    versions = podman("exec", box.name, "python", "-c",
                      "import sys, mitmproxy.version as v; print(sys.version_info[:2], v.VERSION)")
    assert versions.stdout.split() == ["(3,", "11)", "11.0.2"], versions.stdout
    health = podman("healthcheck", "run", box.name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr + box.logs()
    state = podman("inspect", "--format", "{{.State.Health.Status}}", box.name).stdout
    assert state.strip() == "healthy"


def test_request_through_the_container_is_metered_on_redis_and_scraped(deployed: Any) -> None:
    _, box, standin, redis, prom = deployed
    t = tag()
    openai_client(box.url + "/v1", KEY).chat.completions.create(**chat(f"{t} #len:30",
                                                                       max_tokens=40))
    (got,) = standin.received(t)
    assert 0 < got.spend <= KEY.cap
    line = wait_for("the container's audit line",
                    lambda: next((a for a in box.audit() if a.get("key") == KEY.id), None))
    assert (line["outcome"], line["prompt_tokens"] + line["completion_tokens"]) == (
        "served", got.spend), line
    assert KEY.credential not in (box.state / "audit.jsonl").read_text()
    row = ledger_row(redis.url(), box.policy)
    assert row["spent"] == got.spend, row
    sel = f'{{key="{KEY.id}"}}'
    wait_for("Prometheus to scrape the container's spend", lambda: prom.query(
        f"seatbelt_spend_tokens_total{sel} == {got.spend}"), 30)
    status, rules = http_get(prom.url + "/api/v1/rules")
    assert status == 200 and json.loads(rules)["data"]["groups"], "alert rules not loaded"
    assert prom.query('ALERTS{alertname=~"SeatbeltLedgerDown|SeatbeltTargetDown"}') == []


def test_unknown_key_is_refused_by_the_container_and_never_forwarded(deployed: Any) -> None:
    _, box, standin, *_ = deployed
    t = tag()
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(box.url + "/v1", "sk-not-in-the-policy").chat.completions.create(
            **chat(f"{t} hello", max_tokens=10))
    assert info.value.status_code == 401, refusal(info.value)
    assert standin.received(t) == []


def ledger_row(ledger: str, policy: Path) -> dict[str, Any]:
    """The host's `seatbelt.cli.report` reading the Redis ledger the container wrote."""
    out = subprocess.run([sys.executable, "-m", "seatbelt.cli.report", "--ledger", ledger,
                          "--policy", str(policy), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = [r for r in json.loads(out.stdout) if r["key"] == KEY.id]
    return dict(row)


def test_spend_survives_a_kill_of_the_redis_container(deployed: Any) -> None:
    podman, box, standin, redis, _ = deployed
    t = tag()
    openai_client(box.url + "/v1", KEY).chat.completions.create(**chat(f"{t} #len:20",
                                                                       max_tokens=30))
    spent = ledger_row(redis.url(), box.policy)["spent"]
    assert spent >= standin.received(t)[0].spend > 0
    running = podman("ps", "--format", "{{.Names}}").stdout.split()
    assert redis.name in running, running
    redis.crash()
    redis.start()
    assert ledger_row(redis.url(), box.policy)["spent"] == spent
    assert any(redis.dir.glob("appendonly*")), "no AOF written by the container"
