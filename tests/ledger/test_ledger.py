"""The ledger contract, run unchanged on every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seatbelt.ledger import (
    Cap,
    Ledger,
    LedgerUnavailable,
    LedgerURLError,
    Settlement,
    Window,
    open_ledger,
    parse_ledger_url,
)

from .conftest import BACKENDS, T0, FakeClock, MakeLedger, url_for

BAL = Window("balance")
DAILY = Window("daily")
MONTHLY = Window("monthly")


def rolling(seconds: int) -> Window:
    return Window("rolling", seconds)


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


async def spend(ledger: Ledger, caps: list[Cap], tokens: int) -> None:
    """Reserve and settle `tokens` now."""
    r = await ledger.reserve(caps, tokens)
    assert r.granted, r
    await ledger.settle(r.hold_id, tokens, source="reported")  # type: ignore[arg-type]


async def state(ledger: Ledger, cap: Cap) -> tuple[int, int]:
    (s,) = await ledger.snapshot([cap])
    return s.spent, s.reserved


# -- grant, snapshot, holds ----------------------------------------------------------


async def test_grant_holds_on_every_cap_and_snapshot_shows_it(ledger: Ledger) -> None:
    key, acct = Cap("key:a", 1000, rolling(60)), Cap("account:r", 5000)
    r = await ledger.reserve([key, acct], 300)
    assert r.granted and r.amount == 300 and r.refusals == ()
    states = await ledger.snapshot([key, acct])
    assert [(s.subject, s.spent, s.reserved, s.remaining) for s in states] == [
        ("key:a", 0, 300, 700),
        ("account:r", 0, 300, 4700),
    ]
    (hold,) = await ledger.holds()
    assert (hold.hold_id, hold.owner, hold.amount, hold.subjects) == (
        r.hold_id,
        ledger.owner,
        300,
        ("key:a", "account:r"),
    )
    assert hold.created == T0
    assert await ledger.ping()


async def test_reservation_states_match_a_snapshot_taken_right_after(ledger: Ledger) -> None:
    """Budget headers trust the states a reservation brings back instead of a second read:
    where a backend fills them, they must be exactly what a snapshot would say."""
    key, acct = Cap("key:a", 1000, rolling(60)), Cap("account:r", 5000)
    await spend(ledger, [key, acct], 120)
    await ledger.reserve([key, acct], 50)  # another request's live hold
    r = await ledger.reserve([key, acct], 300)
    assert r.granted
    if r.states:  # optional: a backend may leave it empty (the gate then takes a snapshot)
        assert list(r.states) == await ledger.snapshot([key, acct])
        assert [s.remaining for s in r.states] == [1000 - 120 - 350, 5000 - 120 - 350]


async def test_settle_moves_hold_to_spend(ledger: Ledger) -> None:
    key = Cap("key:a", 1000)
    r = await ledger.reserve([key], 300)
    assert await ledger.settle(r.hold_id, 120, source="reported") == Settlement(120, False)
    assert await state(ledger, key) == (120, 0)
    assert await ledger.holds() == []


async def test_finish_soon_settles_and_releases_then_answers_once(ledger: Ledger) -> None:
    """The response hook's way: handed over, answered once the ledger has it."""
    key = Cap("key:a", 1000)
    a = await ledger.reserve([key], 300)
    b = await ledger.reserve([key], 200)
    assert a.hold_id is not None and b.hold_id is not None
    got: list[tuple[str, object, object]] = []
    ledger.finish_soon(a.hold_id, "settle", 350, source="reported",
                       done=lambda s, e: got.append(("a", s, e)))
    ledger.finish_soon(b.hold_id, "release", 0, source="none",
                       done=lambda s, e: got.append(("b", s, e)))
    await ledger.drain()
    assert sorted(got, key=lambda g: g[0]) == [("a", Settlement(350, True), None),
                                               ("b", None, None)]
    assert await state(ledger, key) == (350, 0)
    ledger.finish_soon(a.hold_id, "settle", 350, source="reported",
                       done=lambda s, e: got.append(("again", s, e)))
    await ledger.drain()
    assert got[-1] == ("again", Settlement(0, False, already_final=True), None)
    assert await state(ledger, key) == (350, 0)  # a second finish charges nothing


# -- balance -------------------------------------------------------------------------


