"""Operator actions on the budget ledger, audited: reset, top up, list holds, release a hold.

    python -m seatbelt.cli.admin [--ledger URL] [--policy PATH] [--audit PATH] ACTION ...
      reset TARGET             spend of TARGET's current window back to zero (tokens and,
                               where it has a USD budget, USD); a top-up is not taken back
      topup TARGET AMOUNT      AMOUNT more tokens of room (AMOUNT dollars with --usd): a
                               negative spend adjustment, so balance keys get a real top-up
      holds [--json]           every live hold (all proxies)
      release HOLD_ID          drop a stuck hold now (a request still running is charged its
                               real usage when it ends: a release never makes it free)
    TARGET is a key id, `key:ID` or `account:ID`.

The same actions are mitmproxy commands (seatbelt/ui/commands.py): seatbelt.reset, seatbelt.topup,
seatbelt.topup_usd, seatbelt.holds, seatbelt.release. Each action writes ONE audit line
(outcome operator_reset / operator_topup / operator_release) with the operator's OS user.

Beside a running proxy: the CLI never calls the ledger's open() (which would register an
owner and reclaim other proxies' holds). Listing opens the ledger read-only; a write
(adjust, release) runs as a single call on a ledger that is never opened, then closed, so
it leaves no owner behind. `memory://` ledgers live inside one proxy: use the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from seatbelt.cli.report import missing_ledger
from seatbelt.config.policy import Policy, PolicyError, load_policy
from seatbelt.ledger import LedgerURLError, open_ledger, redact
from seatbelt.ledger.base import Cap, HoldInfo, Ledger
from seatbelt.records.audit import AuditLog, audit_record
from seatbelt.usd.pricing import PriceError, format_usd, parse_usd_argument, to_usd

DEFAULT_LEDGER = "sqlite:///state/ledger.db"
DEFAULT_POLICY = "policies/default.yaml"
DEFAULT_AUDIT = "state/audit.jsonl"


class OperatorError(ValueError):
    """An action that cannot run; the text is one line and says the fix."""


@dataclass(frozen=True)
class Target:
    """What an action adjusts: a key's or an account's token cap, and its USD cap if any."""

    kind: str  # "key" | "account"
    id: str
    account: str
    tokens: Cap
    usd: Cap | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass
class Result:
    """What an action did: for the audit line, the command's answer and the CLI's output."""

    outcome: str  # operator_reset | operator_topup | operator_release
    account: str | None
    key: str | None
    target: str
    message: str
    adjust_tokens: int | None = None
    adjust_usd: int | None = None  # micro-dollars
    spent_after: int | None = None
    spent_usd_after: int | None = None  # micro-dollars
    hold: HoldInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_target(policy: Policy, text: str) -> Target:
    """A key id, `key:ID` or `account:ID` of the policy, with the caps the ledger uses."""
    kind, sep, name = text.strip().partition(":")
    if not sep:
        kind, name = "key", text.strip()
    if kind == "key":
        key = next((k for k in policy.keys if k.id == name), None)
        if key is None:
            raise OperatorError(f"no key {name!r} in policy {policy.path}; name a key id or "
                                "account:ID (./run.sh report lists them)")
        usd_caps = policy.usd_caps_for(key)
        return Target("key", key.id, key.account, policy.caps_for(key)[0],
                      usd_caps[0] if usd_caps else None)
    if kind == "account":
        account = policy.accounts.get(name)
        if account is None:
            raise OperatorError(f"no account {name!r} in policy {policy.path}")
        usd: Cap | None = None
        for key in policy.keys:
            caps = policy.usd_caps_for(key) if key.account == name else []
            if caps:
                usd = caps[1]
                break
        if usd is None and account.cap_usd is not None:
            usd = Cap(f"usd:account:{name}", account.cap_usd, account.window_usd)
        return Target("account", name, name, Cap(f"account:{name}", account.cap,
                                                  account.window), usd)
    raise OperatorError(f"{text!r} is not a key id, key:ID or account:ID")


async def _spent(ledger: Ledger, cap: Cap) -> int:
    (state,) = await ledger.snapshot([cap])
    return state.spent


async def reset(ledger: Ledger, target: Target) -> Result:
    """Cancel the spend inside the current window (down to zero; credit stays)."""
    spent = await _spent(ledger, target.tokens)
    tokens = -spent if spent > 0 else 0
    after = await ledger.adjust(target.tokens, tokens) if tokens else spent
    usd = usd_after = None
    if target.usd is not None:
        spent_usd = await _spent(ledger, target.usd)
        usd = -spent_usd if spent_usd > 0 else 0
        usd_after = await ledger.adjust(target.usd, usd) if usd else spent_usd
    text = f"seatbelt: reset {target.label}: {-tokens} tokens cancelled, spent now {after}"
    if usd is not None:
        text += f"; {format_usd(-usd)} cancelled, spent now {format_usd(usd_after)}"
    return Result("operator_reset", target.account, _key(target), target.label, text,
                  tokens, usd, after, usd_after)


async def topup(ledger: Ledger, target: Target, amount: int, *, usd: bool = False) -> Result:
    """`amount` more room (tokens, or micro-dollars with usd=True) in the current window."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise OperatorError(f"a top-up needs a positive amount, got {amount!r}")
    if usd:
        if target.usd is None:
            raise OperatorError(f"{target.label} has no USD budget (cap_usd) to top up")
        after = await ledger.adjust(target.usd, -amount)
        return Result("operator_topup", target.account, _key(target), target.label,
                      f"seatbelt: topped up {target.label} by {format_usd(amount)}; "
                      f"{_spent_now(after, usd=True)}{_room(target.usd, after, usd=True)}",
                      adjust_usd=-amount, spent_usd_after=after)
    after = await ledger.adjust(target.tokens, -amount)
    return Result("operator_topup", target.account, _key(target), target.label,
                  f"seatbelt: topped up {target.label} by {amount} tokens; "
                  f"{_spent_now(after)}{_room(target.tokens, after)}", adjust_tokens=-amount,
                  spent_after=after)


