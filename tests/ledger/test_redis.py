"""The Redis ledger beyond the shared suite: outages, secrets, fleets, memory, time.

Every test talks to a real redis-server (conftest.RedisServer). Tests that kill or
pause Redis start their own; the others use the session's server, one flushed DB each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from seatbelt.ledger import Cap, Ledger, LedgerUnavailable, Window, open_ledger, windows
from seatbelt.ledger.redis import ClockRefused, RedisLedger

from .conftest import T0, FakeClock, Ledgers, RedisServer, shared_redis

ROOT = Path(__file__).resolve().parents[2]
KEY, ACCOUNT = Cap("key:a", 1000, Window("rolling", 60)), Cap("account:r", 5000)
HANG = 10.0  # far above the ledger's 2 x 0.5 s deadline: only a hang reaches it


@pytest.fixture
def make_ledger(clock: FakeClock) -> Ledgers:
    """Redis only here: ledgers on one fresh store of the session's server."""
    return Ledgers(shared_redis().fresh_url(), clock)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server this test may kill, pause and restart."""
    server = RedisServer().start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


async def unavailable(call: object) -> str:
    """The LedgerUnavailable message of an awaited call (which must not hang)."""
    with pytest.raises(LedgerUnavailable) as e:
        await asyncio.wait_for(call, HANG)  # type: ignore[arg-type]
    return str(e.value)


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def keys_of(server: RedisServer, url: str) -> list[str]:
    db = int(url.rsplit("/", 1)[1])
    return sorted(server.command("KEYS", "*", db=db))


# -- the test clock cannot be switched on by accident -----------------------------------


async def test_client_clock_is_refused_outside_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    url = shared_redis().fresh_url()
    for value in (None, "0", "true", "yes", ""):
        if value is None:
            monkeypatch.delenv("SEATBELT_TEST_CLOCK")
        else:
            monkeypatch.setenv("SEATBELT_TEST_CLOCK", value)
        with pytest.raises(ClockRefused, match="SEATBELT_TEST_CLOCK=1"):
            open_ledger(url, clock=FakeClock())
        ledger = open_ledger(url)  # production: no clock, server time
        await ledger.open()
        try:
            with pytest.raises(ClockRefused):
                await ledger.reserve([KEY], 1, now=T0)
            with pytest.raises(ClockRefused):
                await ledger.snapshot([KEY], now=T0)
            assert (await ledger.reserve([KEY], 1)).granted
        finally:
            await ledger.close()


# -- server time decides window edges ---------------------------------------------------


async def test_server_time_dates_holds_and_buckets_not_the_proxy_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEATBELT_TEST_CLOCK")
    server = shared_redis()
    url = server.fresh_url()
    monkeypatch.setattr(time, "time", lambda: 4102444800.0)  # the proxy believes it is 2100
    ledger = open_ledger(url)
    await ledger.open()
    try:
        caps = [Cap("key:r", 10**6, Window("rolling", 60)), Cap("key:d", 10**6, Window("daily"))]
        before = server.command("TIME")
        r = await ledger.reserve(caps[:1], 10)
        r2 = await ledger.reserve(caps[1:], 10)
        after = server.command("TIME")
        lo = int(before[0]) + int(before[1]) / 1e6
        hi = int(after[0]) + int(after[1]) / 1e6
        created = {h.hold_id: h.created for h in await ledger.holds()}
        assert lo <= created[r.hold_id] <= hi and lo <= created[r2.hold_id] <= hi
        await ledger.settle(r.hold_id, 7, source="reported")  # type: ignore[arg-type]
        await ledger.settle(r2.hold_id, 9, source="reported")  # type: ignore[arg-type]
        db = int(url.rsplit("/", 1)[1])
        rolling = server.command("HGETALL", "{seatbelt}:spend:key:r", db=db)
        daily = server.command("HGETALL", "{seatbelt}:spend:key:d", db=db)
        assert rolling == {str(int(created[r.hold_id])): "7"}
        assert daily == {str(int(created[r2.hold_id]) // 86400 * 86400): "9"}
        assert [s.spent for s in await ledger.snapshot(caps)] == [7, 9]
    finally:
        await ledger.close()


async def test_leases_run_on_server_time_across_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real proxy process dies holding a budget: a live one reclaims it (lease 1 s)."""
    server = shared_redis()
    url = server.fresh_url()
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from seatbelt.ledger import Cap, Window, open_ledger

        async def main():
            ledger = open_ledger(sys.argv[1], lease_seconds=1)
            await ledger.open()
            r = await ledger.reserve([Cap("key:a", 1000), Cap("account:r", 5000)], 400)
            print(r.hold_id, flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "SEATBELT_TEST_CLOCK"}
    proc = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        hold_id = proc.stdout.readline().strip()
        assert hold_id, "child died before holding"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    monkeypatch.delenv("SEATBELT_TEST_CLOCK")  # production mode from here on
    live = open_ledger(url, lease_seconds=1)
    await live.open()
    try:
        deadline = time.monotonic() + 15
        while not await live.heartbeat():
            assert time.monotonic() < deadline, "the dead owner's hold was never reclaimed"
            await asyncio.sleep(0.1)
        states = await live.snapshot([Cap("key:a", 1000), Cap("account:r", 5000)])
        assert [(s.spent, s.reserved) for s in states] == [(400, 0), (400, 0)]
        assert await live.holds() == []
        late = await live.settle(hold_id, 150, source="reported")  # the real usage arrives
        assert (late.charged, late.already_final) == (150, False)
        assert (await live.snapshot([ACCOUNT]))[0].spent == 150
    finally:
        await live.close()