async def test_balance_quota_when_settled_spend_leaves_no_room(ledger: Ledger) -> None:
    cap = Cap("key:a", 100, BAL)
    await spend(ledger, [cap], 80)
    r = await ledger.reserve([cap], 30)
    assert not r.granted
    (ref,) = r.refusals
    assert (ref.reason, ref.retry_after, ref.exceeds_cap) == ("quota", None, False)
    assert (ref.subject, ref.limit, ref.spent, ref.reserved, ref.requested) == (
        "key:a",
        100,
        80,
        0,
        30,
    )
    assert (await ledger.reserve([cap], 20)).granted  # exactly fills the cap


async def test_balance_reservation_larger_than_cap(ledger: Ledger) -> None:
    (ref,) = (await ledger.reserve([Cap("key:a", 100)], 101)).refusals
    assert (ref.reason, ref.retry_after, ref.exceeds_cap) == ("quota", None, True)


async def test_balance_full_only_because_of_holds_is_rate_retry_1(ledger: Ledger) -> None:
    cap = Cap("key:a", 100, BAL)
    await spend(ledger, [cap], 10)
    held = await ledger.reserve([cap], 80)
    (ref,) = (await ledger.reserve([cap], 30)).refusals
    assert (ref.reason, ref.retry_after, ref.spent, ref.reserved) == ("rate", 1, 10, 80)
    await ledger.release(held.hold_id)  # type: ignore[arg-type]
    assert (await ledger.reserve([cap], 30)).granted


# -- rolling -------------------------------------------------------------------------


async def test_rolling_retry_after_until_enough_spend_leaves(
    ledger: Ledger, clock: FakeClock
) -> None:
    cap = Cap("key:a", 100, rolling(60))  # buckets of 1 s
    await spend(ledger, [cap], 30)  # bucket T0, counts while now < T0 + 61
    clock.advance(10)
    await spend(ledger, [cap], 30)  # bucket T0+10, counts while now < T0 + 71
    clock.advance(10)  # now T0 + 20, spent 60
    (ref,) = (await ledger.reserve([cap], 70)).refusals  # needs 30: the first bucket
    assert (ref.reason, ref.retry_after, ref.exceeds_cap, ref.spent) == ("rate", 41, False, 60)
    (ref,) = (await ledger.reserve([cap], 90)).refusals  # needs 50: both buckets
    assert ref.retry_after == 51
    clock.advance(40)  # T0 + 60: the first bucket still counts
    assert (await ledger.reserve([cap], 70)).refusals[0].retry_after == 1
    clock.advance(1)  # T0 + 61: it left
    assert await state(ledger, cap) == (30, 0)
    assert (await ledger.reserve([cap], 70)).granted


async def test_rolling_wide_buckets(ledger: Ledger, clock: FakeClock) -> None:
    cap = Cap("key:a", 1000, rolling(3600))  # buckets of 60 s; T0 is a bucket start
    clock.advance(10)
    await spend(ledger, [cap], 900)  # bucket T0: leaves at T0 + 60 + 3600
    clock.advance(90)  # T0 + 100
    (ref,) = (await ledger.reserve([cap], 200)).refusals
    assert (ref.reason, ref.retry_after) == ("rate", 3560)
    clock.t = T0 + 3660
    assert (await ledger.reserve([cap], 1000)).granted


async def test_rolling_spend_dated_at_reservation_time(ledger: Ledger, clock: FakeClock) -> None:
    cap = Cap("key:a", 100, rolling(60))
    r = await ledger.reserve([cap], 50)
    clock.advance(50)
    await ledger.settle(r.hold_id, 50, source="reported")  # type: ignore[arg-type]
    clock.advance(11)  # T0 + 61: spend dated T0 has left although settled at T0 + 50
    assert await state(ledger, cap) == (0, 0)


async def test_rolling_exceeding_cap_alone_retries_after_window(ledger: Ledger) -> None:
    (ref,) = (await ledger.reserve([Cap("key:a", 100, rolling(600))], 101)).refusals
    assert (ref.reason, ref.retry_after, ref.exceeds_cap) == ("rate", 600, True)


