"""The runtime's pieces against real ledgers (memory, SQLite file, redis-server):
reclaimed holds are audited and counted, the retry queue is one, budget gauges are read at
scrape time from the metrics thread through the loop; and SEATBELT_TEST_LEDGER_TIMING cannot
weaken a proxy silently or by a typo."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from seatbelt.config.policy import load_policy
from seatbelt.ledger import Cap, LedgerUnavailable, open_ledger
from seatbelt.ledger.retry import Unfinished
from seatbelt.lifecycle.background import BEATS_EVERY
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime, ledger_timing
from tests.ledger.conftest import BACKENDS, FakeClock, RedisServer, url_for


@pytest.fixture(autouse=True)
def _test_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEATBELT_TEST_CLOCK", "1")  # the Redis ledger honours a FakeClock


@pytest.fixture(scope="module", autouse=True)
def _redis() -> Iterator[None]:
    from tests.ledger import conftest

    yield
    while conftest._SHARED:
        conftest._SHARED.pop().stop()


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


CAPS = [Cap("key:k1", 1000), Cap("account:team", None)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reclaimed_holds_are_audited_and_counted(backend: str, tmp_path: Path) -> None:
    """Before: Redis's orphans were never audited (the runtime probed `last_reclaimed`, which
    RedisLedger never set) and no backend's orphans reached the metrics."""
    url, clock = url_for(backend, tmp_path), FakeClock()
    audit = tmp_path / "audit.jsonl"
    met = Metrics(CollectorRegistry())

    async def go() -> list[str]:
        dead = open_ledger(url, clock=clock, lease_seconds=10)
        await dead.open()
        first = (await dead.reserve(CAPS, 300)).hold_id
        clock.advance(60)  # the dead owner's lease lapsed
        rt = Runtime(metrics=met)
        rt.audit.open(str(audit))
        rt.ledger = open_ledger(url, clock=clock, lease_seconds=10)
        await rt.open_ledger()  # open() reclaims the first hold
        second = (await dead.reserve(CAPS, 200)).hold_id
        clock.advance(60)
        await rt.background.tick(BEATS_EVERY)  # a heartbeat reclaims the second
        rt.audit.close()
        await rt.ledger.close()
        await dead.close()
        return [str(first), str(second)]

    ids = asyncio.run(go())
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [(a["flow_id"], a["key"], a["account"], a["usage_source"], a["reserved"])
            for a in lines] == [(f"hold:{ids[0]}", "k1", "team", "orphaned", 300),
                                (f"hold:{ids[1]}", "k1", "team", "orphaned", 200)]
    got = scrape(met.registry)
    orphaned = frozenset({"usage_source": "orphaned", "overrun": "false"}.items())
    assert got[("seatbelt_settlements_total", orphaned)] == 2
    who = frozenset({"account": "team", "key": "k1"}.items())
    assert got[("seatbelt_spend_tokens_total", who)] == 500
    assert got[("seatbelt_requests_total", who | {("outcome", "aborted")})] == 2


def test_one_retry_queue_per_hold_whoever_saw_the_fault(tmp_path: Path) -> None:
    """Before: Redis queued a lost settle in its own `_pending` and settlement queued it again
    in `runtime.unfinished`: two retries of one hold. Now one queue, one entry per hold."""
    server = RedisServer().start()
    url = server.url()

    async def go() -> None:
        ledger = open_ledger(url, timeout=0.2)
        await ledger.open()
        hold = (await ledger.reserve(CAPS, 300)).hold_id
        assert hold is not None
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # a Redis that does not answer in time
        with pytest.raises(LedgerUnavailable):
            await ledger.settle(hold, 120, source="reported")
        rt = Runtime(metrics=Metrics(CollectorRegistry()))
        rt.ledger = ledger
        rt.defer_finish(ledger, hold, "settle", 120, "reported")  # what settlement does
        assert rt.unfinished == [Unfinished(hold, "settle", 120, "reported")]
        server.proc.send_signal(signal.SIGCONT)
        await ledger.heartbeat()  # retries the queue first
        assert rt.unfinished == []
        assert [(s.spent, s.reserved) for s in await ledger.snapshot(CAPS)] == [(120, 0)] * 2
        await ledger.close()

    try:
        asyncio.run(go())
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


POLICY = """\
version: 1
accounts:
  team: {cap: 5000}
keys:
  - id: k1
    account: team
    credential_sha256: %s
    cap: 1000
""" % ("ab" * 32)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_budget_gauges_are_exact_at_scrape_time_from_the_metrics_thread(
    backend: str, tmp_path: Path
) -> None:
    """A scrape in another thread right after a reservation shows it (before: the gauges
    were set by the background loop about a second later). The scrape hands the read to the
    loop: the SQLite connection is never used from the scrape's thread (sqlite3 would raise)."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    policy = load_policy(str(tmp_path / "policy.yaml"))
    met = Metrics(CollectorRegistry())
    k1 = frozenset({"account": "team", "key": "k1"}.items())
    team = frozenset({"account": "team", "key": "*"}.items())

    async def go() -> None:
        rt = Runtime(metrics=met)
        rt.policy = policy
        rt.ledger = open_ledger(url_for(backend, tmp_path))
        await rt.open_ledger()
        rt.ensure_background()
        got = await asyncio.to_thread(scrape, met.registry)
        assert got[("seatbelt_cap_tokens", k1)] == 1000
        assert got[("seatbelt_window_spend_tokens", k1)] == 0
        hold = (await rt.ledger.reserve(policy.caps_for(policy.keys[0]), 300)).hold_id
        rt.mark_budgets_dirty()
        got = await asyncio.to_thread(scrape, met.registry)
        assert got[("seatbelt_reserved_tokens", k1)] == 300
        assert got[("seatbelt_remaining_tokens", team)] == 4700
        await rt.ledger.settle(str(hold), 120, source="reported")
        rt.mark_budgets_dirty()
        got = await asyncio.to_thread(scrape, met.registry)
        assert (got[("seatbelt_window_spend_tokens", k1)],
                got[("seatbelt_reserved_tokens", k1)]) == (120, 0)
        rt.background.cancel()
        await rt.ledger.close()

    asyncio.run(go())


# --- SEATBELT_TEST_LEDGER_TIMING ---------------------------------------------------------


def test_an_unset_test_ledger_timing_means_production_timing() -> None:
    assert ledger_timing(None) == {} and ledger_timing("") == {}


def test_the_test_ledger_timing_is_parsed() -> None:
    assert ledger_timing("lease=1,max_hold=4,heartbeat=0.2") == {
        "lease_seconds": 1.0, "max_hold_seconds": 4.0, "heartbeat_seconds": 0.2}


@pytest.mark.parametrize("bad", ["lease", "lease=x", "lease=-1", "lease=0", "leese=3",
                                 "lease=1e9", "lease=1,heartbeat=0.5", "heartbeat=20"])
def test_anything_odd_stops_start_up(bad: str) -> None:
    with pytest.raises(ValueError, match="SEATBELT_TEST_LEDGER_TIMING"):
        ledger_timing(bad)
