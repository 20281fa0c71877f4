"""Shared ledger in Redis (`redis://[USER:PASSWORD@]HOST:PORT/DB`, `rediss://` for TLS).

Many proxies, one budget: every instance that points at the same Redis enforces the
same caps. Each operation is one Lua script (redis_scripts/*.lua, run with EVALSHA),
so a reservation holds on every cap it touches or on none, whatever the interleaving
of proxies; settle and release are one script each, and so is the heartbeat/reclaim.

Time: Redis server time (TIME inside the scripts) decides window edges, hold ages and
leases, never a proxy's clock. A client clock is a test-only device: the `clock=`
argument (and the methods' `now=`) are refused with ClockRefused unless the process
runs with SEATBELT_TEST_CLOCK=1, which only the test-suite sets.

Keys: all under one hash tag, `{seatbelt}:` (the `namespace` argument), so every key a
script touches lives in one Redis Cluster slot. That is the honest choice: a reserve
touches a key cap and its account cap, and a reclaim touches any hold of any subject,
so no finer tag keeps the scripts single-slot. The ledger therefore lives on one
Cluster shard (replicas give failover, not write scaling; one shard does ~10^4 pairs/s).

    {seatbelt}:spend:<subject>  hash bucket -> settled tokens (time buckets, pruned)
    {seatbelt}:held:<subject>   live holds on the subject (sum of amounts)
    {seatbelt}:hold:<id>        hash owner, amount, created, charges, [orphaned]
    {seatbelt}:holds            zset live hold id -> created
    {seatbelt}:orphans          zset reclaimed hold id -> when (forgotten after a day)
    {seatbelt}:owners           zset owner -> last heartbeat
    {seatbelt}:owner:<owner>    set of the owner's live hold ids
    {seatbelt}:busy             set of owners with live holds
    {seatbelt}:digests          hash owner -> policy digest (fleet check)
    {seatbelt}:epoch, :schema   store incarnation, layout version

Faults: every call has a short deadline (`timeout`, default 0.5 s per socket operation,
twice that per call) and no automatic retries; a refused connection, a timeout, an
authentication or any Redis error raises LedgerUnavailable with a one-line reason that
never contains the password. The connection pool reconnects by itself on the next call.
A settle/release whose answer was lost is queued on `unfinished` (retry.py) and retried by
the next heartbeat (both are idempotent), and a reserve whose answer was lost is released
then, so a timeout never pins a budget for the hold's whole maximum age.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from functools import cache
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import redact
from . import windows as w
from .base import (
    Cap,
    CapRefusal,
    CapState,
    HoldIds,
    HoldInfo,
    Ledger,
    LedgerUnavailable,
    Reservation,
    Settlement,
    UsageSource,
    new_owner,
)
from .retry import Unfinished

log = logging.getLogger("seatbelt")

SCHEMA_VERSION = "1"
TEST_CLOCK_ENV = "SEATBELT_TEST_CLOCK"
SCRIPTS = ("reserve", "finish", "heartbeat", "close", "snapshot", "holds", "digest", "adjust")
_NAMESPACE = re.compile(r"[A-Za-z0-9._-]+")
_SCRIPT_DIR = Path(__file__).with_name("redis_scripts")


class ClockRefused(RuntimeError):
    """A client-side clock was asked for outside a test run."""


def test_clock_enabled() -> bool:
    """Only the test-suite sets SEATBELT_TEST_CLOCK=1 (exactly "1")."""
    return os.environ.get(TEST_CLOCK_ENV) == "1"


def _refuse_clock(what: str) -> ClockRefused:
    return ClockRefused(
        f"redis ledger: {what} given, but Redis server time decides window edges; a "
        f"client clock is for tests only and needs {TEST_CLOCK_ENV}=1 in the environment"
    )


@cache
def script_source(name: str) -> str:
    """The Lua of one operation: the shared helpers, then the operation's body."""
    common = (_SCRIPT_DIR / "common.lua").read_text()
    return common + "\n" + (_SCRIPT_DIR / f"{name}.lua").read_text()


