"""Budget ledgers: one interface (base.py), chosen by URL.

`open_ledger(url)` builds a ledger without opening it (the caller awaits `.open()`),
so a bad URL fails at configure time, before any I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .base import (
    Cap,
    CapRefusal,
    CapState,
    HoldInfo,
    Ledger,
    LedgerUnavailable,
    Reservation,
    Settlement,
    UsageSource,
    Window,
    WindowKind,
)

__all__ = [
    "Cap",
    "CapRefusal",
    "CapState",
    "HoldInfo",
    "Ledger",
    "LedgerURL",
    "LedgerURLError",
    "LedgerUnavailable",
    "Reservation",
    "Settlement",
    "UsageSource",
    "Window",
    "WindowKind",
    "open_ledger",
    "parse_ledger_url",
    "redact",
]

ACCEPTED = (
    "use memory://, sqlite:///relative/path.db, sqlite:////abs/path.db "
    "or redis://HOST:PORT/DB (rediss:// for TLS)"
)
_NAME = re.compile(r"[A-Za-z0-9._-]+")


class LedgerURLError(ValueError):
    """A ledger URL that names no usable backend; the message is one line and says the fix."""


@dataclass(frozen=True)
class LedgerURL:
    """A parsed ledger URL. `url` is kept for the backend only: it may hold a password."""

    kind: Literal["memory", "sqlite", "redis"]
    url: str
    path: Path | None = None  # sqlite: relative paths are relative to the working directory
    name: str | None = None  # memory: shared store name, None = private
    host: str | None = None
    port: int | None = None
    db: int | None = None
    tls: bool = False

    def __repr__(self) -> str:  # never show a password
        return f"LedgerURL({self.kind}, {redact(self.url)})"


def redact(url: str) -> str:
    """The URL without its user/password part, safe for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparseable ledger URL>" if "@" in url else url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def parse_ledger_url(url: str) -> LedgerURL:
    """Validate a ledger URL; raises LedgerURLError naming the accepted forms."""
    if not isinstance(url, str) or not url.strip():
        raise LedgerURLError(f"empty ledger URL: {ACCEPTED}")
    url = url.strip()
    shown = redact(url)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "memory":
        name = url[len("memory://") :]
        if name and not _NAME.fullmatch(name):
            raise LedgerURLError(f"bad memory ledger name in {shown!r}: {ACCEPTED}")
        return LedgerURL("memory", url, name=name or None)
    if scheme == "sqlite":
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or not rest[1:] or "?" in rest or "#" in rest:
            raise LedgerURLError(f"bad sqlite ledger URL {shown!r}: {ACCEPTED}")
        path = rest[1:]  # sqlite:///rel -> "rel"; sqlite:////abs -> "/abs"
        if path.endswith("/"):
            raise LedgerURLError(f"sqlite ledger URL {shown!r} names a directory: {ACCEPTED}")
        return LedgerURL("sqlite", url, path=Path(path))
    if scheme in ("redis", "rediss"):
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or 6379
            db_text = parts.path.strip("/") or "0"
            db = int(db_text) if db_text.isdigit() else -1
        except ValueError:
            host, port, db = None, 0, -1
        if not host or db < 0 or parts.query or parts.fragment:
            raise LedgerURLError(f"bad redis ledger URL {shown!r}: {ACCEPTED}")
        return LedgerURL("redis", url, host=host, port=port, db=db, tls=scheme == "rediss")
    raise LedgerURLError(f"unknown ledger URL {shown!r}: {ACCEPTED}")


def open_ledger(url: str, *, readonly: bool = False, **kw: Any) -> Ledger:
    """Build the ledger a URL names (not opened yet: the caller awaits `.open()`).

    `readonly=True` (report, tests): no owner, no heartbeat, no reclaim, no writes.
    Other keywords (clock, lease_seconds, max_hold_seconds, ...) go to the backend.
    """
    parsed = parse_ledger_url(url)
    if parsed.kind == "memory":
        from .memory import MemoryLedger

        return MemoryLedger(parsed.name, readonly=readonly, **kw)
    if parsed.kind == "sqlite":
        from .sqlite import SqliteLedger

        assert parsed.path is not None
        return SqliteLedger(parsed.path, readonly=readonly, **kw)
    try:
        from .redis import RedisLedger  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as e:
        if e.name == "redis":
            raise LedgerURLError(
                "the redis ledger needs the 'redis' package (pip install redis)"
            ) from None
        raise LedgerURLError(
            f"redis ledger {redact(url)!r} is not available yet in this seatbelt: "
            "use memory:// or sqlite:///path.db"
        ) from None
    return RedisLedger(parsed.url, readonly=readonly, **kw)  # type: ignore[no-any-return]