# -- atomic multi-cap reserve under real interleaving ------------------------------------


async def test_many_clients_never_pass_a_cap(make_ledger: Ledgers) -> None:
    """Two proxies' clients, 120 concurrent reserves on separate connections."""
    key1 = Cap("key:one", 700, Window("rolling", 3600))
    key2 = Cap("key:two", 10**6, Window("daily"))
    account = Cap("account:shared", 1000, Window("balance"))
    a, b = await make_ledger(), await make_ledger()
    jobs = [
        (a if i % 2 else b).reserve([key1 if i % 3 else key2, account], 50) for i in range(120)
    ]
    results = await asyncio.gather(*jobs)
    granted = [r for r in results if r.granted]
    assert len(granted) == 1000 // 50  # the account cap, filled exactly
    on_key1 = sum(1 for i, r in enumerate(results) if r.granted and i % 3)
    assert on_key1 * 50 <= 700
    states = await a.snapshot([key1, key2, account])
    assert states[2].reserved == 1000 and states[0].reserved == on_key1 * 50
    refused = [r for r in results if not r.granted]
    assert all(r.refusals and r.refusals[0].retry_after == 1 for r in refused)  # holds only
    await asyncio.gather(*(a.settle(r.hold_id, 10, source="reported") for r in granted))  # type: ignore[arg-type]
    assert [(s.spent, s.reserved) for s in await b.snapshot([account])] == [(200, 0)]


# -- fail closed, heal by itself --------------------------------------------------------