def _spent_now(spent: int, *, usd: bool = False) -> str:
    """Spend beyond a top-up is credit: "credit now 500", never "spent now -500"."""
    amount = format_usd(abs(spent)) if usd else str(abs(spent))
    return f"credit now {amount}" if spent < 0 else f"spent now {amount}"


def _room(cap: Cap, spent: int, *, usd: bool = False) -> str:
    if cap.limit is None:
        return " (no cap)"
    left = cap.limit - spent
    return f" of {format_usd(cap.limit) if usd else cap.limit} (before holds: " + (
        f"{format_usd(left)} left)" if usd else f"{left} left)")


def _key(target: Target) -> str | None:
    return target.id if target.kind == "key" else None


async def release(ledger: Ledger, hold_id: str) -> Result:
    """Drop one live hold (any proxy's) without spend."""
    hold = next((h for h in await ledger.holds() if h.hold_id == hold_id), None)
    if hold is None:
        raise OperatorError(f"no live hold {hold_id!r} (seatbelt.holds / `holds` lists them)")
    await ledger.release(hold_id)
    names = _names(hold)
    usd = _is_usd(hold)
    amount = format_usd(hold.amount) if usd else f"{hold.amount} tokens"
    return Result("operator_release", names.get("account"), names.get("key"),
                  ",".join(hold.subjects),
                  f"seatbelt: released hold {hold_id} ({amount} of "
                  f"{', '.join(hold.subjects)}, owner {hold.owner[:12]})", hold=hold)


def _is_usd(hold: HoldInfo) -> bool:
    return bool(hold.subjects) and all(s.startswith("usd:") for s in hold.subjects)


def _names(hold: HoldInfo) -> dict[str, str]:
    """{"key": ID, "account": ID} from a hold's subjects (token or USD)."""
    out: dict[str, str] = {}
    for subject in hold.subjects:
        kind, _, name = subject.removeprefix("usd:").partition(":")
        out.setdefault(kind, name)
    return out


def hold_rows(holds: Sequence[HoldInfo], now: float | None = None) -> list[dict[str, Any]]:
    """Holds as plain rows (JSON and the command's lines); USD amounts in dollars."""
    now = time.time() if now is None else now
    rows = []
    for h in holds:
        usd = _is_usd(h)
        names = _names(h)
        rows.append({
            "hold_id": h.hold_id,
            "key": names.get("key"),
            "account": names.get("account"),
            "unit": "usd" if usd else "tokens",
            "amount": to_usd(h.amount) if usd else h.amount,
            "subjects": list(h.subjects),
            "owner": h.owner[:12],
            "age_s": round(max(0.0, now - h.created), 1),
        })
    return rows


HOLD_COLUMNS = ("hold_id", "amount", "key", "account", "age", "owner")


def hold_lines(holds: Sequence[HoldInfo], now: float | None = None) -> list[str]:
    """A header, then one aligned line per hold (the command bar's seatbelt.holds too)."""
    rows = [[r["hold_id"],
             format_usd(round(r["amount"] * 1_000_000)) if r["unit"] == "usd"
             else f"{r['amount']} tokens",
             str(r["key"]), str(r["account"]), f"{r['age_s']}s", r["owner"]]
            for r in hold_rows(holds, now)]
    if not rows:
        return ["seatbelt: no live holds"]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(HOLD_COLUMNS)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in [list(HOLD_COLUMNS), *rows]]


def operator_name() -> str | None:
    """The OS user running the action (the one behind sudo when there is one)."""
    sudo = os.environ.get("SUDO_USER")
    if sudo:
        return sudo
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 (no user database entry: unknown, not an error)
        return None


