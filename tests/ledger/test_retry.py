"""The one retry queue of unfinished settles and releases (seatbelt/ledger/retry.py)."""

from __future__ import annotations

import asyncio

import pytest

from seatbelt.ledger.base import LedgerUnavailable
from seatbelt.ledger.retry import RetryQueue, Unfinished


def test_retry_queue_stops_at_the_first_fault_and_drops_a_broken_entry() -> None:
    queue = RetryQueue(limit=3)
    for i in range(5):
        queue.add(Unfinished(f"h{i}", "release"))
    assert [u.hold_id for u in queue.items()] == ["h0", "h1", "h2"]  # bounded
    queue.add(Unfinished("h1", "settle", 7, "reported"))  # the newest word on h1 wins
    assert queue.items()[1] == Unfinished("h1", "settle", 7, "reported")
    seen: list[str] = []

    async def finish(item: Unfinished) -> None:
        seen.append(item.hold_id)
        if item.hold_id == "h0":
            raise ValueError("a bug")
        if item.hold_id == "h2":
            raise LedgerUnavailable("down")

    with pytest.raises(LedgerUnavailable):
        asyncio.run(queue.retry(finish))
    assert seen == ["h0", "h1", "h2"]
    assert [u.hold_id for u in queue.items()] == ["h2"]


def test_a_full_queue_still_takes_the_newest_word_on_a_queued_hold() -> None:
    queue = RetryQueue(limit=1)
    queue.add(Unfinished("h0", "release"))
    queue.add(Unfinished("h1", "release"))  # full: dropped (left to the max hold age)
    queue.add(Unfinished("h0", "settle", 5, "estimated"))  # not a new entry: replaces
    assert queue.items() == [Unfinished("h0", "settle", 5, "estimated")] and len(queue) == 1


def test_done_forgets_a_hold_and_an_emptied_queue_is_false() -> None:
    queue = RetryQueue()
    assert not queue
    queue.add(Unfinished("h0", "release"))
    queue.add(Unfinished("h1", "release"))
    queue.done("h0")
    queue.done("never-queued")
    assert queue and [u.hold_id for u in queue.items()] == ["h1"]

    async def lands(item: Unfinished) -> None:
        return None

    assert asyncio.run(queue.retry(lands)) == 1
    assert not queue and len(queue) == 0
