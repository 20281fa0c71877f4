"""A proxy killed mid-stream, restarted on the same ledger: the hold it left is charged
whole as `orphaned`, written to the audit log and counted in the restarted proxy's metrics
(seatbelt_settlements_total{usage_source="orphaned"}, spend), so the
SeatbeltOrphanedSettlements alert (deploy/prometheus/alerts.yml) can fire.

SQLite: no test timing at all. The dead proxy's liveness lock is free, so the restart
reclaims the hold before it reports ready (before: 30 s later, when its lease lapsed).
Redis keeps leases, so that proxy runs with a 1 s lease (SEATBELT_TEST_LEDGER_TIMING).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from tests.e2e.conftest import Key, Proxy, chat, openai_client, policy_text, tag
from tests.e2e.test_crash import charged, open_stream
from tests.e2e.test_redis_fleet import RedisProxy
from tests.ledger.conftest import RedisServer
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

SQLITE_KEY = Key("orphan-sqlite", cap=1_000_000)
REDIS_KEY = Key("orphan-redis", cap=1_000_000)
REDIS_TIMING = {"SEATBELT_TEST_LEDGER_TIMING": "lease=1,max_hold=60,heartbeat=0.2"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def start(proxy: Proxy, env: dict[str, str]) -> Proxy:
    with mock.patch.dict(os.environ, env):
        return proxy.start()


def kill_mid_stream(proxy: Proxy, key: Key, t: str) -> None:
    """SIGKILL while a stream is open: its hold stays behind in the ledger."""
    assert proxy.proc is not None
    with open_stream(proxy, key, f"{t} killed #slow:200 #len:100", frames=3) as rest:
        proxy.kill()
        proxy.reap()
        with pytest.raises(Exception):  # noqa: B017 - any transport error will do
            for _ in rest:
                pass


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_sigkill_then_restart_audits_and_counts_the_orphan(
    backend: str, tmp_path_factory: pytest.TempPathFactory, standin: StandIn,
    redis_server: RedisServer,
) -> None:
    key = SQLITE_KEY if backend == "sqlite" else REDIS_KEY
    workdir: Path = tmp_path_factory.mktemp(f"orphan-{backend}")
    env: dict[str, str] = {}
    if backend == "sqlite":
        proxy = Proxy(workdir, policy_text([key]), upstream=standin.url)
    else:
        proxy = RedisProxy(workdir, policy_text([key]), redis_server.fresh_url(),
                           upstream=standin.url)
        env = REDIS_TIMING
    t = tag()
    try:
        start(proxy, env)
        openai_client(proxy, key).chat.completions.create(**chat(f"{t} first #len:20",
                                                                 max_tokens=20))
        before = charged(proxy.wait_audit(key.id, 1))
        kill_mid_stream(proxy, key, t)
        held = proxy.row(key.id)
        assert (held["spent"], held["reserved"] > 0) == (before, True), held

        start(proxy, env)
        if backend == "sqlite":  # reclaimed by open(), before /readyz said ready: no wait
            lines = proxy.audit_for(key.id)
        else:  # the restarted proxy's heartbeat reclaims it once the 1 s lease lapsed
            lines = proxy.wait_audit(key.id, 2)
        assert len(lines) == 2, lines
        orphan = lines[-1]
        assert (orphan["usage_source"], orphan["reserved"], orphan["outcome"]) == (
            "orphaned", held["reserved"], "aborted"), orphan
        row = proxy.row(key.id)
        assert (row["spent"], row["reserved"]) == (before + held["reserved"], 0), row
        assert row["spent"] == charged(lines), "audit and ledger disagree after the crash"

        m = proxy.metrics()
        assert m.value("seatbelt_settlements_total", usage_source="orphaned") == 1
        assert m.value("seatbelt_spend_tokens_total", account="team",
                       key=key.id) == held["reserved"]
        assert m.value("seatbelt_requests_total", account="team", key=key.id,
                       outcome="aborted") == 1
        assert m.value("seatbelt_window_spend_tokens", account="team", key=key.id) == row["spent"]
        assert m.value("seatbelt_reserved_tokens", account="team", key=key.id) == 0
    finally:
        proxy.stop()


