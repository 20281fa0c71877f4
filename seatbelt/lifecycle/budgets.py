"""The budget snapshot: every policy cap's spend and holds, read from the ledger.

Two readers: the status command (`rows`, refreshed by the background loop when marked
dirty) and the budget gauges, which are computed at scrape time (`gauge_rows`, called from
the metrics server's thread). A scrape never touches the ledger from its own thread (the
SQLite connection belongs to the event loop, a Redis client to its loop): it hands the read
to the loop (run_coroutine_threadsafe) and waits, bounded. A snapshot younger than MAX_AGE
that no reservation or settlement of this proxy has made stale is served as it is, so every
proxy on a shared ledger shows the fleet's figures at most MAX_AGE old, and its own exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from seatbelt.records.metrics import BudgetRow, budget_rows

logger = logging.getLogger("seatbelt")

MAX_AGE = 1.0  # seconds a scrape may be served from the last snapshot
SCRAPE_WAIT = 3.0  # seconds a scrape waits for the loop's read before serving the last one

ReportRows = list[dict[str, Any]]


class BudgetSnapshot:
    """`read()` returns the report rows (seatbelt/cli/report.py) of the current policy and
    ledger, or None when there is none to read (no policy, ledger not open)."""

    def __init__(self, read: Callable[[], Awaitable[ReportRows | None]]) -> None:
        self._read = read
        self.rows: ReportRows = []
        self.at: float | None = None  # time.monotonic() of `rows`; None until the first
        self.dirty = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the ledger (scrapes hand their reads to it)."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    def mark_dirty(self) -> None:
        self.dirty = True

    def fresh(self) -> bool:
        return (not self.dirty and self.at is not None
                and time.monotonic() - self.at < MAX_AGE)

    async def refresh(self) -> ReportRows:
        """Read now (LedgerUnavailable passes); the rows stay as they were when there is
        nothing to read."""
        self.dirty = False  # a change during the read marks it dirty again
        rows = await self._read()
        if rows is not None:
            self.rows, self.at = rows, time.monotonic()
        return self.rows

    def gauge_rows(self) -> list[BudgetRow]:
        """For a scrape (any thread): the current rows, refreshed through the loop unless
        fresh. When the loop cannot answer in time, the last rows (the ledger_up gauge
        says whether the ledger answers)."""
        loop = self._loop
        if (not self.fresh() and loop is not None and loop.is_running()
                and threading.get_ident() != self._loop_thread):
            future = asyncio.run_coroutine_threadsafe(self.refresh(), loop)
            try:
                future.result(SCRAPE_WAIT)
            except concurrent.futures.TimeoutError:
                future.cancel()
                logger.warning("seatbelt: budget gauges: the ledger read took over "
                               f"{SCRAPE_WAIT:g}s; served the last snapshot")
            except Exception as e:  # LedgerUnavailable and anything else: keep the last rows
                logger.debug(f"seatbelt: budget gauges: {type(e).__name__}: {e}")
        return budget_rows(self.rows)
