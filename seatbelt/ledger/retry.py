"""The one queue of settles and releases a ledger fault interrupted, retried until they land.

Why one: a finish can fail in the ledger (a Redis answer lost, a reserve whose answer was lost
and whose hold may exist) and in its caller (settlement saw LedgerUnavailable); both land here,
keyed by hold id, so a hold is retried once however many places noticed. A live proxy keeps
its lease, so without the retry a hold would stay counted until the hard maximum age.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .base import FinishAction, LedgerUnavailable, UsageSource

logger = logging.getLogger("seatbelt")

MAX_UNFINISHED = 10000  # beyond: the hold is left to the maximum hold age


@dataclass(frozen=True)
class Unfinished:
    """A settle (with its charge) or a release still owed to the ledger."""

    hold_id: str
    action: FinishAction
    charge: int = 0
    source: UsageSource = "none"


Finisher = Callable[[Unfinished], Awaitable[object]]


class RetryQueue:
    """Oldest first, one entry per hold (the newest word on a hold wins), bounded."""

    def __init__(self, limit: int = MAX_UNFINISHED) -> None:
        self.limit = limit
        self._items: dict[str, Unfinished] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def items(self) -> list[Unfinished]:
        return list(self._items.values())

    def add(self, item: Unfinished) -> None:
        if item.hold_id not in self._items and len(self._items) >= self.limit:
            logger.error(f"seatbelt: {self.limit} unfinished holds queued; hold {item.hold_id} "
                         "is left to the maximum hold age")
            return
        self._items[item.hold_id] = item

    def done(self, hold_id: str) -> None:
        """The hold's finish landed (whoever sent it): nothing left to retry."""
        self._items.pop(hold_id, None)

    async def retry(self, finish: Finisher) -> int:
        """Retry oldest first; stops at the first LedgerUnavailable (raised to the caller).
        Any other error drops its entry, so one bad entry never blocks the queue.
        Returns how many landed or were dropped."""
        count = 0
        for item in list(self._items.values()):
            try:
                await finish(item)
            except LedgerUnavailable:
                raise
            except Exception:
                logger.exception(f"seatbelt: dropping the unfinished {item.action} of "
                                 f"{item.hold_id}")
            self.done(item.hold_id)
            count += 1
        return count