async def test_rolling_holds_only_retry_1(ledger: Ledger) -> None:
    cap = Cap("key:a", 100, rolling(60))
    await spend(ledger, [cap], 20)
    await ledger.reserve([cap], 60)
    (ref,) = (await ledger.reserve([cap], 30)).refusals
    assert (ref.reason, ref.retry_after, ref.spent, ref.reserved) == ("rate", 1, 20, 60)


# -- daily / monthly -----------------------------------------------------------------


async def test_daily_resets_at_utc_midnight(ledger: Ledger, clock: FakeClock) -> None:
    cap = Cap("key:a", 100, DAILY)
    clock.t = utc(2024, 3, 10, 23, 59, 0)
    await spend(ledger, [cap], 60)
    late = await ledger.reserve([cap], 40)  # reserved before midnight, settled after
    clock.t = utc(2024, 3, 10, 23, 59, 29, 500000)
    (ref,) = (await ledger.reserve([cap], 1)).refusals
    assert (ref.reason, ref.retry_after, ref.reserved) == ("rate", 1, 40)  # holds only
    await ledger.settle(late.hold_id, 40, source="reported")  # type: ignore[arg-type]
    (ref,) = (await ledger.reserve([cap], 1)).refusals
    assert (ref.reason, ref.retry_after, ref.spent) == ("rate", 31, 100)  # ceil(30.5)
    clock.t = utc(2024, 3, 11, 0, 0, 0)
    assert await state(ledger, cap) == (0, 0)  # the late settle was charged to the 10th
    assert (await ledger.reserve([cap], 100)).granted


async def test_daily_exceeding_cap_alone(ledger: Ledger) -> None:
    (ref,) = (await ledger.reserve([Cap("key:a", 10, DAILY)], 11)).refusals
    assert (ref.reason, ref.retry_after, ref.exceeds_cap) == ("rate", 86400, True)


async def test_monthly_resets_on_the_first(ledger: Ledger, clock: FakeClock) -> None:
    cap = Cap("key:a", 100, MONTHLY)
    clock.t = utc(2024, 2, 1, 0, 0, 0)
    await spend(ledger, [cap], 100)
    clock.t = utc(2024, 2, 29, 12, 0, 0)  # leap year: reset in 12 h
    (ref,) = (await ledger.reserve([cap], 1)).refusals
    assert (ref.reason, ref.retry_after, ref.spent) == ("rate", 43200, 100)
    (ref,) = (await ledger.reserve([cap], 101)).refusals
    assert (ref.retry_after, ref.exceeds_cap) == (29 * 86400, True)  # February 2024
    clock.t = utc(2024, 3, 1, 0, 0, 0)
    assert await state(ledger, cap) == (0, 0)
    assert (await ledger.reserve([cap], 100)).granted


async def test_monthly_december_rolls_into_next_year(ledger: Ledger, clock: FakeClock) -> None:
    cap = Cap("key:a", 10, MONTHLY)
    clock.t = utc(2024, 12, 31, 23, 0, 0)
    await spend(ledger, [cap], 10)
    assert (await ledger.reserve([cap], 1)).refusals[0].retry_after == 3600
    clock.t = utc(2025, 1, 1, 0, 0, 0)
    assert (await ledger.reserve([cap], 10)).granted


# -- several caps, uncapped caps -----------------------------------------------------


async def test_account_refusal_holds_nothing_on_the_key(ledger: Ledger) -> None:
    key, acct = Cap("key:a", 1000, rolling(60)), Cap("account:r", 100, BAL)
    await spend(ledger, [key, acct], 90)
    r = await ledger.reserve([key, acct], 20)
    assert not r.granted and [x.subject for x in r.refusals] == ["account:r"]
    assert r.refusals[0].reason == "quota"
    assert await ledger.holds() == []
    assert await state(ledger, key) == (90, 0)


async def test_every_refusing_cap_is_reported(ledger: Ledger) -> None:
    key, acct = Cap("key:a", 10, rolling(60)), Cap("account:r", 10)
    r = await ledger.reserve([key, acct], 20)
    assert [(x.subject, x.reason, x.retry_after) for x in r.refusals] == [
        ("key:a", "rate", 60),
        ("account:r", "quota", None),
    ]


