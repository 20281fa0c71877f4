"""The background loop: about once a second the live policy is polled, a closed ledger is
opened again, and every fifth tick the ledger heartbeats (lease renewal and orphan reclaim).
Queued finishes are retried, the budget snapshot refreshed when dirty and the fleet's
policies compared. It must survive anything: one bad tick is logged, the next one runs."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from seatbelt.ledger.base import Ledger, LedgerUnavailable

if TYPE_CHECKING:
    from seatbelt.runtime import Runtime

logger = logging.getLogger("seatbelt")

BEATS_EVERY = 5  # ticks per heartbeat
FLEET_EVERY = 60  # ticks per fleet check (and whenever the policy changed)


class FleetCheck:
    """Proxies sharing a ledger must run the same policy: say so loudly when not, once."""

    def __init__(self) -> None:
        self.dirty = True  # check at the next tick
        self.warning: str | None = None

    async def run(self, ledger: Ledger, digest: str) -> None:
        self.dirty = False
        warning = await ledger.check_policy_digest(digest)
        if warning != self.warning:
            if warning:
                logger.warning(f"seatbelt: {warning}")
            elif self.warning:
                logger.info("seatbelt: every live proxy on this ledger runs the same policy again")
            self.warning = warning


class BackgroundLoop:
    """One task per event loop; `rt` is the runtime it keeps (see seatbelt/runtime.py)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.ticks = 0
        self.task: asyncio.Task | None = None

    def ensure(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.rt.heartbeat_seconds / BEATS_EVERY)
            self.ticks += 1
            try:
                await self.tick(self.ticks)
            except LedgerUnavailable as e:
                self.rt.health.set_up(False, str(e))
            except Exception:  # the loop must survive anything
                logger.exception("seatbelt: background task error")

    async def tick(self, ticks: int) -> None:
        rt = self.rt
        if rt.policy_watch is not None:
            rt.policy_watch.poll(rt)  # live policy: re-read when the file changed
        ledger = rt.ledger
        if ledger is None:
            return
        if not rt.health.open:
            await rt.open_ledger()
        elif ticks % BEATS_EVERY == 0:
            rt.record_reclaimed(await ledger.heartbeat())
            rt.health.set_up(True)
            rt.budgets.mark_dirty()
        if ledger.unfinished and rt.health.open:
            await ledger.retry_unfinished()
            rt.health.set_up(True)
            rt.budgets.mark_dirty()
        if rt.budgets.dirty:
            await rt.budgets.refresh()
        if rt.health.open and rt.policy is not None and (
                rt.fleet.dirty or ticks % FLEET_EVERY == 0):
            await rt.fleet.run(ledger, rt.policy.digest)
