"""Ledger.adjust (operator reset / top-up), run unchanged on every backend (conftest.BACKENDS)."""

from __future__ import annotations

import pytest

from seatbelt.ledger import Cap, Ledger, LedgerUnavailable, Window, open_ledger

from .conftest import FakeClock, MakeLedger

BAL = Window("balance")
DAILY = Window("daily")


async def spend(ledger: Ledger, caps: list[Cap], tokens: int) -> None:
    r = await ledger.reserve(caps, tokens)
    assert r.granted, r
    await ledger.settle(r.hold_id, tokens, source="reported")  # type: ignore[arg-type]


async def state(ledger: Ledger, cap: Cap) -> tuple[int, int]:
    (s,) = await ledger.snapshot([cap])
    return s.spent, s.reserved


async def test_reset_then_top_up_a_balance(ledger: Ledger) -> None:
    cap = Cap("key:a", 100, BAL)
    await spend(ledger, [cap], 90)
    assert not (await ledger.reserve([cap], 20)).granted
    assert await ledger.adjust(cap, -90) == 0  # reset
    assert await state(ledger, cap) == (0, 0)
    assert await ledger.adjust(cap, -50) == -50  # top-up: credit beyond zero
    (s,) = await ledger.snapshot([cap])
    assert s.remaining == 150
    r = await ledger.reserve([cap], 150)
    assert r.granted
    assert not (await ledger.reserve([cap], 1)).granted


async def test_positive_adjustment_is_spend(ledger: Ledger) -> None:
    cap = Cap("usd:key:a", 1000, BAL)
    assert await ledger.adjust(cap, 700) == 700
    (ref,) = (await ledger.reserve([cap], 301)).refusals
    assert (ref.reason, ref.spent) == ("quota", 700)
    assert (await ledger.reserve([cap], 300)).granted


async def test_rolling_reset_leaves_no_credit_behind(ledger: Ledger, clock: FakeClock) -> None:
    cap = Cap("key:a", 100, Window("rolling", 60))  # 1 s buckets
    await spend(ledger, [cap], 30)  # bucket T0
    clock.advance(10)
    await spend(ledger, [cap], 30)  # bucket T0+10
    clock.advance(10)
    assert await ledger.adjust(cap, -60) == 0
    clock.advance(45)  # T0+65: bucket T0 left the window; a reset must not turn into credit
    assert await state(ledger, cap) == (0, 0)
    clock.advance(60)
    assert await state(ledger, cap) == (0, 0)


async def test_rolling_top_up_cancels_newest_spend_then_credits_one_window(
    ledger: Ledger, clock: FakeClock
) -> None:
    cap = Cap("key:a", 100, Window("rolling", 60))
    await spend(ledger, [cap], 30)  # bucket T0
    clock.advance(10)
    await spend(ledger, [cap], 20)  # bucket T0+10
    clock.advance(10)
    # Cancels T0+10 (20), then 15 of T0: 15 stay in bucket T0.
    assert await ledger.adjust(cap, -35) == 15
    clock.advance(41)  # T0+61: bucket T0 left
    assert await state(ledger, cap) == (0, 0)
    assert await ledger.adjust(cap, -40) == -40  # pure credit in the current bucket
    clock.advance(30)
    assert await state(ledger, cap) == (-40, 0)
    clock.advance(32)  # one window (and its step) later the credit is gone
    assert await state(ledger, cap) == (0, 0)


async def test_daily_adjustment_is_for_today_only(ledger: Ledger, clock: FakeClock) -> None:
    cap = Cap("key:a", 100, DAILY)
    await spend(ledger, [cap], 80)
    assert await ledger.adjust(cap, -100) == -20
    clock.advance(86400)  # next UTC day: a fresh window, nothing carried over
    assert await state(ledger, cap) == (0, 0)


async def test_live_holds_are_untouched_and_settle_after_a_reset(ledger: Ledger) -> None:
    cap = Cap("key:a", 100, BAL)
    await spend(ledger, [cap], 40)
    held = await ledger.reserve([cap], 50)
    assert await ledger.adjust(cap, -40) == 0
    assert await state(ledger, cap) == (0, 50)
    await ledger.settle(held.hold_id, 30, source="reported")  # type: ignore[arg-type]
    assert await state(ledger, cap) == (30, 0)


async def test_adjust_needs_no_open_and_reclaims_nothing(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    """The operator CLI writes without open(): it must not reclaim a proxy's holds."""
    proxy = await make_ledger(lease_seconds=30)
    cap = Cap("key:a", 1000, BAL)
    held = await proxy.reserve([cap], 100)
    clock.advance(120)  # the proxy's lease lapsed: only a heartbeat may reclaim it
    operator = make_ledger.build(lease_seconds=30)
    assert await operator.adjust(cap, 5) == 5
    (info,) = await operator.holds()
    assert info.hold_id == held.hold_id
    assert await state(operator, cap) == (5, 100)


async def test_instances_sharing_a_store_see_an_adjustment(make_ledger: MakeLedger) -> None:
    a, b = await make_ledger(), await make_ledger()
    cap = Cap("account:r", 500, BAL)
    await spend(a, [cap], 200)
    await b.adjust(cap, -200)
    assert await state(a, cap) == (0, 0)


async def test_bad_adjustments_and_readonly_are_refused(
    ledger: Ledger, ledger_url: str, clock: FakeClock
) -> None:
    cap = Cap("key:a", 100, BAL)
    for bad in (True, 1.5, "3", None):
        with pytest.raises(ValueError):
            await ledger.adjust(cap, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await ledger.adjust(Cap("key:a", 100, Window("rolling", 0)), 1)
    ro = open_ledger(ledger_url, readonly=True, clock=clock)
    await ro.open()
    try:
        with pytest.raises(LedgerUnavailable):
            await ro.adjust(cap, -1)
    finally:
        await ro.close()
    assert await state(ledger, cap) == (0, 0)
