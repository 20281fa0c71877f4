"""Window arithmetic and refusal rules, shared by every ledger backend.

Pure functions only: backends fetch numbers (spend per bucket, live holds) and ask
this module what they mean, so memory, SQLite and Redis answer identically.

Spend is stored per (subject, bucket), where a bucket is an integer epoch second:
- balance: one bucket, 0;
- rolling S: buckets of `step = max(1, S // 60)` seconds, keyed by their start;
- daily: the UTC midnight; monthly: the first of the month, 00:00 UTC.
Spend is dated at the hold's *reservation* time. A rolling bucket counts while any
part of it lies in (now - S, now], i.e. from `bucket_of(now - S)` on: spend may stay
up to one step (1/60 of the window) longer than S, never shorter, so no S-second
interval can ever hold more than the cap.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Iterable

from .base import Cap, CapRefusal, Window

DAY = 86400


def validate_window(window: Window) -> None:
    """Reject a window the arithmetic cannot honour (fail closed, not silently balance)."""
    if window.kind == "rolling":
        if not isinstance(window.seconds, int) or window.seconds < 1:
            raise ValueError(f"rolling window needs whole seconds >= 1, got {window.seconds!r}")
    elif window.kind not in ("balance", "daily", "monthly"):
        raise ValueError(f"unknown window kind {window.kind!r}")


def step(window: Window) -> int:
    """Bucket width in seconds of a rolling window."""
    assert window.seconds is not None
    return max(1, window.seconds // 60)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp())


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def bucket_of(window: Window, ts: float) -> int:
    """The bucket that spend reserved at `ts` is charged to."""
    if window.kind == "balance":
        return 0
    if window.kind == "rolling":
        s = step(window)
        return math.floor(ts / s) * s
    d = _utc(ts)
    if window.kind == "daily":
        return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())
    if window.kind == "monthly":
        return _month_start(d.year, d.month)
    raise ValueError(f"unknown window kind {window.kind!r}")


def window_start(window: Window, now: float) -> int | None:
    """Smallest bucket inside the current window at `now`; None = every bucket (balance)."""
    if window.kind == "balance":
        return None
    if window.kind == "rolling":
        assert window.seconds is not None
        return bucket_of(window, now - window.seconds)
    return bucket_of(window, now)


def in_window(window: Window, bucket: int, now: float) -> bool:
    """Does spend in `bucket` count against the window at `now`?"""
    start = window_start(window, now)
    return start is None or bucket >= start


def bucket_expiry(window: Window, bucket: int) -> float | None:
    """When spend in `bucket` stops counting (rolling only; None = it never expires by time
    in a way worth pruning). Backends may prune rows well past this moment."""
    if window.kind != "rolling":
        return None
    assert window.seconds is not None
    return bucket + step(window) + window.seconds


def _ceil_seconds(seconds: float) -> int:
    """Retry-After: whole seconds, at least 1."""
    return max(1, math.ceil(seconds - 1e-6))  # absorb float noise of epoch times


def seconds_until_reset(window: Window, now: float) -> int:
    """Daily/monthly: seconds until the next UTC midnight / first of next month."""
    d = _utc(now)
    if window.kind == "daily":
        return _ceil_seconds(bucket_of(window, now) + DAY - now)
    if window.kind == "monthly":
        return _ceil_seconds(_month_start(*_next_month(d.year, d.month)) - now)
    raise ValueError(f"{window.kind} windows do not reset")


def window_length(window: Window, now: float) -> int:
    """The whole window in seconds (the Retry-After of a reservation larger than the cap)."""
    if window.kind == "rolling":
        assert window.seconds is not None
        return window.seconds
    if window.kind == "daily":
        return DAY
    if window.kind == "monthly":
        d = _utc(now)
        return _month_start(*_next_month(d.year, d.month)) - _month_start(d.year, d.month)
    raise ValueError("a balance window has no length")


def seconds_until_room(
    window: Window, buckets: Iterable[tuple[int, int]], needed: int, now: float
) -> int:
    """Rolling: seconds until the oldest in-window spend totalling `needed` has left.

    `buckets` are (bucket, tokens) rows of the subject (any order, out-of-window ones are
    ignored). If the rows never add up to `needed`, the answer is the window length.

    Never more than the window: spend younger than one step (1/60 of the window) still
    counts until its bucket's end + S (`bucket_expiry`), so the bucket arithmetic alone
    said up to S + step (3,635 s for a 3,600 s window). The answer is the window length
    then; a retry at that moment is at most one step early and gets the rest.
    """
    assert window.seconds is not None
    freed = 0
    for bucket, tokens in sorted(b for b in buckets if in_window(window, b[0], now)):
        freed += tokens
        if freed >= needed:
            expiry = bucket_expiry(window, bucket)
            assert expiry is not None
            return min(window.seconds, _ceil_seconds(expiry - now))
    return window.seconds


def judge(
    cap: Cap,
    amount: int,
    spent: int,
    reserved: int,
    now: float,
    buckets: Iterable[tuple[int, int]] = (),
) -> CapRefusal | None:
    """Can `cap` hold `amount` more? None if yes, else why not (contract section 5).

    `spent` is the settled spend inside the current window, `reserved` the live holds,
    `buckets` the in-window spend rows (needed only for a rolling refusal).
    """
    if cap.limit is None:
        return None
    limit = cap.limit
    if spent + reserved + amount <= limit:
        return None

    def refuse(reason: str, retry_after: int | None, exceeds: bool = False) -> CapRefusal:
        return CapRefusal(
            subject=cap.subject,
            reason=reason,  # type: ignore[arg-type]
            retry_after=retry_after,
            limit=limit,
            spent=spent,
            reserved=reserved,
            requested=amount,
            exceeds_cap=exceeds,
        )

    window = cap.window
    if window.kind == "balance":
        if spent + amount > limit:
            return refuse("quota", None, exceeds=amount > limit)
        return refuse("rate", 1)
    if amount > limit:
        return refuse("rate", window_length(window, now), exceeds=True)
    if spent + amount > limit:
        if window.kind == "rolling":
            return refuse("rate", seconds_until_room(window, buckets, spent + amount - limit, now))
        return refuse("rate", seconds_until_reset(window, now))
    return refuse("rate", 1)


# Shared request checks and constants (pure, so every backend rejects the same inputs).

ORPHAN_KEEP_SECONDS = DAY  # an orphaned hold stays correctable by a late settle this long
SOURCES = ("reported", "estimated", "none", "orphaned")


def check_reserve(caps: Iterable[Cap], amount: int) -> None:
    """Programming errors fail loudly instead of admitting something unmetered."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"reservation amount must be a non-negative integer, got {amount!r}")
    caps = list(caps)
    if not caps:
        raise ValueError("a reservation needs at least one cap (use limit None to only meter)")
    seen: set[str] = set()
    for cap in caps:
        if cap.subject in seen:
            raise ValueError(f"subject {cap.subject!r} appears twice in one reservation")
        seen.add(cap.subject)
        if cap.limit is not None and (
            isinstance(cap.limit, bool) or not isinstance(cap.limit, int) or cap.limit < 0
        ):
            raise ValueError(f"cap of {cap.subject!r} must be a non-negative integer or None")
        validate_window(cap.window)


