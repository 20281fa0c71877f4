"""Commands for the command bar of mitmweb and the mitmproxy console.

    seatbelt.status   every key: window, cap, spent, reserved, remaining
    seatbelt.reload   re-read the policy file now; a broken one keeps the running policy
    seatbelt.reset KEY            spend of KEY (or account:ID) in its window back to zero
    seatbelt.topup KEY TOKENS     TOKENS more room for KEY (a negative spend adjustment)
    seatbelt.topup_usd KEY USD    the same in dollars, for a cap_usd budget
    seatbelt.holds                every live hold, all proxies on the ledger
    seatbelt.release HOLD_ID      drop a stuck hold (a request still running pays when it ends)

The operator actions (seatbelt/cli/admin.py) run on the proxy's own ledger as a background task:
the command answers at once, the result goes to the event log and one audit line.

mitmproxy calls commands synchronously on the event loop, while the ledger is async. So
`seatbelt.status` never waits for the ledger: it answers from the budget snapshot the
runtime's background task takes within a second of any reservation or settlement (and
every few seconds anyway; the same rows as `seatbelt.cli.report` and the budget gauges), says how
old it is, and asks for a fresh one for the next call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import command, exceptions

from seatbelt.cli import admin as ops
from seatbelt.cli.report import format_table
from seatbelt.config import livepolicy
from seatbelt.ledger.base import HoldInfo, LedgerUnavailable
from seatbelt.runtime import Runtime
from seatbelt.usd.pricing import PriceError, parse_usd_argument

logger = logging.getLogger("seatbelt")


def status_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One self-contained line per key: readable as a JSON list (mitmweb) or a grid (console)."""
    out = []
    for r in rows:
        line = (
            f"{r['account']}/{r['key']}: window={r['window']} cap={_n(r['cap'])} "
            f"spent={r['spent']} reserved={r['reserved']} remaining={_n(r['remaining'])}"
        )
        if r.get("account_cap") is not None:
            line += (
                f" | account cap={r['account_cap']} spent={r['account_spent']} "
                f"reserved={r['account_reserved']} remaining={r['account_remaining']}"
            )
        if r.get("spent_usd") is not None:
            line += (
                f" | usd cap={_n(r.get('cap_usd'))} spent={r['spent_usd']} "
                f"reserved={r.get('reserved_usd')} remaining={_n(r.get('remaining_usd'))}"
            )
        out.append(line)
    return out


def _n(value: int | None) -> str:
    return "none" if value is None else str(value)


