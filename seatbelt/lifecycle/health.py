"""Ledger health: open or not, answering or not, and what to say when that changes.

Why a piece of its own: admission (may I reserve?), settlement (a finish failed), the
background loop (it healed) and /readyz all ask or tell it; the `seatbelt_ledger_up` gauge
follows it. It also knows when an open is under way, so a request that arrives in that
moment waits for it (bounded by the ledger's timeout) instead of being refused (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

logger = logging.getLogger("seatbelt")

FAIL_OPEN_WARN_SECONDS = 10.0


class LedgerHealth:
    """State on self; `gauge(value)` sets seatbelt_ledger_up (1 up, 0 down, -1 fail-open)."""

    def __init__(self, gauge: Callable[[float], None]) -> None:
        self.gauge = gauge
        self.open = False  # the current ledger's open() succeeded
        self.up = False  # ... and its last call answered
        self.fail_open = False  # the operator's seatbelt_ledger_fail_open
        self._was_up = False
        self._fail_open_warned = -1e9
        self._opening: asyncio.Event | None = None  # set when the open under way ends

    def usable(self) -> bool:
        return self.open and self.up

    def reset(self) -> None:
        """A new ledger: closed until its open() succeeds."""
        self.open = self.up = False

    def set_up(self, up: bool, reason: str = "") -> None:
        if up != self.up:
            if up and self._was_up:
                logger.info("seatbelt: ledger reachable again; admitting LLM requests")
            elif up:
                self._was_up = True
            else:
                then = ("passing LLM requests UNMETERED (fail-open)" if self.fail_open
                        else "refusing LLM requests")
                logger.error(f"seatbelt: ledger unavailable ({reason}); {then}")
        self.up = up
        # 1 up; 0 down, failing closed; -1 down and failing OPEN (alert on != 1).
        self.gauge(1 if up else (-1 if self.fail_open else 0))

    def warn_fail_open(self) -> None:
        now = time.monotonic()
        if now - self._fail_open_warned >= FAIL_OPEN_WARN_SECONDS:
            self._fail_open_warned = now
            logger.warning("seatbelt: FAIL-OPEN: the ledger is unreachable; LLM requests pass "
                           "UNMETERED and UNCAPPED (seatbelt_ledger_fail_open=true)")

    # -- an open under way -----------------------------------------------------------------

    def opening(self) -> None:
        """An open() attempt starts."""
        if self._opening is None or self._opening.is_set():
            self._opening = asyncio.Event()

    def opened(self) -> None:
        """The attempt ended (either way): whoever waits for it looks again."""
        if self._opening is not None:
            self._opening.set()

    async def wait_opening(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for an open under way; at once when none is."""
        event = self._opening
        if event is None or event.is_set():
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