def check_settle(actual: int, source: str) -> None:
    if isinstance(actual, bool) or not isinstance(actual, int) or actual < 0:
        raise ValueError(f"settled usage must be a non-negative integer, got {actual!r}")
    if source not in SOURCES:
        raise ValueError(f"unknown usage source {source!r}")


def prune_after(window: Window, bucket: int) -> float | None:
    """When a spend row can be deleted: one whole window after it stopped counting
    (rolling only; other windows keep their rows)."""
    expiry = bucket_expiry(window, bucket)
    if expiry is None:
        return None
    assert window.seconds is not None
    return expiry + window.seconds


def check_adjust(cap: Cap, delta: int) -> None:
    """An operator adjustment names one subject, a valid window and a whole signed amount."""
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise ValueError(f"adjustment must be an integer, got {delta!r}")
    if not isinstance(cap.subject, str) or not cap.subject:
        raise ValueError("adjustment needs a subject")
    validate_window(cap.window)


def plan_adjust(
    window: Window, buckets: Iterable[tuple[int, int]], delta: int, now: float
) -> list[tuple[int, int]]:
    """(bucket, change) rows that apply `delta` (see Ledger.adjust): a negative delta
    cancels in-window spend newest bucket first, down to zero per bucket; the rest (and
    any positive delta) goes to the current bucket."""
    changes: list[tuple[int, int]] = []
    if delta < 0:
        rows = sorted((b for b in buckets if in_window(window, b[0], now) and b[1] > 0),
                      reverse=True)
        for bucket, tokens in rows:
            if delta == 0:
                break
            take = min(tokens, -delta)
            changes.append((bucket, -take))
            delta += take
    if delta:
        current = bucket_of(window, now)
        for i, (bucket, change) in enumerate(changes):
            if bucket == current:
                changes[i] = (bucket, change + delta)
                break
        else:
            changes.append((current, delta))
    return changes