async def test_uncapped_cap_admits_and_records(ledger: Ledger) -> None:
    free, acct = Cap("key:free", None, DAILY), Cap("account:r", None)
    r = await ledger.reserve([free, acct], 10**12)
    assert r.granted
    states = await ledger.snapshot([free, acct])
    assert [(s.reserved, s.remaining) for s in states] == [(10**12, None), (10**12, None)]
    await ledger.settle(r.hold_id, 7, source="estimated")  # type: ignore[arg-type]
    assert await state(ledger, free) == (7, 0)
    assert await state(ledger, acct) == (7, 0)


# -- settle / release ----------------------------------------------------------------


async def test_settle_is_idempotent(ledger: Ledger) -> None:
    cap = Cap("key:a", 1000)
    r = await ledger.reserve([cap], 100)
    assert await ledger.settle(r.hold_id, 50, source="reported") == Settlement(50, False)
    again = await ledger.settle(r.hold_id, 50, source="reported")
    assert again == Settlement(0, False, already_final=True)
    await ledger.release(r.hold_id)  # type: ignore[arg-type]
    assert await state(ledger, cap) == (50, 0)


async def test_overrun_is_charged_whole_and_flagged(ledger: Ledger) -> None:
    cap = Cap("key:a", 1000)
    r = await ledger.reserve([cap], 100)
    assert await ledger.settle(r.hold_id, 1250, source="reported") == Settlement(1250, True)
    (s,) = await ledger.snapshot([cap])
    assert (s.spent, s.reserved, s.remaining) == (1250, 0, -250)
    assert (await ledger.reserve([cap], 1)).refusals[0].reason == "quota"


async def test_release_drops_hold_without_spend_and_is_idempotent(ledger: Ledger) -> None:
    cap = Cap("key:a", 100)
    r = await ledger.reserve([cap], 100)
    await ledger.release(r.hold_id)  # type: ignore[arg-type]
    await ledger.release(r.hold_id)  # type: ignore[arg-type]
    await ledger.release("no-such-hold")
    assert await state(ledger, cap) == (0, 0)
    settled = await ledger.settle(r.hold_id, 10, source="reported")  # type: ignore[arg-type]
    assert settled.already_final and await state(ledger, cap) == (0, 0)


async def test_bad_input_is_rejected_not_admitted(ledger: Ledger) -> None:
    cap = Cap("key:a", 100)
    with pytest.raises(ValueError):
        await ledger.reserve([cap], -1)
    with pytest.raises(ValueError):
        await ledger.reserve([cap, Cap("key:a", 5)], 1)
    with pytest.raises(ValueError):
        await ledger.reserve([Cap("key:b", 5, rolling(0))], 1)
    with pytest.raises(ValueError):
        await ledger.reserve([], 1)
    r = await ledger.reserve([cap], 10)
    with pytest.raises(ValueError):
        await ledger.settle(r.hold_id, -5, source="reported")  # type: ignore[arg-type]
    assert await state(ledger, cap) == (0, 10)


# -- owners, leases, orphans ---------------------------------------------------------


async def test_instances_sharing_a_store_share_caps(make_ledger: MakeLedger) -> None:
    a, b = await make_ledger(), await make_ledger()
    assert a.owner != b.owner
    cap = Cap("key:a", 100)
    assert (await a.reserve([cap], 60)).granted
    (ref,) = (await b.reserve([cap], 60)).refusals
    assert (ref.reason, ref.reserved) == ("rate", 60)


