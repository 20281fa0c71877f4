"""Process-wide state that must outlive one addon instance.

mitmproxy reloads a `-s` script when its file changes: the old instance gets `done`,
a new one `load`/`configure`/`running`. Imported modules are not re-executed, so the
ledger, the in-flight meters, the metrics server and the background tasks live here,
in one `Runtime`, and a reload neither finishes in-flight requests nor re-registers
collectors nor rebinds the metrics port.

`Runtime` wires small pieces (seatbelt/lifecycle/): ledger health, the background loop,
the budget snapshot (and through it the budget gauges), the fleet check; the retry queue
of unfinished settles lives on the ledger (seatbelt/ledger/retry.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from seatbelt.admission.counting import Tokenizers
from seatbelt.admission.fanout import FanoutLimiter
from seatbelt.cli.report import report_caps, report_rows
from seatbelt.config.options import Settings
from seatbelt.config.policy import Policy
from seatbelt.ledger import open_ledger, parse_ledger_url, redact
from seatbelt.ledger.base import HoldInfo, Ledger, LedgerUnavailable, UsageSource
from seatbelt.ledger.retry import Unfinished
from seatbelt.lifecycle.background import BackgroundLoop, FleetCheck
from seatbelt.lifecycle.budgets import BudgetSnapshot, ReportRows
from seatbelt.lifecycle.health import LedgerHealth
from seatbelt.lifecycle.orphans import record_reclaimed
from seatbelt.metering.meter import Meter
from seatbelt.records.audit import AuditLog
from seatbelt.records.metrics import Metrics, get_metrics

logger = logging.getLogger("seatbelt")

HEARTBEAT_SECONDS = 5.0
# Test-only: shorter leases so a test can watch a hold lapse in seconds, e.g.
# "lease=1,max_hold=4,heartbeat=0.2"; "timeout=S" lengthens the Redis ledger's per-operation
# timeout (a test that holds Redis still at start). Never silent: every use logs a warning.
TIMING_ENV = "SEATBELT_TEST_LEDGER_TIMING"
_TIMING_KEYS = {"lease": "lease_seconds", "max_hold": "max_hold_seconds",
                "heartbeat": "heartbeat_seconds", "timeout": "timeout"}


def ledger_timing(value: str | None) -> dict[str, float]:
    """Parse TIMING_ENV; ValueError (a start-up error) on anything odd. {} when unset."""
    if not value:
        return {}
    out: dict[str, float] = {}
    for part in value.split(","):
        name, sep, number = part.partition("=")
        try:
            seconds = float(number)
        except ValueError:
            seconds = -1.0
        if not sep or name.strip() not in _TIMING_KEYS or not 0 < seconds < 1e6:
            raise ValueError(f"{TIMING_ENV}={value!r} is not lease=S,max_hold=S,heartbeat=S; "
                             f"fix: unset {TIMING_ENV} (it is for tests only)")
        out[_TIMING_KEYS[name.strip()]] = seconds
    beat = out.get("heartbeat_seconds", HEARTBEAT_SECONDS)
    if out.get("lease_seconds", 30.0) < 3 * beat:
        raise ValueError(f"{TIMING_ENV}: the lease must be at least 3 heartbeats; "
                         f"fix: unset {TIMING_ENV} (it is for tests only)")
    return out


class Runtime:
    """The proxy's long-lived state; each concern is a piece on self (passed in or built)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else get_metrics()
        self.policy: Policy | None = None
        self.ledger: Ledger | None = None
        self.ledger_url: str | None = None
        self.config_error: str | None = None  # set while the addon is not (fully) configured
        self.audit = AuditLog()
        self.meters: dict[str, Meter] = {}
        self.fanout = FanoutLimiter()  # max_concurrent / rpm
        self.tokenizers = Tokenizers()  # exact prompt counts (seatbelt/admission/counting.py)
        self.policy_watch: Any = None  # livepolicy.PolicyWatch: polled each tick
        self.heartbeat_seconds = HEARTBEAT_SECONDS
        self.health = LedgerHealth(self.metrics.ledger_up.set)
        self.settings = None
        self.budgets = BudgetSnapshot(self._read_budgets)
        self.fleet = FleetCheck()
        self.background = BackgroundLoop(self)
        self._tasks: set[asyncio.Task] = set()
        self._sighup_loop: asyncio.AbstractEventLoop | None = None

    @property
    def settings(self) -> Settings | None:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings | None) -> None:
        self._settings = settings
        self.health.fail_open = settings is not None and settings.ledger_fail_open

    # --- readiness ----------------------------------------------------------------------

    def ready(self) -> bool:
        """Policy loaded, ledger open and answering: LLM traffic may be admitted."""
        return self.config_error is None and self.policy is not None and self.health.usable()

    async def until_ready(self) -> bool:
        """ready(), after waiting for an open of the ledger under way (at start: the port
        may take requests before the ledger answers), at most the ledger's timeout."""
        if not self.ready() and self.ledger is not None:
            await self.health.wait_opening(self.ledger.timeout + 0.5)
        return self.ready()

    def failing_open(self) -> bool:
        """The ledger is down and the operator chose fail-open: admit without holds."""
        return (self.settings is not None and self.settings.ledger_fail_open
                and self.config_error is None and self.policy is not None
                and not self.health.usable())

    def warn_fail_open(self) -> None:
        self.health.warn_fail_open()

    def set_ledger_up(self, up: bool, reason: str = "") -> None:
        self.health.set_up(up, reason)

    @property
    def ledger_open(self) -> bool:
        return self.health.open

    @property
    def ledger_up(self) -> bool:
        return self.health.up

    @ledger_up.setter
    def ledger_up(self, up: bool) -> None:
        self.health.up = up

    # --- ledger lifecycle -------------------------------------------------------------

    def use_ledger(self, url: str) -> None:
        """Switch to the ledger at `url` (no-op when unchanged); it opens in the background."""
        if url == self.ledger_url and self.ledger is not None:
            return
        timing: dict[str, Any] = ledger_timing(os.environ.get(TIMING_ENV))
        if timing:
            logger.warning(f"seatbelt: {TIMING_ENV} is set ({timing}): test-only ledger "
                           "timing, never for production")
        self.heartbeat_seconds = timing.pop("heartbeat_seconds", HEARTBEAT_SECONDS)
        if "timeout" in timing and parse_ledger_url(url).kind != "redis":
            timing.pop("timeout")  # SQLite's is its busy timeout; memory has none
        self.ledger = open_ledger(url, **timing)
        self.ledger_url = url
        self.health.reset()
        self.health.opening()  # requests arriving meanwhile wait for it (until_ready)
        self.spawn(self.open_ledger(startup=True))

    async def open_ledger(self, *, startup: bool = False) -> None:
        ledger = self.ledger
        if ledger is None:
            return
        self.health.opening()
        try:
            reclaimed = await ledger.open()
        except LedgerUnavailable as e:
            if startup:
                logger.error(f"seatbelt_ledger: cannot open {redact(self.ledger_url or '')}: {e}")
            self.set_ledger_up(False, str(e))
            return
        finally:
            self.health.opened()
        if ledger is self.ledger:
            self.health.open = True
            self.set_ledger_up(True)
            self.budgets.mark_dirty()
            self.record_reclaimed(reclaimed)  # open() reclaims the holds of dead proxies

    def record_reclaimed(self, reclaimed: Iterable[HoldInfo]) -> None:
        """Audit and count the holds a heartbeat (or open) charged whole as orphaned."""
        record_reclaimed(reclaimed, self.meters, self.audit, self.metrics)

    def defer_finish(self, ledger: Ledger, hold_id: str, action: str, charge: int,
                     source: UsageSource) -> None:
        """A settle/release the ledger could not take (a passing fault): the ledger's retry
        queue retries it until it lands."""
        assert action in ("settle", "release")
        ledger.unfinished.add(Unfinished(hold_id, action, charge, source))  # type: ignore[arg-type]

    @property
    def unfinished(self) -> list[Unfinished]:
        """What the current ledger's retry queue still owes (tests, status)."""
        return self.ledger.unfinished.items() if self.ledger is not None else []

    async def retry_unfinished(self) -> None:
        """Oldest first; stops at the first failure (LedgerUnavailable to the caller)."""
        if self.ledger is not None and await self.ledger.retry_unfinished():
            self.budgets.mark_dirty()
        self.set_ledger_up(True)

    # --- background ---------------------------------------------------------------------

    def ensure_background(self) -> None:
        loop = asyncio.get_running_loop()
        self.background.ensure()
        self.budgets.bind(loop)
        self.metrics.budgets.source = self.budgets.gauge_rows
        self._install_sighup(loop)

    def _install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGHUP reopens the audit log (logrotate). Once per loop, so a script reload keeps
        it; without it, SIGHUP's default action would stop the proxy."""
        if not hasattr(signal, "SIGHUP") or self._sighup_loop is loop:
            return
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reopen_audit)
        except (NotImplementedError, RuntimeError, ValueError):
            return  # not the main thread, or a loop without signal support
        self._sighup_loop = loop

    def reopen_audit(self) -> None:
        logger.info(f"seatbelt: SIGHUP: reopening the audit log {self.audit.path or '(off)'}")
        self.audit.reopen()

    async def check_fleet(self) -> None:
        """Proxies sharing a ledger must run the same policy: say so loudly when not."""
        if self.ledger is not None and self.policy is not None:
            await self.fleet.run(self.ledger, self.policy.digest)

    def mark_policy_changed(self) -> None:
        if self.policy is not None:
            self.metrics.declare_keys((k.account, k.id) for k in self.policy.keys)
        self.fleet.dirty = True
        self.budgets.mark_dirty()

    # --- the budget snapshot ------------------------------------------------------------

    def mark_budgets_dirty(self) -> None:
        self.budgets.mark_dirty()

    async def refresh_budgets(self) -> None:
        await self.budgets.refresh()

    async def _read_budgets(self) -> ReportRows | None:
        policy, ledger = self.policy, self.ledger
        if policy is None or ledger is None or not self.health.open:
            return None
        return report_rows(policy, await ledger.snapshot(report_caps(policy)))

    @property
    def last_report(self) -> ReportRows:
        """Rows of the last budget snapshot (seatbelt/cli/report.py's report_rows)."""
        return self.budgets.rows

    @property
    def last_report_at(self) -> float | None:
        return self.budgets.at

    @last_report_at.setter
    def last_report_at(self, at: float | None) -> None:
        self.budgets.at = at

    # --- tasks --------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self, finish_all: Callable[[Meter], Awaitable[None]]) -> None:
        """Proxy stopping (not a script reload): finish what is open, then close."""
        for meter in list(self.meters.values()):
            await finish_all(meter)
        self.background.cancel()
        if self.ledger is not None and self.health.open:
            try:
                await self.ledger.drain()  # the finishes handed over without waiting
                await self.ledger.retry_unfinished()  # what is left lapses with our lease
                await self.ledger.close()
            except LedgerUnavailable:
                pass
        self.audit.close()


RUNTIME = Runtime()
