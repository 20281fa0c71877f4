"""In-process ledger (`memory://`, `memory://NAME`): the reference semantics, for tests.

Every method runs to completion without awaiting, so each call is atomic on the
event loop. `memory://NAME` shares one store between instances of this process
(tests of two proxies sharing a ledger); plain `memory://` gets a private store.
Nothing survives the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import windows as w
from .base import (
    Cap,
    CapState,
    FinishAction,
    FinishDone,
    HoldIds,
    HoldInfo,
    Ledger,
    LedgerUnavailable,
    Reservation,
    Settlement,
    UsageSource,
    new_owner,
)


@dataclass
class _Hold:
    owner: str
    amount: int
    created: float
    charges: tuple[tuple[str, int, float | None], ...]  # (subject, bucket, prune_after)
    orphaned_at: float | None = None  # set once reclaimed and charged whole


@dataclass
class _Store:
    # subject -> bucket -> [tokens, prune_after]
    spend: dict[str, dict[int, list]] = field(default_factory=dict)
    holds: dict[str, _Hold] = field(default_factory=dict)
    owners: dict[str, float] = field(default_factory=dict)  # owner -> last heartbeat

    def add(self, subject: str, bucket: int, tokens: int, prune: float | None) -> None:
        row = self.spend.setdefault(subject, {}).setdefault(bucket, [0, prune])
        row[0] += tokens
        if prune is not None and (row[1] is None or prune > row[1]):
            row[1] = prune

    def charge(self, hold: _Hold, tokens: int) -> None:
        if tokens:
            for subject, bucket, prune in hold.charges:
                self.add(subject, bucket, tokens, prune)

    def spent(self, cap: Cap, now: float) -> tuple[int, list[tuple[int, int]]]:
        start = w.window_start(cap.window, now)
        rows = [
            (b, row[0])
            for b, row in self.spend.get(cap.subject, {}).items()
            if start is None or b >= start
        ]
        return sum(n for _, n in rows), rows

    def reserved(self, subject: str) -> int:
        return sum(
            h.amount
            for h in self.holds.values()
            if h.orphaned_at is None and any(c[0] == subject for c in h.charges)
        )


_STORES: dict[str, _Store] = {}


class MemoryLedger(Ledger):
    """Dict-backed ledger with the full contract (owners, leases, orphans)."""

    def __init__(
        self,
        name: str | None = None,
        *,
        readonly: bool = False,
        lease_seconds: float = 30.0,
        max_hold_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.owner = new_owner()
        self._hold_ids = HoldIds()
        self.readonly = readonly
        self.lease_seconds = lease_seconds
        self.max_hold_seconds = max_hold_seconds
        self.reclaimed_total = 0
        self._clock = clock
        self._store = _STORES.setdefault(name, _Store()) if name else _Store()

    def _writable(self) -> _Store:
        if self.readonly:
            raise LedgerUnavailable("ledger was opened read-only")
        return self._store

    async def open(self) -> list[HoldInfo]:
        if self.readonly:
            return []
        self._store.owners[self.owner] = self._clock()
        return await self.heartbeat()

    async def close(self) -> None:
        store = self._store
        if not self.readonly and not any(
            h.owner == self.owner and h.orphaned_at is None for h in store.holds.values()
        ):
            store.owners.pop(self.owner, None)

    async def reserve(
        self, caps: Sequence[Cap], amount: int, *, now: float | None = None
    ) -> Reservation:
        w.check_reserve(caps, amount)
        store = self._writable()
        now = self._clock() if now is None else now
        refusals = []
        states = []
        for cap in caps:
            if cap.limit is None:
                continue
            spent, rows = store.spent(cap, now)
            reserved = store.reserved(cap.subject)
            refusal = w.judge(cap, amount, spent, reserved, now, rows)
            if refusal is not None:
                refusals.append(refusal)
            states.append(CapState(cap.subject, cap.limit, cap.window, spent, reserved + amount))
        if refusals:
            return Reservation(None, amount, tuple(refusals))
        hold_id = self._hold_ids()
        charges = tuple(
            (
                cap.subject,
                w.bucket_of(cap.window, now),
                w.prune_after(cap.window, w.bucket_of(cap.window, now)),
            )
            for cap in caps
        )
        store.holds[hold_id] = _Hold(self.owner, amount, now, charges)
        return Reservation(hold_id, amount, states=tuple(states))

    async def settle(
        self, hold_id: str, actual: int, *, source: UsageSource, now: float | None = None
    ) -> Settlement:
        w.check_settle(actual, source)
        return self._settle_now(hold_id, actual)

    def _settle_now(self, hold_id: str, actual: int) -> Settlement:
        store = self._writable()
        hold = store.holds.pop(hold_id, None)
        if hold is None:
            return Settlement(0, False, already_final=True)
        store.charge(hold, actual if hold.orphaned_at is None else actual - hold.amount)
        return Settlement(actual, actual > hold.amount)

    async def release(self, hold_id: str) -> None:
        self._release_now(hold_id)

    def _release_now(self, hold_id: str) -> None:
        store = self._writable()
        hold = store.holds.pop(hold_id, None)
        if hold is not None and hold.orphaned_at is not None:
            store.charge(hold, -hold.amount)  # never sent after all: refund the orphan charge

    def finish_soon(self, hold_id: str, action: FinishAction, actual: int, *,
                    source: UsageSource, done: FinishDone) -> None:
        """In memory there is nothing to wait for: finished at once, `done` called now."""
        if action == "settle":
            w.check_settle(actual, source)
        try:
            if action == "settle":
                result: Settlement | None = self._settle_now(hold_id, actual)
            else:
                self._release_now(hold_id)
                result = None
        except LedgerUnavailable as e:
            done(None, e)
            return
        done(result, None)

    async def adjust(self, cap: Cap, delta: int, *, now: float | None = None) -> int:
        w.check_adjust(cap, delta)
        store = self._writable()
        now = self._clock() if now is None else now
        _, rows = store.spent(cap, now)
        for bucket, change in w.plan_adjust(cap.window, rows, delta, now):
            store.add(cap.subject, bucket, change, w.prune_after(cap.window, bucket))
        return store.spent(cap, now)[0]

    async def snapshot(self, caps: Sequence[Cap], *, now: float | None = None) -> list[CapState]:
        now = self._clock() if now is None else now
        store = self._store
        return [
            CapState(
                cap.subject,
                cap.limit,
                cap.window,
                store.spent(cap, now)[0],
                store.reserved(cap.subject),
            )
            for cap in caps
        ]

    async def holds(self) -> list[HoldInfo]:
        return [
            HoldInfo(hid, h.owner, h.amount, tuple(c[0] for c in h.charges), h.created)
            for hid, h in self._store.holds.items()
            if h.orphaned_at is None
        ]

    async def heartbeat(self, *, now: float | None = None) -> list[HoldInfo]:
        if self.readonly:
            return []
        now = self._clock() if now is None else now
        store = self._store
        store.owners[self.owner] = now
        reclaimed: list[HoldInfo] = []
        for hid, hold in store.holds.items():
            if hold.orphaned_at is None and self._lapsed(hold, now):
                store.charge(hold, hold.amount)
                hold.orphaned_at = now
                reclaimed.append(HoldInfo(hid, hold.owner, hold.amount,
                                          tuple(c[0] for c in hold.charges), hold.created))
        self._collect(now)
        self.reclaimed_total += len(reclaimed)
        return reclaimed

    def _lapsed(self, hold: _Hold, now: float) -> bool:
        beat = self._store.owners.get(hold.owner)
        return (
            now - hold.created > self.max_hold_seconds
            or beat is None
            or beat < now - self.lease_seconds
        )

    def _collect(self, now: float) -> None:
        """Forget long-orphaned holds, dead owners without holds, and expired rolling rows."""
        store = self._store
        for hid in [
            hid
            for hid, h in store.holds.items()
            if h.orphaned_at is not None and h.orphaned_at < now - w.ORPHAN_KEEP_SECONDS
        ]:
            del store.holds[hid]
        busy = {h.owner for h in store.holds.values() if h.orphaned_at is None}
        for owner in [
            o
            for o, beat in store.owners.items()
            if beat < now - self.lease_seconds and o not in busy
        ]:
            del store.owners[owner]
        for rows in store.spend.values():
            for bucket in [b for b, row in rows.items() if row[1] is not None and row[1] < now]:
                del rows[bucket]
