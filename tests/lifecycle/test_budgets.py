"""The budget snapshot (seatbelt/lifecycle/budgets.py): when it reads, what a scrape from
another thread gets, and that a failed read keeps the last rows."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from seatbelt.lifecycle.budgets import MAX_AGE, BudgetSnapshot, ReportRows
from seatbelt.records.metrics import BudgetRow


def row(spent: int) -> dict[str, Any]:
    return {"account": "team", "key": "k1", "cap": 1000, "spent": spent, "reserved": 0,
            "remaining": 1000 - spent}


class Reads:
    """A read that answers the queued rows in turn (None: nothing to read), noting the
    thread each ran on."""

    def __init__(self, *answers: ReportRows | None | Exception) -> None:
        self.answers = list(answers)
        self.threads: list[int] = []

    async def __call__(self) -> ReportRows | None:
        self.threads.append(threading.get_ident())
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_refresh_clears_dirty_and_keeps_the_rows_when_there_is_nothing_to_read() -> None:
    read = Reads([row(10)], None)
    snap = BudgetSnapshot(read)
    assert snap.dirty and not snap.fresh()
    assert asyncio.run(snap.refresh()) == [row(10)]
    assert not snap.dirty and snap.fresh()
    assert snap.at is not None
    snap.at -= MAX_AGE  # as if read MAX_AGE ago: served no longer
    assert not snap.fresh()
    snap.at += MAX_AGE
    snap.mark_dirty()
    assert not snap.fresh()
    assert asyncio.run(snap.refresh()) == [row(10)]  # None: the last rows stay
    assert snap.at is not None


def test_a_scrape_from_another_thread_reads_through_the_loop_unless_fresh() -> None:
    read = Reads([row(10)], [row(30)])
    snap = BudgetSnapshot(read)

    async def go() -> tuple[list[BudgetRow], list[BudgetRow], list[BudgetRow]]:
        snap.bind(asyncio.get_running_loop())
        first = await asyncio.to_thread(snap.gauge_rows)
        cached = await asyncio.to_thread(snap.gauge_rows)  # fresh: no second read
        snap.mark_dirty()
        after = await asyncio.to_thread(snap.gauge_rows)
        return first, cached, after

    first, cached, after = asyncio.run(go())
    assert [r.window_spend for r in first + cached + after] == [10, 10, 30]
    # Both reads ran on the loop's thread (asyncio.run's: this one), never the scrape's.
    assert read.threads == [threading.get_ident()] * 2
    assert read.answers == []


def test_a_failed_read_serves_the_last_rows() -> None:
    read = Reads([row(10)], RuntimeError("ledger down"))
    snap = BudgetSnapshot(read)

    async def go() -> list[BudgetRow]:
        snap.bind(asyncio.get_running_loop())
        await snap.refresh()
        snap.mark_dirty()
        return await asyncio.to_thread(snap.gauge_rows)

    assert [r.window_spend for r in asyncio.run(go())] == [10]
    assert read.answers == []  # it did try


def test_without_a_running_loop_a_scrape_serves_what_it_has() -> None:
    read = Reads()
    snap = BudgetSnapshot(read)
    assert snap.gauge_rows() == [] and read.threads == []
