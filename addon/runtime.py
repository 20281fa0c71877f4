"""Process-wide state that must outlive one addon instance.

mitmproxy reloads a `-s` script when its file changes: the old instance gets `done`,
a new one `load`/`configure`/`running`. Imported modules are not re-executed, so the
ledger, the in-flight meters, the metrics server and the background tasks live here,
in one `Runtime`, and a reload neither finishes in-flight requests nor re-registers
collectors nor rebinds the metrics port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from addon.audit import AuditLog
from addon.ledger import open_ledger, redact
from addon.ledger.base import Ledger, LedgerUnavailable
from addon.meter import Meter
from addon.metrics import budget_rows, get_metrics
from addon.options import Settings
from addon.policy import Policy
from addon.report import report_caps, report_rows

logger = logging.getLogger("seatbelt")

HEARTBEAT_SECONDS = 5.0


@dataclass
class Runtime:
    settings: Settings | None = None
    policy: Policy | None = None
    ledger: Ledger | None = None
    ledger_url: str | None = None
    ledger_open: bool = False
    ledger_up: bool = False
    config_error: str | None = None  # set while the addon is not (fully) configured
    audit: AuditLog = field(default_factory=AuditLog)
    meters: dict[str, Meter] = field(default_factory=dict)
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _loop_task: asyncio.Task | None = None
    _budget_dirty: bool = False
    _was_up: bool = False
    last_report: list[dict] = field(default_factory=list)  # rows of the last budget snapshot
    last_report_at: float | None = None  # its time.monotonic(); None until the first one

    def ready(self) -> bool:
        """Policy loaded, ledger open and answering: LLM traffic may be admitted."""
        return (
            self.config_error is None
            and self.policy is not None
            and self.ledger_open
            and self.ledger_up
        )

    def set_ledger_up(self, up: bool, reason: str = "") -> None:
        if up != self.ledger_up:
            if up and self._was_up:
                logger.info("seatbelt: ledger reachable again; admitting LLM requests")
            elif up:
                self._was_up = True
            else:
                logger.error(f"seatbelt: ledger unavailable ({reason}); refusing LLM requests")
        self.ledger_up = up
        get_metrics().set_ledger_up(up)

    # --- ledger lifecycle -------------------------------------------------------------

    def use_ledger(self, url: str) -> None:
        """Switch to the ledger at `url` (no-op when unchanged); it opens in the background."""
        if url == self.ledger_url and self.ledger is not None:
            return
        self.ledger = open_ledger(url)
        self.ledger_url = url
        self.ledger_open = False
        self.ledger_up = False
        self.spawn(self.open_ledger(startup=True))

    async def open_ledger(self, *, startup: bool = False) -> None:
        ledger = self.ledger
        if ledger is None:
            return
        try:
            await ledger.open()
        except LedgerUnavailable as e:
            if startup:
                logger.error(f"seatbelt_ledger: cannot open {redact(self.ledger_url or '')}: {e}")
            self.set_ledger_up(False, str(e))
            return
        if ledger is self.ledger:
            self.ledger_open = True
            self.set_ledger_up(True)
            self.mark_budgets_dirty()

    def ensure_background(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._background())

    async def _background(self) -> None:
        """Heartbeat (lease renewal + orphan reclaim), healing, budget gauges."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS / 5)
            ticks = getattr(self, "_ticks", 0) + 1
            self._ticks = ticks
            try:
                if self.ledger is not None and not self.ledger_open:
                    await self.open_ledger()
                elif self.ledger is not None and ticks % 5 == 0:
                    await self.ledger.heartbeat()
                    self.set_ledger_up(True)
                    self._budget_dirty = True
                if self._budget_dirty:
                    self._budget_dirty = False
                    await self.refresh_budgets()
            except LedgerUnavailable as e:
                self.set_ledger_up(False, str(e))
            except Exception:  # the loop must survive anything
                logger.exception("seatbelt: background task error")

    def mark_budgets_dirty(self) -> None:
        self._budget_dirty = True

    async def refresh_budgets(self) -> None:
        policy, ledger = self.policy, self.ledger
        if policy is None or ledger is None or not self.ledger_open:
            return
        caps = report_caps(policy)
        states = await ledger.snapshot(caps)
        self.last_report = report_rows(policy, states)
        self.last_report_at = time.monotonic()
        get_metrics().set_budgets(budget_rows(self.last_report))

    # --- tasks --------------------------------------------------------------------------

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self, finish_all) -> None:
        """Proxy stopping (not a script reload): finish what is open, then close."""
        for meter in list(self.meters.values()):
            await finish_all(meter)
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self.ledger is not None and self.ledger_open:
            try:
                await self.ledger.close()
            except LedgerUnavailable:
                pass
        self.audit.close()


RUNTIME = Runtime()
