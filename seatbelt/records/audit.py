"""The audit log (contract section 7): one JSON object per finished LLM request, appended.

`audit_record` is the only way the addon builds a line, so the field set cannot drift from
the contract. Writing never raises: a full disk must not turn into a proxy crash, so a
failure is logged loudly (error once per distinct cause, warning after) and the request goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

logger = logging.getLogger("seatbelt")

AUDIT_FIELDS: tuple[str, ...] = (
    "ts",
    "flow_id",
    "account",
    "key",
    "credential_fp",
    "provider",
    "host",
    "path",
    "model",
    "stream",
    "reserved",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "usage_source",
    "overrun",
    "outcome",
    "status",
    "ttft_s",
    "duration_s",
    "edits",
)
# Appended after the contract's fields on every line; a caller may leave them out (null).
# cost_usd: USD charged for a priced model (seatbelt/usd/pricing.py), 0 when released,
# null unpriced.
EXTRA_FIELDS: tuple[str, ...] = ("cost_usd",)
_FIELD_SET = frozenset(AUDIT_FIELDS) | frozenset(EXTRA_FIELDS)
_HEX = frozenset("0123456789abcdef")
# One compact encoder (json.dumps builds a new one per call when given any option).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def format_ts(ts: float | datetime | str | None = None) -> str:
    """RFC 3339 UTC with milliseconds and `Z`, e.g. 2025-01-31T12:00:00.123Z."""
    if isinstance(ts, str):
        return ts
    if ts is None:
        ts = time.time()
    if isinstance(ts, datetime):
        dt = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    else:
        dt = datetime.fromtimestamp(float(ts), tz=UTC)
    global _second
    second = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    if _second[0] != second:  # strftime is most of the cost: once per second, not per line
        _second = (second, dt.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{_second[1]}{dt.microsecond // 1000:03d}Z"


_second: tuple[tuple[int, ...], str] = ((), "")


def strip_query(path: object) -> object:
    """The query string can carry a credential (`?key=`): the audit path never keeps it."""
    return path.split("?", 1)[0] if isinstance(path, str) else path


def _check_fp(fp: object) -> str | None:
    """Only the 12-hex prefix of a fingerprint is ever written. Anything else might be a raw
    credential passed by mistake: it is dropped (null), never written, never echoed."""
    if fp is None:
        return None
    if isinstance(fp, str) and len(fp) >= 12 and set(fp.lower()) <= _HEX:
        return fp[:12].lower()
    logger.error("seatbelt: audit credential_fp is not a hex fingerprint; written as null")
    return None


def audit_record(**fields: Any) -> dict[str, Any]:
    """A record with exactly the contract's fields, in order, then EXTRA_FIELDS (null unless
    given); `ts` defaults to now.

    ValueError names any unknown or missing field, so a change on one side is caught at once.
    """
    unknown = fields.keys() - _FIELD_SET
    if unknown:
        raise ValueError(f"audit: unknown field(s) {', '.join(sorted(unknown))}")
    fields.setdefault("ts", None)
    missing = [f for f in AUDIT_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"audit: missing field(s) {', '.join(missing)}")
    record = {f: fields[f] for f in AUDIT_FIELDS}
    for f in EXTRA_FIELDS:
        record[f] = fields.get(f)
    return _normalized(record)


def _normalized(record: dict[str, Any]) -> dict[str, Any]:
    """The written forms: RFC 3339 `ts`, no query on `path`, a 12-hex fingerprint, a list."""
    record["ts"] = format_ts(record["ts"])
    record["path"] = strip_query(record["path"])
    record["credential_fp"] = _check_fp(record["credential_fp"])
    record["edits"] = list(record["edits"] or ())
    return record


@dataclass(kw_only=True)
class AuditRecord:
    """One audit line, typed: built by one constructor per kind of line (`refused`,
    `finished`, `orphaned`, `operator`) so that no caller spells the contract's 23 fields.
    `as_line()` is the validated mapping `audit_record` makes. Not frozen, though nothing
    changes one: a frozen dataclass sets each of the 24 fields through object.__setattr__,
    4x the time of this one's __init__ (timeit), once per request. Its fields are in the
    line's order (`ts` first), so a line is a copy of the instance's dict (as_line)."""

    ts: float | str | None = None
    flow_id: str | None
    account: str | None  # None only on an orphan whose hold names no such subject
    key: str | None
    credential_fp: str | None
    provider: str | None
    host: str | None
    path: str | None
    model: str | None
    stream: bool
    reserved: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    usage_source: str
    overrun: bool
    outcome: str
    status: int | None
    ttft_s: float | None
    duration_s: float | None
    edits: tuple[str, ...] = ()
    cost_usd: float | None = None

    @classmethod
    def refused(cls, *, flow_id: str, account: str, key: str, credential_fp: str | None,
                provider: str, host: str, path: str, model: str | None, stream: bool,
                reserved: int | None, outcome: str, status: int,
                edits: tuple[str, ...] = ()) -> AuditRecord:
        """A request answered by seatbelt itself: nothing reached the upstream."""
        return cls(flow_id=flow_id, account=account, key=key, credential_fp=credential_fp,
                   provider=provider, host=host, path=path, model=model, stream=stream,
                   reserved=reserved, prompt_tokens=None, completion_tokens=None,
                   cached_tokens=None, cache_write_tokens=None, reasoning_tokens=None,
                   usage_source="none", overrun=False, outcome=outcome, status=status,
                   ttft_s=None, duration_s=0.0, edits=edits)

    @classmethod
    def finished(cls, *, flow_id: str, account: str, key: str, credential_fp: str | None,
                 provider: str, host: str, path: str, model: str | None, stream: bool,
                 reserved: int, prompt_tokens: int | None, completion_tokens: int | None,
                 cached_tokens: int | None, cache_write_tokens: int | None,
                 reasoning_tokens: int | None, usage_source: str, overrun: bool,
                 outcome: str, status: int | None, ttft_s: float | None, duration_s: float,
                 edits: tuple[str, ...], cost_usd: float | None) -> AuditRecord:
        """A request that was forwarded, settled or released."""
        return cls(flow_id=flow_id, account=account, key=key, credential_fp=credential_fp,
                   provider=provider, host=host, path=path, model=model, stream=stream,
                   reserved=reserved, prompt_tokens=prompt_tokens,
                   completion_tokens=completion_tokens, cached_tokens=cached_tokens,
                   cache_write_tokens=cache_write_tokens, reasoning_tokens=reasoning_tokens,
                   usage_source=usage_source, overrun=overrun, outcome=outcome,
                   status=status, ttft_s=ttft_s, duration_s=duration_s, edits=edits,
                   cost_usd=cost_usd)

    @classmethod
    def orphaned(cls, *, flow_id: str, account: str | None, key: str | None,
                 credential_fp: str | None, provider: str | None, host: str | None,
                 path: str | None, model: str | None, stream: bool, reserved: int | None,
                 duration_s: float, edits: tuple[str, ...],
                 cost_usd: float | None) -> AuditRecord:
        """A hold reclaimed from a request that never finished: charged whole."""
        return cls(flow_id=flow_id, account=account, key=key,
                   credential_fp=credential_fp, provider=provider, host=host, path=path,
                   model=model, stream=stream, reserved=reserved, prompt_tokens=None,
                   completion_tokens=None, cached_tokens=None, cache_write_tokens=None,
                   reasoning_tokens=None, usage_source="orphaned", overrun=False,
                   outcome="aborted", status=None, ttft_s=None, duration_s=duration_s,
                   edits=edits, cost_usd=cost_usd)

    def as_line(self) -> dict[str, Any]:
        """What audit_record(**fields) returns, without checking the field names again per
        line: the class's fields are the line's (checked once, below)."""
        return _normalized(dict(self.__dict__))  # asdict() deep-copies: ~30 us a line


if tuple(f.name for f in dataclasses.fields(AuditRecord)) != AUDIT_FIELDS + EXTRA_FIELDS:
    raise ImportError("seatbelt: AuditRecord's fields are not the audit line's, in order")


class AuditLog:
    """An append-only JSON-lines file; reopen() follows an external rotation (SIGHUP)."""

    def __init__(self) -> None:
        self.path = ""
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._reported: set[str] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def open(self, path: str) -> None:
        """Start writing to `path` ("" = off). Raises OSError if it cannot be opened, so a
        bad `seatbelt_audit` stops the proxy at start-up rather than losing the trail."""
        with self._lock:
            f = _open_append(path) if path else None
            self._close_locked()
            self.path, self._file = path, f
            self._reported.clear()

    def reopen(self) -> None:
        """Close and reopen the same path (after logrotate moved it). Never raises."""
        with self._lock:
            self._close_locked()
            if not self.path:
                return
            try:
                self._file = _open_append(self.path)
            except OSError as e:
                self._report(e)

    def close(self) -> None:
        with self._lock:
            self._close_locked()
            self.path = ""

    def write(self, record: Mapping[str, Any] | AuditRecord) -> None:
        """Append one line and flush it. Never raises."""
        if not self.path:
            return
        try:
            if isinstance(record, AuditRecord):
                rec = record.as_line()  # normalized there
            else:
                rec = dict(record)
                rec["ts"] = format_ts(rec.get("ts"))
                if "path" in rec:
                    rec["path"] = strip_query(rec["path"])
            line = _encode_line(rec)
        except (TypeError, ValueError, OverflowError, OSError, RecursionError) as e:
            # a bad value must cost one line, not the request
            self._report(e)
            return
        with self._lock:
            try:
                if self._file is None:  # a previous reopen failed: try again
                    self._file = _open_append(self.path)
                # Unbuffered: one write(2) per line, on disk (page cache) when this returns.
                view = memoryview(line)
                while view:
                    written = self._file.write(view)
                    if not written:
                        raise OSError("the audit file took no bytes")
                    view = view[written:]
            except (OSError, ValueError) as e:
                self._report(e)
                self._close_locked()

    def _report(self, e: BaseException) -> None:
        cause = f"{type(e).__name__}: {e}"
        if cause in self._reported:
            logger.warning("seatbelt: audit line lost (%s): %s", self.path, cause)
        else:
            self._reported.add(cause)
            logger.error("seatbelt: cannot write audit log %s: %s", self.path, cause)

    def _close_locked(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                self._report(e)


def _encode_line(record: Mapping[str, Any]) -> bytes:
    """One UTF-8 JSON line. A lone surrogate (JSON's "\\ud800" escape, sent in by a
    client as a model name) cannot be UTF-8: that line is written with \\u escapes
    instead of being lost."""
    text = _ENCODER.encode(record)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (_ASCII_ENCODER.encode(record) + "\n").encode("ascii")


def _open_append(path: str) -> IO[bytes]:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return open(path, "ab", buffering=0)
