"""The one interface every ledger backend implements, and the value types it speaks.

The ledger is the only place where budget state lives. Everything it promises is
atomic per call: a reservation either holds on every cap it touches or on none.
Backends: memory (tests), sqlite (default, durable), redis (many proxies).
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import os
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Sequence

if TYPE_CHECKING:
    from .retry import RetryQueue, Unfinished


def new_owner() -> str:
    """This ledger instance's owner id, as operators read it (`admin holds`, heartbeats):
    `host:pid:` and 8 random hex characters (two ledgers of one process stay apart)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


class HoldIds:
    """Hold ids that are unique across every process sharing a ledger, without the
    getrandom(2) call and UUID object uuid4() costs per request: a random 64-bit prefix
    per ledger instance, then a counter (32 hex characters, like uuid4().hex)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():016x}"


WindowKind = Literal["balance", "rolling", "daily", "monthly"]
UsageSource = Literal["reported", "estimated", "none", "orphaned"]


@dataclass(frozen=True)
class Window:
    """How spend is counted against a cap over time (UTC for daily/monthly)."""

    kind: WindowKind = "balance"
    seconds: int | None = None  # only for rolling

    def label(self) -> str:
        """The report/contract spelling: balance, rolling:SECONDS, daily, monthly."""
        return f"rolling:{self.seconds}" if self.kind == "rolling" else self.kind


@dataclass(frozen=True)
class Cap:
    """One budget a request is charged against: a key's or an account's.

    `subject` is the ledger's row name, e.g. "key:agent-zero" or "account:research";
    `limit` None means metered but not capped (spend is still recorded).
    """

    subject: str
    limit: int | None
    window: Window = field(default_factory=Window)


@dataclass(frozen=True)
class CapRefusal:
    """Why one cap could not hold a reservation.

    reason "quota": a balance cap whose settled spend alone leaves no room (never retry).
    reason "rate": a resetting cap is full, or a balance cap is full only because of
    other requests' holds; retry_after is whole seconds >= 1.
    """

    subject: str
    reason: Literal["quota", "rate"]
    retry_after: int | None
    limit: int
    spent: int
    reserved: int
    requested: int
    exceeds_cap: bool = False  # the reservation alone is larger than the cap


@dataclass(frozen=True)
class Reservation:
    """The answer to reserve(): a hold id when granted, else one refusal per cap."""

    hold_id: str | None
    amount: int
    refusals: tuple[CapRefusal, ...] = ()
    # When granted: each capped cap's state with this hold included, if the backend had it
    # at hand while judging (budget headers then need no second read); else empty.
    states: tuple[CapState, ...] = ()

    @property
    def granted(self) -> bool:
        return self.hold_id is not None


@dataclass(frozen=True)
class Settlement:
    """The answer to settle(): what was charged and whether it overran the hold."""

    charged: int
    overrun: bool
    already_final: bool = False  # the hold was settled/released before (idempotent no-op)


@dataclass(frozen=True)
class CapState:
    """A cap as the report and the budget gauges see it right now."""

    subject: str
    limit: int | None
    window: Window
    spent: int  # settled spend inside the current window
    reserved: int  # live holds

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved


@dataclass(frozen=True)
class HoldInfo:
    """A live hold, for operators and tests."""

    hold_id: str
    owner: str
    amount: int
    subjects: tuple[str, ...]
    created: float


class LedgerUnavailable(Exception):
    """The backend cannot be reached or written; callers fail closed (503)."""


FinishAction = Literal["settle", "release"]
# finish_soon's answer: (the settlement or None after a release, the error or None)
FinishDone = Callable[["Settlement | None", "Exception | None"], None]


class Ledger(abc.ABC):
    """Budget state behind one small interface.

    Every method is a coroutine so a networked backend fits; local backends may do
    their (short) work inline. `now` parameters exist for tests only; production passes
    None and the backend uses its own clock (Redis: the server's).
    """

    owner: str  # this process's id; holds carry it
    # The longest one call may take before it raises LedgerUnavailable (a request that
    # arrives while the ledger is still opening waits at most this long for it).
    timeout: float = 2.0

    def __init__(self) -> None:
        from .retry import RetryQueue

        # Settles/releases a fault interrupted, retried by retry_unfinished(); whoever saw
        # the fault (the backend itself, or its caller) queues it here, once per hold.
        self.unfinished: RetryQueue = RetryQueue()

    @abc.abstractmethod
    async def open(self) -> list[HoldInfo]:
        """Connect, create schema, register this owner, reclaim holds of dead owners.
        Returns the holds it reclaimed (as heartbeat() does); [] when read-only."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop heartbeating and disconnect. Does not touch live holds."""

    @abc.abstractmethod
    async def reserve(
        self, caps: Sequence[Cap], amount: int, *, now: float | None = None
    ) -> Reservation:
        """Atomically hold `amount` on every cap, or on none and say why per cap."""

    @abc.abstractmethod
    async def settle(
        self, hold_id: str, actual: int, *, source: UsageSource, now: float | None = None
    ) -> Settlement:
        """Turn the hold into `actual` spend (all of it, even above the hold), once."""

    @abc.abstractmethod
    async def release(self, hold_id: str) -> None:
        """Drop the hold without spend (never sent / upstream non-2xx). Idempotent."""

    @abc.abstractmethod
    async def snapshot(self, caps: Sequence[Cap], *, now: float | None = None) -> list[CapState]:
        """Spend inside each cap's current window and its live holds. Read-only."""

    @abc.abstractmethod
    async def holds(self) -> list[HoldInfo]:
        """Every live hold (all owners)."""

    @abc.abstractmethod
    async def heartbeat(self, *, now: float | None = None) -> list[HoldInfo]:
        """Renew this owner's lease and reclaim holds whose owner is dead (its lease lapsed,
        or on SQLite its liveness lock is free) or whose hard maximum age passed, charged
        whole as `orphaned`. Returns the holds it reclaimed (for the audit and metrics),
        each once: only the heartbeat that charged a hold returns it."""

    async def check_policy_digest(self, digest: str, *, now: float | None = None) -> str | None:
        """Record this proxy's policy digest and return a one-line warning when another
        live proxy on the same ledger runs a different policy, else None. Default: the
        backend keeps no record of other proxies' policies (memory is one process)."""
        return None

    async def retry_unfinished(self) -> int:
        """Retry every queued settle/release (`self.unfinished`), oldest first; raises
        LedgerUnavailable at the first one the ledger still cannot take."""
        return await self.unfinished.retry(self._finish_unfinished)

    async def _finish_unfinished(self, item: Unfinished) -> None:
        if item.action == "settle":
            await self.settle(item.hold_id, item.charge, source=item.source)
        else:
            await self.release(item.hold_id)

    @abc.abstractmethod
    async def adjust(self, cap: Cap, delta: int, *, now: float | None = None) -> int:
        """An operator's signed correction of `cap.subject`'s settled spend in its current
        window; returns the window's spend after it. Holds are not touched.

        A positive delta is charged to the current bucket. A negative one first cancels
        spend inside the window, newest bucket first, never taking a bucket below zero;
        whatever is left of it is credit (negative spend) in the current bucket. So
        `adjust(cap, -spent)` is a reset (nothing credited) and a larger negative delta
        is a top-up (on a rolling window the credit lasts one window length)."""

    def finish_soon(self, hold_id: str, action: FinishAction, actual: int, *,
                    source: UsageSource, done: FinishDone) -> None:
        """Settle (action "settle") or release a hold without the caller waiting for it.

        Why: the response hook has nothing to wait for, and each wait costs mitmproxy a
        suspended hook task. A finish lost to a crash before it lands leaves the hold,
        which the next start charges whole as `orphaned`: never free, never lost.
        `done(settlement, None)` after a settle, `done(None, None)` after a release,
        `done(None, error)` when it failed (LedgerUnavailable: retry later). Called once.
        Default: a task awaiting settle()/release(); local backends do better."""
        task = asyncio.get_running_loop().create_task(
            self._finish_in_task(hold_id, action, actual, source, done))
        tasks = self.__dict__.setdefault("_finishing", set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _finish_in_task(self, hold_id: str, action: FinishAction, actual: int,
                              source: UsageSource, done: FinishDone) -> None:
        try:
            if action == "settle":
                result: Settlement | None = await self.settle(hold_id, actual, source=source)
            else:
                await self.release(hold_id)
                result = None
        except Exception as e:
            done(None, e)
            return
        done(result, None)

    async def drain(self) -> None:
        """Every finish_soon() so far has landed or failed (shutdown, before close())."""
        tasks = self.__dict__.get("_finishing")
        if tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)

    async def ping(self) -> bool:
        """True when the backend answers (readiness)."""
        try:
            await self.snapshot([])
            return True
        except LedgerUnavailable:
            return False