class RedisLedger(Ledger):
    """Ledger shared by many proxies through one Redis; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        readonly: bool = False,
        lease_seconds: float = 30.0,
        max_hold_seconds: float = 3600.0,
        clock: Callable[[], float] | None = None,
        timeout: float = 0.5,
        namespace: str = "seatbelt",
    ) -> None:
        if clock is not None and not test_clock_enabled():
            raise _refuse_clock("a clock")
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"redis ledger namespace must match {_NAMESPACE.pattern}")
        super().__init__()
        self.owner = new_owner()
        self._hold_ids = HoldIds()
        self.url = url
        self.shown = redact(url)
        self.readonly = readonly
        self.lease_seconds = lease_seconds
        self.max_hold_seconds = max_hold_seconds
        self.timeout = timeout  # per socket operation; a call gets twice that
        self.prefix = "{" + namespace + "}:"
        self.reclaimed_total = 0
        self.policy_digest = ""
        self._clock = clock
        self._secret = unquote(urlsplit(url).password or "")
        self._epoch = "unknown:" + uuid.uuid4().hex  # the store's incarnation, once known
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"RedisLedger({self.shown})"

    # -- connection and fault handling -------------------------------------------------

    def _connection(self) -> Any:
        """The client of the running loop (redis.asyncio connections are bound to one)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                decode_responses=True,
                client_name=f"seatbelt-{self.owner[:12]}",
            )
            self._scripts = {
                name: self._client.register_script(script_source(name)) for name in SCRIPTS
            }
            self._loop = loop
        return self._client

    def _reason(self, e: BaseException) -> str:
        """One line, password scrubbed; timeouts say so uniformly."""
        if isinstance(e, (asyncio.TimeoutError, RedisTimeoutError)):
            return f"redis ledger {self.shown}: no answer within {self.timeout:g}s (timeout)"
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if self._secret:
            text = text.replace(self._secret, "***")
        return f"redis ledger {self.shown}: {text}"

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One script, within the deadline; every fault becomes LedgerUnavailable."""
        try:
            self._connection()
            return await asyncio.wait_for(self._twice(name, keys, args), 2 * self.timeout)
        except (TimeoutError, RedisError, OSError) as e:
            raise LedgerUnavailable(self._reason(e)) from None

    async def _twice(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """A pooled connection that went stale (Redis restarted, an idle timeout) fails
        once with a connection error; the pool then dials afresh, so try once more.
        Safe because every script is idempotent (reserve: by its client-made hold id).
        Timeouts are not retried: the deadline is the deadline."""
        script = self._scripts[name]
        try:
            return await script(keys=list(keys), args=[self.prefix, *args])
        except RedisConnectionError as e:
            if isinstance(e, RedisTimeoutError):
                raise
            return await script(keys=list(keys), args=[self.prefix, *args])

    def _now(self, now: float | None) -> str:
        """'' = server time; a number only from the test clock (see ClockRefused)."""
        if now is None and self._clock is None:
            return ""
        if not test_clock_enabled():
            raise _refuse_clock("a time (now=)" if now is not None else "a clock")
        assert self._clock is not None or now is not None
        return repr(float(now if now is not None else self._clock()))  # type: ignore[misc]

    def _writable(self) -> None:
        if self.readonly:
            raise LedgerUnavailable("ledger was opened read-only")

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- the Ledger interface ------------------------------------------------------------

    async def open(self) -> list[HoldInfo]:
        if self.readonly:
            await self._ping_or_raise()
            return []
        return await self.heartbeat()

    async def _ping_or_raise(self) -> None:
        try:
            await asyncio.wait_for(self._connection().ping(), 2 * self.timeout)
        except (TimeoutError, RedisError, OSError) as e:
            raise LedgerUnavailable(self._reason(e)) from None

    async def close(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            if not self.readonly and self._loop is asyncio.get_running_loop():
                try:
                    await self._run(
                        "close",
                        [self._k("owners"), self._k("digests"), self._k("owner", self.owner)],
                        [self.owner],
                    )
                except LedgerUnavailable as e:
                    log.warning("%s (owner left registered; its lease will lapse)", e)
        finally:
            self._client, self._scripts, self._loop = None, {}, None
            try:
                closer = getattr(client, "aclose", None) or client.close
                await closer()
            except (RedisError, OSError, RuntimeError):
                pass

    async def reserve(
        self, caps: Sequence[Cap], amount: int, *, now: float | None = None
    ) -> Reservation:
        w.check_reserve(caps, amount)
        self._writable()
        when = self._now(now)
        hold_id = self._hold_ids()
        keys = [
            self._k("hold", hold_id),
            self._k("holds"),
            self._k("owners"),
            self._k("busy"),
            self._k("owner", self.owner),
            self._k("epoch"),
        ]
        args: list[Any] = [when, self.owner, hold_id, str(amount), self._epoch]
        for cap in caps:
            keys += [self._k("spend", cap.subject), self._k("held", cap.subject)]
            args += [
                cap.subject,
                "" if cap.limit is None else str(cap.limit),
                cap.window.kind,
                str(cap.window.seconds or 0),
            ]
        try:
            reply = await self._run("reserve", keys, args)
        except LedgerUnavailable:
            self.unfinished.add(Unfinished(hold_id, "release"))  # it may exist: drop it later
            raise
        self._epoch = reply[1]
        if reply[0] == 1:
            return Reservation(hold_id, amount)
        return Reservation(None, amount, tuple(_refusal(r, amount) for r in reply[2:]))

    async def settle(
        self, hold_id: str, actual: int, *, source: UsageSource, now: float | None = None
    ) -> Settlement:
        w.check_settle(actual, source)
        self._writable()
        if now is not None:
            self._now(now)  # refused outside tests; the hold's own time dates the spend
        found, overrun = await self._finish(Unfinished(hold_id, "settle", actual, source))
        if not found:
            return Settlement(0, False, already_final=True)
        return Settlement(actual, bool(overrun))

    async def release(self, hold_id: str) -> None:
        self._writable()
        await self._finish(Unfinished(hold_id, "release"))

    async def _finish(self, item: Unfinished) -> tuple[int, int]:
        """One settle/release; unanswered, it is queued for the next heartbeat to retry."""
        try:
            reply = await self._run(
                "finish", [self._k("hold", item.hold_id), self._k("orphans")],
                [item.hold_id, item.action, item.charge],
            )
        except LedgerUnavailable:
            self.unfinished.add(item)
            raise
        self.unfinished.done(item.hold_id)
        return int(reply[0]), int(reply[1])

    async def adjust(self, cap: Cap, delta: int, *, now: float | None = None) -> int:
        w.check_adjust(cap, delta)
        self._writable()
        reply = await self._run(
            "adjust",
            [self._k("spend", cap.subject)],
            [self._now(now), cap.window.kind, str(cap.window.seconds or 0), str(delta)],
        )
        return int(reply)

    async def snapshot(self, caps: Sequence[Cap], *, now: float | None = None) -> list[CapState]:
        when = self._now(now)
        if not caps:
            await self._ping_or_raise()
            return []
        keys: list[str] = []
        args: list[Any] = [when]
        for cap in caps:
            keys += [self._k("spend", cap.subject), self._k("held", cap.subject)]
            args += [cap.window.kind, str(cap.window.seconds or 0)]
        reply = await self._run("snapshot", keys, args)
        return [
            CapState(cap.subject, cap.limit, cap.window, int(spent), int(reserved))
            for cap, (spent, reserved) in zip(caps, reply)
        ]

    async def holds(self) -> list[HoldInfo]:
        reply = await self._run("holds", [self._k("holds")], [])
        return [_hold_info(r) for r in reply]

    async def heartbeat(self, *, now: float | None = None) -> list[HoldInfo]:
        if self.readonly:
            return []
        when = self._now(now)
        await self.retry_unfinished()
        reply = await self._run(
            "heartbeat",
            [
                self._k("owners"),
                self._k("busy"),
                self._k("holds"),
                self._k("orphans"),
                self._k("epoch"),
                self._k("digests"),
                self._k("schema"),
            ],
            [
                when,
                self.owner,
                repr(float(self.lease_seconds)),
                repr(float(self.max_hold_seconds)),
                repr(float(w.ORPHAN_KEEP_SECONDS)),
                uuid.uuid4().hex,
                self.policy_digest,
                SCHEMA_VERSION,
            ],
        )
        self._epoch = str(reply[1])
        reclaimed = [_hold_info(r) for r in reply[2:]]
        self.reclaimed_total += len(reclaimed)
        return reclaimed

    # -- fleet safety --------------------------------------------------------------------

    async def check_policy_digest(self, digest: str, *, now: float | None = None) -> str | None:
        """Store this proxy's policy digest beside its heartbeat (refreshed with every
        beat) and return a one-line warning when another live proxy sharing this ledger
        runs a different policy, else None. A read-only ledger only compares."""
        when = self._now(now)
        if not self.readonly:
            self.policy_digest = digest
        reply = await self._run(
            "digest",
            [self._k("owners"), self._k("digests")],
            [when, self.owner, "" if self.readonly else digest, digest,
             repr(float(self.lease_seconds))],
        )
        if not reply:
            return None
        others = sorted({str(d)[:12] for _, d in reply})
        return (
            f"policy differs between proxies sharing ledger {self.shown}: this one runs "
            f"{digest[:12]}, {len(reply)} other live proxy(ies) run {', '.join(others)}; "
            "their caps and keys disagree until every proxy loads the same policy"
        )


def _hold_info(row: Sequence[Any]) -> HoldInfo:
    """A hold row of holds.lua / heartbeat.lua: id, owner, amount, created, subject..."""
    return HoldInfo(str(row[0]), str(row[1]), int(row[2]), tuple(str(s) for s in row[4:]),
                    float(row[3]))


def _refusal(row: Sequence[Any], amount: int) -> CapRefusal:
    subject, reason, retry, limit, spent, reserved, exceeds = row
    return CapRefusal(
        subject=str(subject),
        reason=str(reason),  # type: ignore[arg-type]
        retry_after=None if int(retry) < 0 else int(retry),
        limit=int(limit),
        spent=int(spent),
        reserved=int(reserved),
        requested=amount,
        exceeds_cap=bool(int(exceeds)),
    )
