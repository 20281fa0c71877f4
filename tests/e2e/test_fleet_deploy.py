"""deploy/compose.yaml's topology as processes (no container image can be pulled here).

Two real mitmdump proxies share one redis-server started with the compose file's own
arguments (AOF on); a real Prometheus scrapes both with deploy/prometheus/alerts.yml loaded.
The fleet's figures must add up: per-proxy counters sum to the spend, every proxy reports the
one shared budget, a refusal on either proxy counts once, and the spend survives a Redis
crash (kill -9) because of the AOF.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
import yaml

from tests.deploy.test_rules import ALERTS, Prometheus, binary
from tests.e2e.conftest import (
    REPO,
    Key,
    chat,
    free_port,
    openai_client,
    policy_text,
    refusal,
    tag,
    wait_for,
)
from tests.e2e.test_redis_fleet import RedisProxy
from tests.standin import StandIn

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLEET = Key("deploy-fleet", cap=400)
COMPOSE = REPO / "deploy" / "compose.yaml"


class AofRedis:
    """redis-server with the arguments of compose.yaml's `redis` service, on loopback."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        args = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]["command"][1:]
        self.args = [str(a) for a in args]
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="seatbelt-aof-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arguments(self) -> list[str]:
        """compose's arguments on loopback (tests/deploy/test_image.py runs them in a container)."""
        return [*self.args, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", ""]

    def command(self) -> list[str]:
        return [str(self.binary), *self.arguments()]

    def start(self) -> AofRedis:
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_for("redis-server to answer", lambda: self._cli("PING") == "PONG")
        return self

    def _cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip()

    def crash(self) -> None:
        assert self.proc is not None
        time.sleep(1.5)  # appendfsync everysec: what an operator accepts losing is <= 1 s
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    binary("prometheus")
    standin = StandIn().start()
    redis = AofRedis()
    proxies = [RedisProxy(tmp_path_factory.mktemp(f"deploy{i}"), policy_text([FLEET]),
                          redis.url(), upstream=standin.url) for i in range(2)]
    prom = Prometheus(tmp_path_factory.mktemp("prom"),
                      [f"127.0.0.1:{p.metrics_port}" for p in proxies], [ALERTS])
    try:
        redis.start()
        for p in proxies:
            p.start()
        prom.start()
        yield standin, redis, proxies, prom
    finally:
        prom.stop()
        for p in proxies:
            p.stop()
        redis.stop()
        standin.stop()


def _scalar(prom: Prometheus, expr: str) -> float | None:
    r = prom.query(expr)
    return float(r[0]["value"][1]) if len(r) == 1 else None


def test_fleet_figures_add_up_in_prometheus_and_survive_a_redis_crash(fleet: Any) -> None:
    standin, redis, (a, b), prom = fleet
    t = tag()
    for p in (a, b, a):
        openai_client(p, FLEET).chat.completions.create(**chat(f"{t} #len:40", max_tokens=40))
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(b, FLEET).chat.completions.create(**chat(f"{t} more", max_tokens=300))
    assert refusal(info.value)[1]["x-seatbelt-refused"] == "insufficient_quota"
    spend = sum(r.spend for r in standin.received(t))
    assert len(standin.received(t)) == 3 and 0 < spend <= FLEET.cap

    sel = f'{{key="{FLEET.id}"}}'
    wait_for("Prometheus to sum the fleet's spend",
             lambda: _scalar(prom, f"sum(seatbelt_spend_tokens_total{sel})") == spend, 30)
    wait_for("both proxies to report the shared budget",
             lambda: prom.query(f"seatbelt_window_spend_tokens{sel} == {spend}"), 30)
    assert len(prom.query(f"seatbelt_window_spend_tokens{sel}")) == 2
    wait_for("one refusal, fleet-wide", lambda: _scalar(
        prom, f'sum(seatbelt_requests_total{{key="{FLEET.id}",outcome="refused_quota"}})') == 1)
    assert _scalar(prom, 'count(up{job="seatbelt"} == 1)') == 2
    assert prom.query('ALERTS{alertname="SeatbeltLedgerDown"}') == []

    redis.crash()
    redis.start()
    wait_for("the AOF-restored spend in the report",
             lambda: a.row(FLEET.id)["spent"] == spend, 30)
    assert any(redis.dir.glob("appendonly*")), "no AOF written"