class SeatbeltCommands:
    """The commands; `runtime` is looked up at each call so tests can swap the runtime."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self.runtime = runtime
        self._holds: list[HoldInfo] = []
        self._holds_at: float | None = None  # time.monotonic() of the last holds read

    @command.command("seatbelt.status")
    def status(self) -> Sequence[str]:
        """Budget of every policy key: window, cap, spent, reserved, remaining."""
        rt = self.runtime()
        if rt.policy is None:
            raise exceptions.CommandError("seatbelt is not configured (see the event log)")
        rt.mark_budgets_dirty()  # the background task refreshes within a second
        if rt.last_report_at is None:
            return ["seatbelt: the ledger has not been read yet; run seatbelt.status again"]
        rows = rt.last_report  # report.report_rows of the last snapshot: the report's rows
        age = max(0.0, time.monotonic() - rt.last_report_at)
        head = f"seatbelt: {len(rows)} key(s), ledger read {age:.1f} s ago"
        if not rt.ready():
            head += " (ledger unavailable now: figures may be stale)"
        logger.info(f"{head}\n{format_table(rows)}")
        return [head, *status_lines(rows)]

    @command.command("seatbelt.reload")
    def reload(self) -> str:
        """Re-read the policy file now; if it is broken, the running policy stays."""
        rt = self.runtime()
        if rt.settings is None or rt.policy is None:
            raise exceptions.CommandError("seatbelt is not configured; nothing to reload")
        # The same path as a file change: one-line error, last good policy kept, audited.
        ok, message = livepolicy.reload(rt, "command")
        if not ok:
            raise exceptions.CommandError(message)
        return message

    # -- operator actions (seatbelt/cli/admin.py): audited, run on the proxy's ledger ----------

    def _ready(self) -> Runtime:
        rt = self.runtime()
        if rt.policy is None or rt.ledger is None or not rt.ledger_open:
            raise exceptions.CommandError("seatbelt: the ledger is not open (see the event log)")
        return rt

    def _target(self, rt: Runtime, text: str) -> ops.Target:
        assert rt.policy is not None
        try:
            return ops.resolve_target(rt.policy, text)
        except ops.OperatorError as e:
            raise exceptions.CommandError(str(e)) from None

    def _act(self, rt: Runtime, what: str, action: Callable[[Any], Any]) -> str:
        async def run() -> None:
            try:
                result = await action(rt.ledger)
            except (ops.OperatorError, LedgerUnavailable) as e:
                logger.error(f"seatbelt: {what} failed: {e}")
                return
            rt.audit.write(ops.audit_line(result, via="command"))
            rt.mark_budgets_dirty()
            logger.info(result.message)

        rt.spawn(run())
        return f"seatbelt: {what} started; the result is in the event log and the audit log"

    @command.command("seatbelt.reset")
    def reset(self, target: str) -> str:
        """Spend of a key (or account:ID) in its current window back to zero; audited."""
        rt = self._ready()
        t = self._target(rt, target)
        return self._act(rt, f"reset of {t.label}", lambda ledger: ops.reset(ledger, t))

    @command.command("seatbelt.topup")
    def topup(self, target: str, tokens: int) -> str:
        """TOKENS more room for a key (or account:ID) in its current window; audited."""
        rt = self._ready()
        t = self._target(rt, target)
        if tokens <= 0:
            raise exceptions.CommandError("seatbelt.topup: TOKENS must be a positive number")
        return self._act(rt, f"top-up of {t.label} by {tokens} tokens",
                         lambda ledger: ops.topup(ledger, t, tokens))

    @command.command("seatbelt.topup_usd")
    def topup_usd(self, target: str, usd: str) -> str:
        """USD more room for a key's (or account's) cap_usd budget; audited."""
        rt = self._ready()
        t = self._target(rt, target)
        try:
            micro = parse_usd_argument(usd)
        except PriceError as e:
            raise exceptions.CommandError(f"seatbelt.topup_usd: {e}") from None
        if t.usd is None:
            raise exceptions.CommandError(f"seatbelt.topup_usd: {t.label} has no cap_usd")
        return self._act(rt, f"top-up of {t.label} by ${usd.strip().lstrip('$')}",
                         lambda ledger: ops.topup(ledger, t, micro, usd=True))

    @command.command("seatbelt.release")
    def release(self, hold_id: str) -> str:
        """Drop one live hold now (seatbelt.holds lists them); audited."""
        rt = self._ready()
        return self._act(rt, f"release of hold {hold_id.strip()}",
                         lambda ledger: ops.release(ledger, hold_id.strip()))

    @command.command("seatbelt.holds")
    def holds(self) -> Sequence[str]:
        """Every live hold on the ledger (all proxies), as last read; reads it again."""
        rt = self._ready()

        async def read() -> None:
            try:
                self._holds = await rt.ledger.holds()  # type: ignore[union-attr]
                self._holds_at = time.monotonic()
            except LedgerUnavailable as e:
                logger.error(f"seatbelt: cannot list holds: {e}")

        rt.spawn(read())
        if self._holds_at is None:
            return ["seatbelt: reading the holds now; run seatbelt.holds again"]
        age = max(0.0, time.monotonic() - self._holds_at)
        head = f"seatbelt: {len(self._holds)} live hold(s), read {age:.1f} s ago"
        return [head, *ops.hold_lines(self._holds)]
