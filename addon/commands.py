"""Commands for the command bar of mitmweb and the mitmproxy console.

    seatbelt.status   every key: window, cap, spent, reserved, remaining
    seatbelt.reload   re-read the policy file now; a broken one keeps the running policy

mitmproxy calls commands synchronously on the event loop, while the ledger is async. So
`seatbelt.status` never waits for the ledger: it answers from the budget snapshot the
runtime's background task takes within a second of any reservation or settlement (and
every few seconds anyway; the same rows as `addon.report` and the budget gauges), says how
old it is, and asks for a fresh one for the next call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import command, exceptions

from addon.policy import PolicyError, load_policy
from addon.report import format_table
from addon.runtime import Runtime

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
        out.append(line)
    return out


def _n(value: int | None) -> str:
    return "none" if value is None else str(value)


class SeatbeltCommands:
    """The commands; `runtime` is looked up at each call so tests can swap the runtime."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self.runtime = runtime

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
        path = rt.settings.policy_path
        try:
            policy = load_policy(path, hashes_only=rt.settings.hashes_only)
        except (PolicyError, ValueError, OSError) as e:
            message = (
                f"seatbelt.reload refused: {' '.join(str(e).split())}; the running policy "
                f"({len(rt.policy.keys)} keys) stays in force"
            )
            logger.error(message)
            raise exceptions.CommandError(message) from None
        for warning in policy.warnings:
            logger.warning(f"seatbelt: {warning}")
        rt.policy = policy
        rt.mark_budgets_dirty()
        message = f"seatbelt: policy {path} reloaded ({len(policy.keys)} keys)"
        logger.info(message)
        return message