def audit_line(result: Result, *, via: str, operator: str | None = None) -> dict[str, Any]:
    """One audit line: the contract's fields (null where they do not apply), then what the
    operator did: operator, via, target, adjust_tokens, adjust_usd, hold_id, ..."""
    record = audit_record(
        flow_id=f"operator:{uuid.uuid4().hex[:16]}", account=result.account, key=result.key,
        credential_fp=None, provider=None, host=None, path=None, model=None, stream=False,
        reserved=None, prompt_tokens=None, completion_tokens=None, cached_tokens=None,
        cache_write_tokens=None, reasoning_tokens=None, usage_source="none", overrun=False,
        outcome=result.outcome, status=None, ttft_s=None, duration_s=0.0, edits=[],
        cost_usd=None,
    )
    record.update(
        operator=operator if operator is not None else operator_name(),
        via=via,
        target=result.target,
        adjust_tokens=result.adjust_tokens,
        adjust_usd=to_usd(result.adjust_usd),
        spent_after=result.spent_after,
        spent_usd_after=to_usd(result.spent_usd_after),
    )
    if result.hold is not None:
        hold = result.hold
        record.update(hold_id=hold.hold_id, hold_owner=hold.owner[:12],
                      hold_amount=to_usd(hold.amount) if _is_usd(hold) else hold.amount,
                      hold_unit="usd" if _is_usd(hold) else "tokens")
    return record


# -- CLI ---------------------------------------------------------------------------------


async def _write_action(url: str, action: Any) -> Result:
    """One write on a ledger that is never opened (no owner, no reclaim), then closed."""
    ledger = open_ledger(url)
    try:
        return await action(ledger)
    finally:
        await ledger.close()


async def _read_holds(url: str) -> list[HoldInfo]:
    ledger = open_ledger(url, readonly=True)
    await ledger.open()
    try:
        return await ledger.holds()
    finally:
        await ledger.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m seatbelt.cli.admin",
                     description="seatbelt operator actions (audited)")
    parser.add_argument("--ledger", default=DEFAULT_LEDGER, help=f"(default {DEFAULT_LEDGER})")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"(default {DEFAULT_POLICY})")
    parser.add_argument("--audit", default=DEFAULT_AUDIT,
                        help=f"audit log the action is appended to (default {DEFAULT_AUDIT})")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = sub.add_parser("reset", help="spend of the current window back to zero")
    p.add_argument("target", help="key id, key:ID or account:ID")
    p = sub.add_parser("topup", help="more room: a negative spend adjustment")
    p.add_argument("target", help="key id, key:ID or account:ID")
    p.add_argument("amount", help="tokens (dollars with --usd)")
    p.add_argument("--usd", action="store_true", help="AMOUNT is US dollars (cap_usd)")
    p = sub.add_parser("holds", help="list live holds")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("release", help="drop one live hold")
    p.add_argument("hold_id")
    args = parser.parse_args(argv)

    try:
        missing = missing_ledger(args.ledger)
    except LedgerURLError as e:
        return _fail(f"--ledger: {e}")
    if missing is not None:
        return _fail(f"--ledger: {missing}")
    shown = redact(args.ledger)
    try:
        if args.action == "holds":
            holds = asyncio.run(_read_holds(args.ledger))
            if args.json:
                print(json.dumps(hold_rows(holds), indent=2))
            else:
                print("\n".join(hold_lines(holds)))
            return 0
        if args.action == "release":
            result = asyncio.run(_write_action(args.ledger,
                                               lambda ledger: release(ledger, args.hold_id)))
        else:
            try:
                policy = load_policy(args.policy)
            except PolicyError as e:
                return _fail(str(e))
            target = resolve_target(policy, args.target)
            if args.action == "reset":
                result = asyncio.run(_write_action(args.ledger,
                                                   lambda ledger: reset(ledger, target)))
            else:
                amount = _amount(args.amount, usd=args.usd)
                result = asyncio.run(_write_action(
                    args.ledger, lambda ledger: topup(ledger, target, amount, usd=args.usd)))
    except OperatorError as e:
        return _fail(str(e))
    except Exception as e:  # noqa: BLE001 (one line, never a traceback)
        return _fail(f"ledger {shown}: {' '.join(str(e).split()) or type(e).__name__}")
    if not write_audit(args.audit, audit_line(result, via="cli")):
        print(f"seatbelt operator: warning: could not write the audit line to {args.audit}",
              file=sys.stderr)
    print(result.message)
    return 0


def write_audit(path: str, record: dict[str, Any]) -> bool:
    """Append one line to the audit file a proxy also appends to (one write per line)."""
    if not path:
        return True
    log = AuditLog()
    try:
        log.open(path)
    except OSError:
        return False
    try:
        log.write(record)
    finally:
        log.close()
    return True


def _amount(text: str, *, usd: bool) -> int:
    if usd:
        try:
            return parse_usd_argument(text)
        except PriceError as e:
            raise OperatorError(str(e)) from None
    if not text.strip().isdigit() or int(text) <= 0:
        raise OperatorError(f"{text!r} is not a positive whole number of tokens (dollars: "
                            "add --usd)")
    return int(text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"seatbelt operator: {message} (see --help)\n")


def _fail(message: str) -> int:
    print(f"seatbelt operator: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

