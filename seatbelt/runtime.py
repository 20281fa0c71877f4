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
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from seatbelt.admission.fanout import FanoutLimiter
from seatbelt.cli.report import report_caps, report_rows
from seatbelt.config.options import Settings
from seatbelt.config.policy import Policy
from seatbelt.ledger import open_ledger, redact
from seatbelt.ledger.base import HoldInfo, Ledger, LedgerUnavailable, UsageSource
from seatbelt.metering.meter import Meter
from seatbelt.records.audit import AuditLog, audit_record
from seatbelt.records.metrics import budget_rows, get_metrics
from seatbelt.usd.pricing import to_usd

logger = logging.getLogger("seatbelt")

HEARTBEAT_SECONDS = 5.0
MAX_UNFINISHED = 10000  # settles/releases queued for retry (beyond: maximum hold age)
# Test-only: shorter leases so a test can watch a hold lapse in seconds, e.g.
# "lease=1,max_hold=4,heartbeat=0.2". Never silent: every use logs a warning naming it.
TIMING_ENV = "SEATBELT_TEST_LEDGER_TIMING"
_TIMING_KEYS = {"lease": "lease_seconds", "max_hold": "max_hold_seconds",
                "heartbeat": "heartbeat_seconds"}


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
    fanout: FanoutLimiter = field(default_factory=FanoutLimiter)  # max_concurrent / rpm
    policy_watch: Any = None  # livepolicy.PolicyWatch: polled each tick for file changes
    _tasks: set[asyncio.Task] = field(default_factory=set)
    # settles/releases a ledger fault interrupted: (ledger, hold_id, action, charge, source)
    unfinished: list[tuple[Ledger, str, str, int, UsageSource]] = field(default_factory=list)
    _loop_task: asyncio.Task | None = None
    _budget_dirty: bool = False
    _ticks: int = 0  # background-loop iterations (heartbeat every 5th)
    _was_up: bool = False
    _fail_open_warned: float = -1e9
    _fleet_dirty: bool = True
    _fleet_warning: str | None = None
    last_report: list[dict] = field(default_factory=list)  # rows of the last budget snapshot
    last_report_at: float | None = None  # its time.monotonic(); None until the first one
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    _sighup_loop: asyncio.AbstractEventLoop | None = None

    def ready(self) -> bool:
        """Policy loaded, ledger open and answering: LLM traffic may be admitted."""
        return (
            self.config_error is None
            and self.policy is not None
            and self.ledger_open
            and self.ledger_up
        )

    def failing_open(self) -> bool:
        """The ledger is down and the operator chose fail-open: admit without holds."""
        settings = self.settings
        return (
            settings is not None
            and settings.ledger_fail_open
            and self.config_error is None
            and self.policy is not None
            and not (self.ledger_open and self.ledger_up)
        )

    def warn_fail_open(self) -> None:
        now = time.monotonic()
        if now - self._fail_open_warned >= 10:
            self._fail_open_warned = now
            logger.warning("seatbelt: FAIL-OPEN: the ledger is unreachable; LLM requests pass "
                           "UNMETERED and UNCAPPED (seatbelt_ledger_fail_open=true)")

    def set_ledger_up(self, up: bool, reason: str = "") -> None:
        if up != self.ledger_up:
            if up and self._was_up:
                logger.info("seatbelt: ledger reachable again; admitting LLM requests")
            elif up:
                self._was_up = True
            else:
                then = ("passing LLM requests UNMETERED (fail-open)"
                        if self.settings is not None and self.settings.ledger_fail_open
                        else "refusing LLM requests")
                logger.error(f"seatbelt: ledger unavailable ({reason}); {then}")
        self.ledger_up = up
        fail_open = self.settings is not None and self.settings.ledger_fail_open
        # 1 up; 0 down, failing closed; -1 down and failing OPEN (alert on != 1).
        get_metrics().ledger_up.set(1 if up else (-1 if fail_open else 0))

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
        self.ledger = open_ledger(url, **timing)
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
            self.audit_reclaimed(ledger)  # open() reclaims the holds of dead proxies

    def audit_reclaimed(self, ledger: Ledger) -> None:
        """One audit line per hold the last heartbeat charged whole as `orphaned`, so the
        audit and the ledger reconcile after a crash: per flow (or hold), the last line
        says what was charged (an orphan line: its `reserved`; a later settle of the same
        flow lowers it to its real usage and writes the usual line)."""
        held: list[HoldInfo] = list(getattr(ledger, "last_reclaimed", ()) or ())
        if not held:
            return
        by_hold = {m.hold_id: m for m in self.meters.values() if m.hold_id is not None}
        by_hold.update({m.usd_hold_id: m for m in self.meters.values() if m.usd_hold_id})
        for info in held:
            meter = by_hold.get(info.hold_id)
            # A USD hold (seatbelt/usd/money.py): subjects usd:key:ID, amount in micro-dollars.
            usd = bool(info.subjects) and all(s.startswith("usd:") for s in info.subjects)
            subjects = dict(s.removeprefix("usd:").split(":", 1) for s in info.subjects
                            if ":" in s.removeprefix("usd:"))
            logger.warning(f"seatbelt: {'USD ' if usd else ''}hold {info.hold_id} of key "
                           f"{subjects.get('key')} never finished; charged whole "
                           f"({to_usd(info.amount) if usd else info.amount}) as orphaned")
            self.audit.write(audit_record(
                flow_id=meter.flow_id if meter else f"hold:{info.hold_id}",
                account=meter.account if meter else subjects.get("account"),
                key=meter.key if meter else subjects.get("key"),
                credential_fp=meter.credential_fp if meter else None,
                provider=meter.route.provider if meter else None,
                host=meter.host if meter else None,
                path=meter.path if meter else None,
                model=meter.model if meter else None,
                stream=meter.facts.stream if meter else False,
                reserved=None if usd else info.amount,
                prompt_tokens=None,
                completion_tokens=None,
                cached_tokens=None,
                cache_write_tokens=None,
                reasoning_tokens=None,
                usage_source="orphaned",
                overrun=False,
                outcome="aborted",
                status=None,
                ttft_s=None,
                duration_s=(round(time.time() - info.created, 6)),
                edits=list(meter.edits) if meter else [],
                cost_usd=to_usd(info.amount) if usd else None,
            ))

    def ensure_background(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = loop.create_task(self._background())
        self._install_sighup(loop)

    def _install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGHUP reopens the audit log (logrotate). Once per loop, so a script reload keeps
        it; without it, SIGHUP's default action would stop the proxy."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None or self._sighup_loop is loop:
            return
        try:
            loop.add_signal_handler(sighup, self.reopen_audit)
        except (NotImplementedError, RuntimeError, ValueError):
            return  # not the main thread, or a loop without signal support
        self._sighup_loop = loop

    def defer_finish(self, ledger: Ledger, hold_id: str, action: str, charge: int,
                     source: UsageSource) -> None:
        """A settle/release the ledger could not take (a passing fault): retried until it
        lands. A live proxy keeps its lease, so without this the hold would stay counted
        until the hard maximum age."""
        if len(self.unfinished) >= MAX_UNFINISHED:
            logger.error(f"seatbelt: {MAX_UNFINISHED} unfinished holds queued; hold {hold_id} "
                         "is left to the maximum hold age")
            return
        self.unfinished.append((ledger, hold_id, action, charge, source))

    async def retry_unfinished(self) -> None:
        """Oldest first; stops at the first failure (LedgerUnavailable to the caller)."""
        while self.unfinished:
            ledger, hold_id, action, charge, source = self.unfinished[0]
            try:
                if action == "settle":
                    await ledger.settle(hold_id, charge, source=source)
                else:
                    await ledger.release(hold_id)
            except LedgerUnavailable:
                raise
            except Exception:  # never let one bad entry block the queue
                logger.exception(f"seatbelt: dropping the unfinished {action} of {hold_id}")
            self.unfinished.pop(0)
            self.mark_budgets_dirty()
        self.set_ledger_up(True)

    def reopen_audit(self) -> None:
        logger.info(f"seatbelt: SIGHUP: reopening the audit log {self.audit.path or '(off)'}")
        self.audit.reopen()

    async def _background(self) -> None:
        """Heartbeat (lease renewal + orphan reclaim), healing, budget gauges."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds / 5)
            self._ticks += 1
            ticks = self._ticks
            try:
                if self.policy_watch is not None:
                    self.policy_watch.poll(self)  # live policy: re-read when the file changed
                if self.ledger is not None and not self.ledger_open:
                    await self.open_ledger()
                elif self.ledger is not None and ticks % 5 == 0:
                    await self.ledger.heartbeat()
                    self.set_ledger_up(True)
                    self.audit_reclaimed(self.ledger)
                    self._budget_dirty = True
                if self.unfinished and self.ledger_open:
                    await self.retry_unfinished()
                if self._budget_dirty:
                    self._budget_dirty = False
                    await self.refresh_budgets()
                if self.ledger_open and (self._fleet_dirty or ticks % 60 == 0):
                    self._fleet_dirty = False
                    await self.check_fleet()
            except LedgerUnavailable as e:
                self.set_ledger_up(False, str(e))
            except Exception:  # the loop must survive anything
                logger.exception("seatbelt: background task error")

    async def check_fleet(self) -> None:
        """Proxies sharing a ledger must run the same policy: say so loudly when not."""
        check = getattr(self.ledger, "check_policy_digest", None)
        if check is None or self.policy is None:
            return
        warning = await check(self.policy.digest)
        if warning != self._fleet_warning:
            if warning:
                logger.warning(f"seatbelt: {warning}")
            elif self._fleet_warning:
                logger.info("seatbelt: every live proxy on this ledger runs the same policy again")
            self._fleet_warning = warning

    def mark_policy_changed(self) -> None:
        if self.policy is not None:
            get_metrics().declare_keys((k.account, k.id) for k in self.policy.keys)
        self._fleet_dirty = True
        self._budget_dirty = True

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
                await self.ledger.drain()  # the finishes handed over without waiting
                await self.retry_unfinished()  # what is left lapses with our lease
                await self.ledger.close()
            except LedgerUnavailable:
                pass
        self.audit.close()


RUNTIME = Runtime()