async def test_redis_killed_mid_run_fails_closed_then_heals(own_redis: RedisServer) -> None:
    clock = FakeClock()
    a = open_ledger(own_redis.url(), clock=clock)
    b = open_ledger(own_redis.url(), clock=clock)
    await a.open()
    await b.open()
    try:
        held = await a.reserve([KEY, ACCOUNT], 100)
        assert held.granted
        own_redis.kill()
        assert "connecting to 127.0.0.1" in await unavailable(a.reserve([KEY, ACCOUNT], 1))
        await unavailable(a.settle(held.hold_id, 50, source="reported"))  # type: ignore[arg-type]
        await unavailable(a.release("x"))
        await unavailable(a.snapshot([KEY]))
        await unavailable(a.holds())
        await unavailable(a.heartbeat())
        assert await a.ping() is False
        own_redis.start()  # same port, empty (no persistence)
        assert await a.ping() is True  # no reopen: the pool reconnects by itself
        # Redis lost everything. a's first write re-registers it, so b's reclaim leaves
        # a's new hold alone although a has not beaten since the restart.
        again = await a.reserve([KEY, ACCOUNT], 200)
        assert again.granted
        assert len(await b.heartbeat()) == 0
        assert [h.hold_id for h in await b.holds()] == [again.hold_id]
        assert len(await a.heartbeat()) == 0  # retries the lost settle: the hold is gone, no-op
        assert [(s.spent, s.reserved) for s in await b.snapshot([KEY, ACCOUNT])] == [
            (0, 200),
            (0, 200),
        ]
    finally:
        await a.close()
        await b.close()


async def test_slow_redis_times_out_and_nothing_stays_held(own_redis: RedisServer) -> None:
    """A paused Redis (SIGSTOP): calls give up at the deadline; once it answers again the
    next heartbeat settles what was unanswered, exactly once, and releases the reserve
    whose answer was lost (Redis may have executed it after all)."""
    clock = FakeClock()
    a = open_ledger(own_redis.url(), clock=clock, timeout=0.2)
    await a.open()
    assert own_redis.proc is not None
    try:
        held = await a.reserve([KEY, ACCOUNT], 100)
        await asyncio.gather(a.snapshot([KEY]), a.snapshot([KEY]))  # two pooled connections
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        # both are sent on an open connection, so Redis runs them once it wakes up
        assert "no answer within" in await unavailable(a.reserve([KEY, ACCOUNT], 300))
        lost = a.settle(held.hold_id, 60, source="reported")  # type: ignore[arg-type]
        assert "no answer within" in await unavailable(lost)
        assert await a.ping() is False
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert len(await a.heartbeat()) == 0
        states = await a.snapshot([KEY, ACCOUNT])
        assert [(s.spent, s.reserved) for s in states] == [(60, 0), (60, 0)]
        assert await a.holds() == []
        assert (await a.settle(held.hold_id, 60, source="reported")).already_final  # type: ignore[arg-type]
    finally:
        await a.close()


# -- secrets ------------------------------------------------------------------------------


async def test_password_in_url_works_and_is_never_printed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "pa@ss/w%rd-" + uuid.uuid4().hex[:8]
    quoted = secret.replace("%", "%25").replace("@", "%40").replace("/", "%2F")
    server = RedisServer(password=secret).start()
    caplog.set_level(logging.DEBUG)
    good = open_ledger(server.url(password=quoted), clock=FakeClock())
    wrong = open_ledger(server.url(password="nope" + quoted), clock=FakeClock())
    none = open_ledger(server.url(), clock=FakeClock())
    try:
        await good.open()
        assert (await good.reserve([KEY], 10)).granted
        messages = [await unavailable(wrong.open()), await unavailable(none.open())]
        server.kill()
        messages.append(await unavailable(good.reserve([KEY], 1)))
        await good.close()  # logs that the owner stays registered
        shown = messages + [repr(good), repr(wrong), caplog.text]
        for text in shown:
            assert secret not in text and quoted not in text and "nope" not in text
        assert "***@127.0.0.1" in messages[0] and "***@127.0.0.1" in repr(good)
        assert any("owner left registered" in r.getMessage() for r in caplog.records)
    finally:
        await wrong.close()
        await none.close()
        server.stop()


# -- fleet safety -------------------------------------------------------------------------


