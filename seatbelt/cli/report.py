"""Spend report (contract section 6): `python -m seatbelt.cli.report [--ledger URL] [--policy PATH]
[--json]`.

It opens the ledger read-only, so it can run beside a live proxy without touching its holds
and never runs recovery. Every failure is one line on stderr and exit status 1 (a usage
error: 2); a ledger that does not exist is such a failure, not a table of zeros.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from seatbelt.config.policy import Key, Policy, PolicyError, load_policy
from seatbelt.ledger import LedgerURLError, open_ledger, parse_ledger_url, redact
from seatbelt.ledger.base import Cap, CapState, Window
from seatbelt.usd.pricing import format_usd, to_usd

DEFAULT_LEDGER = "sqlite:///state/ledger.db"
DEFAULT_POLICY = "policies/default.yaml"

# The contract's seven columns; every row then carries account_cap, account_spent,
# account_remaining, account_window, account_reserved (null when the account has no cap row),
# then the USD columns (USD_FIELDS, in USD; null where no USD cap applies to the key).
FIELDS = ("account", "key", "window", "cap", "spent", "reserved", "remaining")
USD_FIELDS = ("cap_usd", "spent_usd", "reserved_usd", "remaining_usd", "window_usd",
              "account_cap_usd", "account_spent_usd", "account_remaining_usd")


def _key_cap(policy: Policy, key: Key) -> tuple[Cap, Cap | None]:
    """The key's own cap and its account's cap (None when the account has none)."""
    caps = list(policy.caps_for(key))
    own = next((c for c in caps if c.subject == f"key:{key.id}"), None)
    if own is None:  # an uncapped key is still metered under its own subject
        window = key.window if isinstance(key.window, Window) else Window()
        own = Cap(f"key:{key.id}", key.cap, window)
    acct = next((c for c in caps if c.subject == f"account:{key.account}"), None)
    return own, acct


def report_caps(policy: Policy) -> list[Cap]:
    """Every cap the report needs from the ledger, each subject once, in policy order."""
    caps: dict[str, Cap] = {}
    for key in policy.keys:
        for cap in (*_key_cap(policy, key), *policy.usd_caps_for(key)):
            if cap is not None:
                caps.setdefault(cap.subject, cap)
    return list(caps.values())


def report_rows(policy: Policy, states: Iterable[CapState]) -> list[dict[str, Any]]:
    """One row per policy key. A subject missing from `states` has spent nothing yet."""
    by_subject = {s.subject: s for s in states}

    def state(cap: Cap) -> CapState:
        """Limit and window always from the policy; spend and holds from the ledger."""
        got = by_subject.get(cap.subject)
        spent, reserved = (got.spent, got.reserved) if got is not None else (0, 0)
        return CapState(cap.subject, cap.limit, cap.window, spent, reserved)

    rows = []
    for key in policy.keys:
        own, acct = _key_cap(policy, key)
        s = state(own)
        row: dict[str, Any] = {
            "account": key.account,
            "key": key.id,
            "window": s.window.label(),
            "cap": s.limit,
            "spent": s.spent,
            "reserved": s.reserved,
            "remaining": s.remaining,
        }
        a = state(acct) if acct is not None else None
        row["account_cap"] = a.limit if a is not None else None
        row["account_spent"] = a.spent if a is not None else None
        row["account_remaining"] = a.remaining if a is not None else None
        row["account_window"] = a.window.label() if a is not None else None
        row["account_reserved"] = a.reserved if a is not None else None
        row.update(_usd_columns(policy.usd_caps_for(key), state))
        row["credit"] = max(0, -s.spent)  # a top-up beyond the spend: room, not negative use
        rows.append(row)
    return rows


def _usd_columns(caps: list[Cap], state: Any) -> dict[str, Any]:
    """USD_FIELDS of one key: its USD cap and its account's, in USD (ledger: micro-dollars)."""
    if not caps:
        return dict.fromkeys(USD_FIELDS)
    own, acct = state(caps[0]), state(caps[1])
    return {
        "cap_usd": to_usd(own.limit),
        "spent_usd": to_usd(own.spent),
        "reserved_usd": to_usd(own.reserved),
        "remaining_usd": to_usd(own.remaining),
        "window_usd": own.window.label() if own.limit is not None else None,
        "account_cap_usd": to_usd(acct.limit),
        "account_spent_usd": to_usd(acct.spent) if acct.limit is not None else None,
        "account_remaining_usd": to_usd(acct.remaining),
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned columns for people; account columns appear only when some account has a cap."""
    cols = list(FIELDS)
    if any(r.get("account_cap") is not None for r in rows):
        cols += ["account_cap", "account_remaining"]
    if any(r.get("spent_usd") is not None for r in rows):
        cols += ["cap_usd", "spent_usd", "remaining_usd"]
    text = [[_cell(r.get(c), usd=c.endswith("_usd"), spent=c.startswith("spent"))
             for c in cols] for r in rows]
    widths = [max([len(c), *(len(t[i]) for t in text)]) for i, c in enumerate(cols)]
    numeric = [c not in ("account", "key", "window") for c in cols]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(cols), *(line(t) for t in text)])


def _cell(value: Any, *, usd: bool = False, spent: bool = False) -> str:
    if value is None:
        return "-"
    if spent and value < 0:  # more topped up than spent: say credit, not "-500" spent
        return f"{_cell(-value, usd=usd)} credit"
    return format_usd(round(value * 1_000_000)) if usd else str(value)


def missing_ledger(url: str) -> str | None:
    """Why `url` names no ledger a proxy wrote (a typo, or no proxy started yet), or None.
    Reading one anyway would show every budget untouched."""
    parsed = parse_ledger_url(url)
    if parsed.kind == "memory":
        return ("a memory:// ledger lives inside one proxy process; use the mitmproxy "
                "commands (seatbelt.status, seatbelt.reset, ...) there")
    if parsed.kind == "sqlite" and parsed.path is not None and not parsed.path.exists():
        return (f"no ledger file {parsed.path}; fix: point --ledger at the proxy's "
                "seatbelt_ledger (a proxy creates the file when it starts)")
    return None


async def _snapshot(url: str, caps: list[Cap]) -> list[CapState]:
    """Read-only: no owner, no heartbeat, no recovery."""
    ledger = open_ledger(url, readonly=True)  # validates the URL (LedgerURLError)
    await ledger.open()
    try:
        return list(await ledger.snapshot(caps))
    finally:
        await ledger.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m seatbelt.cli.report", description="seatbelt spend report, one row per key"
    )
    parser.add_argument("--ledger", default=DEFAULT_LEDGER, help=f"(default {DEFAULT_LEDGER})")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"(default {DEFAULT_POLICY})")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    args = parser.parse_args(argv)
    try:
        policy = load_policy(args.policy)
    except PolicyError as e:  # its one line names the file, the line and the fix
        return _fail(str(e))
    except Exception as e:  # noqa: BLE001 (one line, never a traceback)
        return _fail(f"{args.policy}: {_one_line(e)}")
    try:
        missing = missing_ledger(args.ledger)
        if missing is not None:
            return _fail(f"--ledger: {missing}")
        states = asyncio.run(_snapshot(args.ledger, report_caps(policy)))
    except LedgerURLError as e:
        return _fail(f"--ledger: {_one_line(e)}")
    except Exception as e:  # noqa: BLE001 (one line, never a traceback)
        return _fail(f"ledger {redact(args.ledger)}: {_one_line(e)}")
    rows = report_rows(policy, states)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit 2, like every other report failure."""
        self.exit(2, f"seatbelt report: {message} (see --help)\n")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _fail(message: str) -> int:
    print(f"seatbelt report: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
