"""Window arithmetic and refusal rules, as pure functions."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from seatbelt.ledger import Cap, Window
from seatbelt.ledger import windows as w


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


R60, R3600, R30 = Window("rolling", 60), Window("rolling", 3600), Window("rolling", 30)
BAL, DAILY, MONTHLY = Window("balance"), Window("daily"), Window("monthly")


def test_buckets() -> None:
    t = utc(2024, 2, 29, 13, 37, 42)
    assert w.bucket_of(BAL, t) == 0
    assert w.bucket_of(R60, t) == t  # 1 s buckets
    assert w.bucket_of(R30, t + 0.9) == t  # 30 // 60 -> at least 1 s
    assert w.bucket_of(R3600, t) == utc(2024, 2, 29, 13, 37, 0)  # 60 s buckets
    assert w.bucket_of(DAILY, t) == utc(2024, 2, 29)
    assert w.bucket_of(MONTHLY, t) == utc(2024, 2, 1)
    assert w.step(Window("rolling", 86400)) == 1440


def test_window_membership() -> None:
    t = utc(2024, 3, 10, 12)
    assert w.in_window(BAL, 0, t + 10**9)
    assert w.window_start(BAL, t) is None
    assert w.in_window(R60, w.bucket_of(R60, t), t + 60)  # the bucket [t, t+1) overlaps
    assert not w.in_window(R60, w.bucket_of(R60, t), t + 61)
    assert w.bucket_expiry(R60, t) == t + 61
    assert w.bucket_expiry(R3600, t) == t + 3660
    assert w.in_window(DAILY, utc(2024, 3, 10), utc(2024, 3, 10, 23, 59, 59))
    assert not w.in_window(DAILY, utc(2024, 3, 10), utc(2024, 3, 11))
    assert not w.in_window(MONTHLY, utc(2024, 2, 1), utc(2024, 3, 1))
    assert w.bucket_expiry(DAILY, t) is None and w.prune_after(R60, t) == t + 121


def test_reset_and_length() -> None:
    assert w.seconds_until_reset(DAILY, utc(2024, 3, 10, 23, 59, 59)) == 1
    assert w.seconds_until_reset(DAILY, utc(2024, 3, 10, 23, 59, 59) + 0.99) == 1  # >= 1
    assert w.seconds_until_reset(DAILY, utc(2024, 3, 10)) == 86400
    assert w.seconds_until_reset(MONTHLY, utc(2023, 2, 28, 12)) == 43200
    assert w.seconds_until_reset(MONTHLY, utc(2024, 12, 31, 23)) == 3600
    assert w.window_length(MONTHLY, utc(2024, 2, 10)) == 29 * 86400
    assert w.window_length(MONTHLY, utc(2023, 2, 10)) == 28 * 86400
    assert w.window_length(MONTHLY, utc(2024, 7, 31)) == 31 * 86400
    assert w.window_length(DAILY, 0) == 86400 and w.window_length(R3600, 0) == 3600
    with pytest.raises(ValueError):
        w.seconds_until_reset(BAL, 0)


def test_seconds_until_room() -> None:
    t = utc(2024, 3, 10, 12)
    rows = [(t + 10, 30), (t, 30), (t - 600, 999)]  # the last is long out of the window
    assert w.seconds_until_room(R60, rows, 30, t + 20) == 41
    assert w.seconds_until_room(R60, rows, 31, t + 20) == 51
    assert w.seconds_until_room(R60, rows, 61, t + 20) == 60  # never enough: a window
    assert w.seconds_until_room(R60, rows, 1, t + 60.5) == 1  # ceil(0.5) -> 1


def test_seconds_until_room_is_never_longer_than_the_window() -> None:
    """Spend of this very minute in a 3,600 s window (60 s buckets) counts until its
    bucket's end + 3,600 s: the arithmetic said 3,635, the window is the most said."""
    t = utc(2024, 3, 10, 12, 0, 0)
    rows = [(t, 1000)]
    assert w.seconds_until_room(R3600, rows, 1, t + 25) == 3600
    assert w.seconds_until_room(R3600, rows, 1, t + 100) == 3560  # exact once it is older
    r = w.judge(Cap("k", 1000, R3600), 10, 1000, 0, t + 25, rows)
    assert r is not None and (r.reason, r.retry_after) == ("rate", 3600)


def test_judge_rules() -> None:
    now = utc(2024, 3, 10, 12)
    assert w.judge(Cap("k", None), 10**9, 10**9, 10**9, now) is None
    assert w.judge(Cap("k", 100), 40, 30, 30, now) is None
    r = w.judge(Cap("k", 100), 41, 30, 30, now)
    assert r is not None and (r.reason, r.retry_after, r.requested) == ("rate", 1, 41)
    r = w.judge(Cap("k", 100), 71, 30, 0, now)
    assert r is not None and (r.reason, r.retry_after) == ("quota", None)
    r = w.judge(Cap("k", 100, DAILY), 71, 30, 0, now)
    assert r is not None and (r.reason, r.retry_after) == ("rate", 43200)
    r = w.judge(Cap("k", 0, MONTHLY), 1, 0, 0, now)
    assert r is not None and (r.retry_after, r.exceeds_cap) == (31 * 86400, True)
    r = w.judge(Cap("k", 100, R60), 71, 30, 0, now, [(now - 30, 30)])
    assert r is not None and (r.reason, r.retry_after) == ("rate", 31)


def test_validation() -> None:
    for bad in (Window("rolling", None), Window("rolling", 0), Window("weekly")):  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            w.validate_window(bad)
    with pytest.raises(ValueError):
        w.check_reserve([Cap("k", -1)], 1)
    with pytest.raises(ValueError):
        w.check_reserve([], True)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        w.check_settle(1, "guessed")
    w.check_reserve([Cap("a", 5), Cap("b", None, DAILY)], 0)


def test_hold_ids_are_unique_per_ledger_and_across_ledgers() -> None:
    from seatbelt.ledger.base import HoldIds

    a, b = HoldIds(), HoldIds()
    ids = [a() for _ in range(1000)] + [b() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # the shape of uuid4().hex