async def test_policy_digest_differs_between_live_proxies(
    make_ledger: Ledgers, clock: FakeClock
) -> None:
    a, b = await make_ledger(), await make_ledger()
    assert isinstance(a, RedisLedger) and isinstance(b, RedisLedger)
    one, two = "a1" * 32, "b2" * 32
    assert await a.check_policy_digest(one) is None
    assert await b.check_policy_digest(one) is None
    warning = await b.check_policy_digest(two)
    assert warning is not None and one[:12] in warning and two[:12] in warning
    assert "\n" not in warning and "1 other live proxy" in warning
    assert await a.check_policy_digest(two) is None  # a reloads the same policy
    assert await a.check_policy_digest(one) is not None
    clock.advance(31)  # b stops beating: a dead proxy's policy no longer matters
    assert len(await a.heartbeat()) == 0
    assert await a.check_policy_digest(one) is None
    await b.heartbeat()  # b is back; its beat restores its digest beside its lease
    assert await a.check_policy_digest(one) is not None


# -- one hash tag, bounded memory ---------------------------------------------------------


async def test_every_key_shares_one_hash_tag(clock: FakeClock) -> None:
    server = shared_redis()
    for namespace in ("seatbelt", "tenant-b"):
        url = server.fresh_url()
        kw = {} if namespace == "seatbelt" else {"namespace": namespace}
        a = open_ledger(url, clock=clock, **kw)
        b = open_ledger(url, clock=clock, **kw)
        await a.open()
        await b.open()
        try:
            await a.check_policy_digest("d" * 64)
            settled = await a.reserve([KEY, ACCOUNT], 10)
            await a.settle(settled.hold_id, 5, source="reported")  # type: ignore[arg-type]
            await a.reserve([Cap("key:b", None, Window("daily")), ACCOUNT], 10)
            clock.advance(40)
            assert len(await b.heartbeat()) == 1  # an orphan, charged whole
            await b.reserve([Cap("key:c", 100, Window("monthly"))], 10)
            names = keys_of(server, url)
            assert len(names) >= 12
            assert all(n.startswith("{" + namespace + "}:") for n in names), names
            assert len({key_slot(n.encode()) for n in names}) == 1
        finally:
            await a.close()
            await b.close()


async def test_memory_per_subject_is_bounded_by_time_buckets(clock: FakeClock) -> None:
    """Months of steady traffic leave a handful of buckets per subject, and pruning never
    drops spend that still counts (the memory ledger, which never prunes, agrees)."""
    server = shared_redis()
    url = server.fresh_url()
    db = int(url.rsplit("/", 1)[1])
    ledger = open_ledger(url, clock=clock)
    reference = open_ledger(f"memory://bounded-{uuid.uuid4().hex}", clock=clock)
    await ledger.open()
    await reference.open()
    caps = {
        "rolling": Cap("key:r", 10**9, Window("rolling", 120)),  # 2 s buckets
        "uncapped": Cap("key:u", None, Window("rolling", 60)),
        "daily": Cap("key:d", 10**9, Window("daily")),
        "monthly": Cap("key:m", 10**9, Window("monthly")),
    }
    try:
        for cap, steps, seconds in (
            (caps["rolling"], 600, 1),
            (caps["uncapped"], 400, 1),
            (caps["daily"], 90, 86400 / 3),
            (caps["monthly"], 60, 86400 * 11),
        ):
            for _ in range(steps):
                for x in (ledger, reference):
                    r = await x.reserve([cap], 3)
                    await x.settle(r.hold_id, 2, source="reported")  # type: ignore[arg-type]
                clock.advance(seconds)
            (mine,), (theirs,) = await ledger.snapshot([cap]), await reference.snapshot([cap])
            assert mine == theirs and mine.spent > 0
        length = {
            name: server.command("HLEN", f"{{seatbelt}}:spend:{cap.subject}", db=db)
            for name, cap in caps.items()
        }
        assert length["rolling"] <= 2 * 60 + 2 and length["uncapped"] <= 2 * 60 + 2
        assert length["daily"] <= 3 and length["monthly"] <= 3
        # nothing else lingers: no holds, no zero counters
        assert [n for n in keys_of(server, url) if ":hold:" in n or ":held:" in n] == []
    finally:
        await ledger.close()
        await reference.close()