async def test_lapsed_owner_hold_is_orphaned_then_lowered_by_late_settle(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("key:a", 1000)
    r = await a.reserve([cap], 300)
    clock.advance(31)  # a stops heartbeating: its lease (30 s) lapses
    assert len(await b.heartbeat()) == 1
    assert await state(b, cap) == (300, 0)  # charged whole, no longer reserved
    assert await b.holds() == []
    assert len(await b.heartbeat()) == 0  # counted once
    late = await a.settle(r.hold_id, 120, source="reported")  # type: ignore[arg-type]
    assert late == Settlement(120, False)
    assert await state(b, cap) == (120, 0)
    again = await a.settle(r.hold_id, 120, source="reported")  # type: ignore[arg-type]
    assert again.already_final and await state(b, cap) == (120, 0)


async def test_late_settle_can_raise_an_orphan_charge(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("key:a", 1000, rolling(3600))
    r = await a.reserve([cap], 100)
    clock.advance(40)
    await b.heartbeat()
    assert await a.settle(r.hold_id, 150, source="reported") == Settlement(150, True)  # type: ignore[arg-type]
    assert await state(b, cap) == (150, 0)


async def test_release_after_orphan_refunds(make_ledger: MakeLedger, clock: FakeClock) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("key:a", 1000, DAILY)
    r = await a.reserve([cap], 300)
    clock.advance(60)
    await b.heartbeat()
    assert await state(b, cap) == (300, 0)
    await a.release(r.hold_id)  # type: ignore[arg-type]
    assert await state(b, cap) == (0, 0)


async def test_open_reclaims_dead_owner_holds(make_ledger: MakeLedger, clock: FakeClock) -> None:
    a = await make_ledger()
    cap = Cap("key:a", 1000)
    await a.reserve([cap], 300)
    clock.advance(45)
    b = await make_ledger()  # open() runs one reclaim
    assert await state(b, cap) == (300, 0)
    assert b.reclaimed_total == 1  # type: ignore[attr-defined]  # backends count reclaims


async def test_live_owner_holds_are_never_reclaimed(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("key:a", 1000)
    r = await a.reserve([cap], 300)
    for _ in range(10):  # 250 s, far past the lease, but a keeps heartbeating
        clock.advance(25)
        await a.heartbeat()
        assert len(await b.heartbeat()) == 0
    assert [h.hold_id for h in await b.holds()] == [r.hold_id]
    assert await state(b, cap) == (0, 300)
    assert await a.settle(r.hold_id, 10, source="reported") == Settlement(10, False)  # type: ignore[arg-type]


async def test_owner_that_missed_its_lease_loses_new_holds_until_it_beats(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("key:a", 1000)
    clock.advance(31)
    await b.heartbeat()  # a lapsed with no holds: its owner row is collected
    await a.reserve([cap], 100)
    assert len(await b.heartbeat()) == 1  # a hold of an owner without a live lease is reclaimed
    await a.heartbeat()
    await a.reserve([cap], 50)
    assert len(await b.heartbeat()) == 0
    assert await state(b, cap) == (100, 50)


async def test_close_keeps_live_holds_until_the_lease_lapses(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("key:a", 1000)
    await a.reserve([cap], 300)
    await a.close()
    clock.advance(10)
    assert len(await b.heartbeat()) == 0 and await state(b, cap) == (0, 300)
    clock.advance(30)
    assert len(await b.heartbeat()) == 1 and await state(b, cap) == (300, 0)


async def test_hold_past_max_age_is_reclaimed_even_if_owner_lives(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    a = await make_ledger(max_hold_seconds=100)
    cap = Cap("key:a", 1000)
    r = await a.reserve([cap], 300)
    clock.advance(90)
    assert len(await a.heartbeat()) == 0
    clock.advance(20)
    assert len(await a.heartbeat()) == 1
    assert await state(a, cap) == (300, 0)
    assert await a.settle(r.hold_id, 200, source="reported") == Settlement(200, False)  # type: ignore[arg-type]
    assert await state(a, cap) == (200, 0)


async def test_orphan_is_forgotten_after_a_day(make_ledger: MakeLedger, clock: FakeClock) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("key:a", 1000)
    r = await a.reserve([cap], 300)
    clock.advance(31)
    await b.heartbeat()
    clock.advance(86400 + 1)
    await b.heartbeat()
    late = await a.settle(r.hold_id, 10, source="reported")  # type: ignore[arg-type]
    assert late.already_final and await state(b, cap) == (300, 0)


async def test_readonly_reads_but_never_writes_or_reclaims(
    make_ledger: MakeLedger, ledger_url: str, clock: FakeClock
) -> None:
    a = await make_ledger()
    cap = Cap("key:a", 1000)
    await spend(a, [cap], 100)
    await a.reserve([cap], 50)
    ro = open_ledger(ledger_url, readonly=True, clock=clock)
    await ro.open()
    try:
        assert await state(ro, cap) == (100, 50)
        assert len(await ro.holds()) == 1
        clock.advance(120)
        assert len(await ro.heartbeat()) == 0
        assert await state(ro, cap) == (100, 50)
        with pytest.raises(LedgerUnavailable):
            await ro.reserve([cap], 1)
        with pytest.raises(LedgerUnavailable):
            await ro.release("x")
    finally:
        await ro.close()


# -- property: no cap is ever overshot except by flagged overruns --------------------

CAPS = {
    "key:a": Cap("key:a", 100, rolling(60)),
    "key:b": Cap("key:b", 150, DAILY),
    "key:c": Cap("key:c", None),
    "key:d": Cap("key:d", 120, MONTHLY),
}
ACCOUNT = Cap("account:x", 300, BAL)

op = st.one_of(
    st.tuples(
        st.just("reserve"), st.sampled_from(sorted(CAPS)), st.booleans(), st.integers(0, 130)
    ),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 140)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.integers(1, 40000)),
    st.tuples(st.just("heartbeat")),
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, max_size=40))
def test_property_no_overshoot_and_nothing_left_reserved(
    backend: str, tmp_path: Path, ops: list[tuple]
) -> None:
    asyncio.run(_property(url_for(backend, tmp_path), ops))


async def _property(url: str, ops: list[tuple]) -> None:
    clock = FakeClock()
    ledger = open_ledger(url, clock=clock, max_hold_seconds=10**9)
    await ledger.open()
    all_caps = [*CAPS.values(), ACCOUNT]
    excess = {c.subject: 0 for c in all_caps}  # overrun tokens beyond their holds
    live: list[tuple[str, int, list[Cap]]] = []
    try:
        for o in ops:
            if o[0] == "reserve":
                caps = [CAPS[o[1]]] + ([ACCOUNT] if o[2] else [])
                r = await ledger.reserve(caps, o[3])
                if r.granted:
                    live.append((r.hold_id, o[3], caps))  # type: ignore[arg-type]
                else:
                    assert r.refusals and all(
                        x.retry_after is None or x.retry_after >= 1 for x in r.refusals
                    )
            elif o[0] in ("settle", "release") and live:
                hold_id, amount, caps = live.pop(o[1] % len(live))
                if o[0] == "release":
                    await ledger.release(hold_id)
                    continue
                s = await ledger.settle(hold_id, o[2], source="reported")
                assert s.overrun == (o[2] > amount) and s.charged == o[2]
                for c in caps:
                    excess[c.subject] += max(0, o[2] - amount)
            elif o[0] == "advance":
                clock.advance(o[1])
            elif o[0] == "heartbeat":
                assert len(await ledger.heartbeat()) == 0  # a live owner's young holds stay
            for s in await ledger.snapshot(all_caps):
                if s.limit is not None:
                    assert s.spent + s.reserved <= s.limit + excess[s.subject], (s, excess)
        for hold_id, amount, _ in live:
            await ledger.settle(hold_id, amount // 2, source="estimated")
        assert all(s.reserved == 0 for s in await ledger.snapshot(all_caps))
        assert await ledger.holds() == []
    finally:
        await ledger.close()


# -- URLs ----------------------------------------------------------------------------


def test_parse_ledger_urls() -> None:
    assert parse_ledger_url("memory://").kind == "memory"
    assert parse_ledger_url("memory://shared").name == "shared"
    rel = parse_ledger_url("sqlite:///state/ledger.db")
    assert (rel.kind, str(rel.path)) == ("sqlite", "state/ledger.db")
    assert str(parse_ledger_url("sqlite:////abs/path.db").path) == "/abs/path.db"
    r = parse_ledger_url("rediss://:pw@cache.local:6380/2")
    assert (r.kind, r.host, r.port, r.db, r.tls) == ("redis", "cache.local", 6380, 2, True)
    assert "pw" not in repr(r)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "postgres://x/y",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "sqlite:///a.db?x=1",
        "memory://bad name",
        "redis://",
        "redis://h:1/x",
        "state/ledger.db",
    ],
)
def test_bad_ledger_urls_say_the_accepted_forms(url: str) -> None:
    with pytest.raises(LedgerURLError) as e:
        parse_ledger_url(url)
    msg = str(e.value)
    assert "\n" not in msg and "memory://" in msg and "sqlite:////abs/path.db" in msg


def test_bad_redis_url_never_echoes_a_password() -> None:
    with pytest.raises(LedgerURLError) as e:
        open_ledger("redis://:hunter2@127.0.0.1:notaport/0")
    assert "hunter2" not in str(e.value)