# -- the Lua port of windows.py answers exactly like the Python ---------------------------

WINDOWS = st.one_of(
    st.just(Window("balance")),
    st.just(Window("daily")),
    st.just(Window("monthly")),
    st.integers(1, 10**6).map(lambda s: Window("rolling", s)),
)
MOMENTS = st.floats(0, 7.3e9, allow_nan=False).map(lambda t: round(t, 3))  # 1970..2200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    window=WINDOWS,
    ops=st.lists(
        st.tuples(MOMENTS, st.integers(0, 120), st.integers(0, 3), st.integers(0, 120)),
        min_size=1,
        max_size=6,
    ),
)
def test_lua_windows_match_windows_py(window: Window, ops: list[tuple]) -> None:
    """Same operations at the same (random, far apart) moments on memory and Redis."""
    asyncio.run(_differential(window, sorted(ops)))


async def _differential(window: Window, ops: list[tuple]) -> None:
    clock = FakeClock()
    ledgers: list[Ledger] = [
        open_ledger(f"memory://diff-{uuid.uuid4().hex}", clock=clock),
        # A generous deadline: this compares the Lua arithmetic, not fault handling, and a
        # loaded 2-core machine has missed the 0.5 s default (a flaky FakeClock run).
        open_ledger(shared_redis().fresh_url(), clock=clock, timeout=5.0),
    ]
    cap = Cap("key:x", 100, window)
    for ledger in ledgers:
        await ledger.open()
    try:
        for t, amount, times, actual in ops:
            clock.t = t
            for _ in range(times + 1):
                answers = [await x.reserve([cap], amount) for x in ledgers]
                refusals = [r.refusals for r in answers]
                assert refusals[0] == refusals[1], (t, window)
                if answers[0].granted:
                    for x, r in zip(ledgers, answers):
                        await x.settle(r.hold_id, actual, source="reported")  # type: ignore[arg-type]
            states = [(await x.snapshot([cap]))[0] for x in ledgers]
            assert states[0] == states[1], (t, window)
    finally:
        for ledger in ledgers:
            await ledger.close()


async def test_lua_calendar_at_every_month_edge(clock: FakeClock) -> None:
    """Daily/monthly edges for every month of 1999-2001 and 2099-2101 (leap 2000, no leap
    2100), just after a month starts and just before it ends: Retry-After as windows.py."""
    ledger = open_ledger(shared_redis().fresh_url(), clock=clock)
    await ledger.open()
    try:
        for year in (1999, 2000, 2001, 2099, 2100, 2101):
            for month in range(1, 13):
                start = utc(year, month, 1)
                end = utc(year + month // 12, month % 12 + 1, 1)
                for t in (start + 0.25, end - 0.75, end - 86400 + 3):
                    clock.t = t
                    for window in (Window("monthly"), Window("daily")):
                        cap = Cap(f"key:{window.kind}-{t}", 10, window)
                        r = await ledger.reserve([cap], 10)
                        await ledger.settle(r.hold_id, 10, source="reported")  # type: ignore[arg-type]
                        (full,) = (await ledger.reserve([cap], 1)).refusals
                        (huge,) = (await ledger.reserve([cap], 11)).refusals
                        assert (full.retry_after, huge.retry_after) == (
                            windows.seconds_until_reset(window, t),
                            windows.window_length(window, t),
                        ), (window, datetime.fromtimestamp(t, timezone.utc))
    finally:
        await ledger.close()


def test_bench_reports_redis_pairs(tmp_path: Path) -> None:
    """The benchmark's Redis backend runs and measures (figures are not asserted)."""
    from bench.ledger_bench import run

    result = run(["redis"], pairs=50, redis_url=shared_redis().fresh_url())
    assert set(result["redis"]) >= {"pairs", "pairs_per_s", "p50_us", "p99_us", "max_us"}
    assert result["redis"]["pairs"] == 50
    assert json.dumps(result)
