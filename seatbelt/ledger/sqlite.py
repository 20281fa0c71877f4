"""Durable ledger in one SQLite file (`sqlite:///PATH`), the default of a proxy.

Durability: WAL with synchronous=NORMAL. A commit is in the WAL (OS page cache) when
it returns, so settled spend survives SIGKILL and restarts; only a power cut can lose
the last few commits. Writes take the write lock up front (BEGIN IMMEDIATE) so two
processes sharing the file cannot both pass a cap.

Reserves commit inline, before the request is dispatched. Settles and releases from the
response hook (finish_soon) are deferred: the next reservation's transaction carries
them, or the end of the loop turn commits them; their callers are told after that
commit. A commit costs about as much as the statements of a reserve and a settle
together, and a hook that waits costs mitmproxy a suspended task (~40 us, bench/): so
one commit and no wait per request. A finish lost to a crash before its commit leaves
the hold, charged whole as orphaned at the next start: never free.

Processes sharing the file (two proxies, a proxy and the report) work: WAL readers never
block the writer. Liveness (liveness.py): each open ledger holds a flock on a file beside the
database; a dead process's lock is free, so its holds are reclaimed at the next start or
heartbeat of any proxy on the file. The lease stays as the fallback (an owner with no lock file).

Event loop: the SQL runs inline on the loop, with SQLite's busy timeout at 0. When
another process holds the write lock, the call does not block in SQLite's busy
handler: it yields to the loop (asyncio.sleep, 0.5 ms doubling to 20 ms) and retries
until `busy_seconds` (default 2 s) have passed, then raises LedgerUnavailable.
Why not a worker thread: measured on this 2-core machine (Python 3.13, SQLite 3.40,
two caps per pair, bench/ledger_bench.py and a variant that runs each call on one
dedicated executor thread):
  inline:            ~9,000-10,500 reserve+settle pairs/s (5,900 at worst while other
                     jobs loaded the machine); per pair p50 ~75 us, p99 ~150-700 us;
                     ~0.7% of pairs take 1-7 ms (the WAL auto-checkpoint, which fsyncs
                     about every 140 pairs). Same figures with the loop kept busy.
  worker thread:     ~4,300 pairs/s on an idle loop (p50 175 us), and 37 pairs/s
                     (p50 8 ms) while the loop runs Python work, because every call then
                     waits for the GIL hand-off (switch interval 5 ms) from the loop.
  no auto-checkpoint: ~5,000 pairs/s (the growing WAL slows every read), so SQLite's
                     default checkpointing stays on.
A ~75 us pause per request costs the loop far less than a thread hop, so inline wins.

Faults (locked past `busy_seconds`, disk full, read-only or missing file, a file that
is not a database) raise LedgerUnavailable with a one-line reason; the connection is
dropped and reopened on the next call, so the backend heals once the fault clears.

read-only mode (report, tests): opens the file with mode=ro, registers no owner and
never writes or reclaims; a missing file or one without the schema reads as empty.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import quote

from . import windows as w
from .base import (
    Cap,
    CapState,
    FinishAction,
    FinishDone,
    HoldIds,
    HoldInfo,
    Ledger,
    LedgerUnavailable,
    Reservation,
    Settlement,
    UsageSource,
    new_owner,
)
from .liveness import LivenessLock

log = logging.getLogger("seatbelt")

T = TypeVar("T")

SCHEMA_VERSION = "1"
PAGE_SIZE = 1024  # bytes, for a new ledger file (_connect)
NO_START = -(2**62)  # window_start() None: every bucket counts

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spend (
    subject TEXT NOT NULL, bucket INTEGER NOT NULL, tokens INTEGER NOT NULL,
    prune_after REAL, PRIMARY KEY (subject, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS holds (
    hold_id TEXT NOT NULL, pos INTEGER NOT NULL, subject TEXT NOT NULL,
    bucket INTEGER NOT NULL, prune_after REAL, owner TEXT NOT NULL,
    amount INTEGER NOT NULL, created REAL NOT NULL,
    orphaned_at REAL,  -- NULL while live, else when it was reclaimed (charged whole)
    PRIMARY KEY (hold_id, subject)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spend_prune ON spend (prune_after) WHERE prune_after IS NOT NULL;
CREATE INDEX IF NOT EXISTS holds_subject ON holds (subject, orphaned_at, amount);
CREATE INDEX IF NOT EXISTS holds_state ON holds (orphaned_at, owner);
"""

SQL_SPENT = "SELECT COALESCE(SUM(tokens), 0) FROM spend WHERE subject = ? AND bucket >= ?"
SQL_ROWS = "SELECT bucket, tokens FROM spend WHERE subject = ? AND bucket >= ?"
SQL_RESERVED = (
    "SELECT COALESCE(SUM(amount), 0) FROM holds WHERE subject = ? AND orphaned_at IS NULL"
)
# A cap's (spent, reserved) in one statement: (subject, window start, subject). One
# execute instead of two saves ~4.7 us per cap (each request reads two caps).
SQL_CAP_STATE = f"SELECT ({SQL_SPENT}), ({SQL_RESERVED})"
# A hold's rows, read, then deleted (SqliteLedger._take_hold). Not DELETE ... RETURNING:
# that costs ~30,000 more instructions per settle than the two statements
# (bench/instructions.py), whose timing it only seemed to beat.
HOLD_COLUMNS = "subject, bucket, prune_after, amount, orphaned_at"
SQL_HOLD_ROWS = f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = ?"
SQL_DROP_HOLD = "DELETE FROM holds WHERE hold_id = ?"
SQL_ADD = (
    "INSERT INTO spend (subject, bucket, tokens, prune_after) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (subject, bucket) DO UPDATE SET tokens = tokens + excluded.tokens, "
    "prune_after = MAX(COALESCE(prune_after, excluded.prune_after), "
    "COALESCE(excluded.prune_after, prune_after))"
)
SQL_HOLD = "INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
SQL_BEAT = "INSERT OR REPLACE INTO owners (owner, heartbeat) VALUES (?, ?)"


class _Raised:
    """A write's exception, held until its transaction is known to have committed."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _BatchRaised(Exception):
    """Rolls a transaction back when one of its writes raised (see SqliteLedger._commit)."""


def _attempt(body: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T | _Raised:
    """Run one write of a transaction; SQLite's own errors abort the transaction, anything
    else is kept (the transaction is then rolled back and re-run write by write)."""
    try:
        return body(conn)
    except (sqlite3.Error, OSError):
        raise
    except Exception as e:
        return _Raised(e)


class _Deferred:
    """A finish_soon() write waiting for the next commit, and who to tell."""

    __slots__ = ("body", "done", "deadline")

    def __init__(self, body: Callable[[sqlite3.Connection], Settlement | None],
                 done: FinishDone) -> None:
        self.body = body
        self.done = done
        self.deadline: float | None = None  # set when it first meets another process's lock

    def answer(self, result: Settlement | _Raised | None) -> None:
        try:
            if isinstance(result, _Raised):
                self.done(None, result.error)
            else:
                self.done(result, None)
        except Exception:  # the caller's bookkeeping must not break the ledger's
            log.exception("seatbelt: a finished hold's callback failed")

    def fail(self, error: Exception) -> None:
        self.answer(_Raised(error))


def _unchained(error: LedgerUnavailable) -> LedgerUnavailable:
    """The one-line reason only: SQLite's exception (and its text) is not chained on."""
    error.__suppress_context__ = True
    return error


def _is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


class SqliteLedger(Ledger):
    """One SQLite file; see the module docstring for durability and loop behaviour."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        lease_seconds: float = 30.0,
        max_hold_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
        busy_seconds: float = 2.0,
    ) -> None:
        super().__init__()
        self.owner = new_owner()
        self._hold_ids = HoldIds()
        self.path = Path(path)
        self.readonly = readonly
        self.lease_seconds = lease_seconds
        self.max_hold_seconds = max_hold_seconds
        self.busy_seconds = busy_seconds
        self.timeout = busy_seconds
        self.reclaimed_total = 0
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._registered = False
        self._deferred: list[_Deferred] = []  # finish_soon() writes not committed yet
        self._flush_handle: asyncio.Handle | None = None
        self._busy_delay = 0.0  # the current wait for another process's lock
        self._live = LivenessLock(self.path, self.owner)  # held from open() to close()

    # -- connection and fault handling -------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        """Open, switch to WAL, create the schema if missing. Needs the write lock only on
        a new file, so reads can reconnect while another process writes."""
        if self.readonly:
            return self._connect_readonly()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            # A new file only (SQLite ignores it once the file has pages): each commit
            # appends every page it changed to the WAL, and ours change a few rows of a
            # few small tables; 1 KiB pages took a reserve+settle commit from ~103 to
            # ~72 us here (a same-schema microbenchmark, 5,000 commits, median of 3).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = self._schema_version(conn)
            if version is None:
                self._tx(conn, self._init_schema)
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"ledger schema version {version} is not the supported {SCHEMA_VERSION}"
                )
        except BaseException:
            conn.close()
            raise
        self._registered = False  # the owner row is (re)written by the next write
        return conn

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> str | None:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            return None
        row = conn.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
        return None if row is None else row[0]

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def _connect_readonly(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only=1")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except BaseException:
            conn.close()
            raise
        if not {"spend", "holds"} <= tables:
            conn.close()
            return None  # created but not initialised yet: reads as empty
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    @staticmethod
    def _tx(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def _run(self, body: Callable[[sqlite3.Connection], T], *, write: bool) -> T | None:
        """Run `body` (in a write transaction if `write`, which also commits every deferred
        finish); retry on lock without blocking the loop; any other fault becomes
        LedgerUnavailable. None: read-only, no file."""
        deadline: float | None = None
        delay = 0.0005
        while True:
            try:
                if write:
                    return self._commit(body)
                if self._conn is None:
                    self._conn = self._connect()
                    if self._conn is None:
                        return None
                return body(self._conn)
            except (sqlite3.Error, OSError) as e:
                if isinstance(e, sqlite3.Error) and _is_busy(e):
                    now = time.monotonic()
                    deadline = deadline or now + self.busy_seconds
                    if now < deadline:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.02)
                        continue
                    raise self._locked() from None
                error = self._fault(e)
                self._fail_deferred(error)
                raise error from None

    def _commit(self, body: Callable[[sqlite3.Connection], T] | None) -> T | None:
        """One write transaction: every deferred finish first, then `body`; answered after
        COMMIT. SQLite errors propagate (busy: the deferred writes stay queued)."""
        deferred, self._deferred = self._deferred, []
        try:
            if self._conn is None:
                self._conn = self._connect()
                assert self._conn is not None  # only a read-only ledger has no file

            def run(conn: sqlite3.Connection) -> tuple[list[Any], Any]:
                outcomes = [_attempt(d.body, conn) for d in deferred]
                mine = _attempt(body, conn) if body is not None else None
                if isinstance(mine, _Raised) or any(isinstance(o, _Raised) for o in outcomes):
                    raise _BatchRaised
                return outcomes, mine

            outcomes, mine = self._tx(self._conn, self._registering(run))
            self._registered = True
        except _BatchRaised:
            return self._alone(deferred, body)
        except BaseException:
            self._deferred[:0] = deferred  # not committed: still owed (or failed by caller)
            raise
        for d, outcome in zip(deferred, outcomes):
            d.answer(outcome)
        return mine

    def _alone(self, deferred: list[_Deferred], body: Callable[[sqlite3.Connection], T] | None
               ) -> T | None:
        """A write raised (a bug, not SQLite): the transaction was rolled back; each write
        runs in its own, so one bad write takes nothing else with it."""
        assert self._conn is not None
        for d in deferred:
            try:
                outcome = self._tx(self._conn, self._registering(d.body))
                self._registered = True
            except (sqlite3.Error, OSError):
                self._deferred.append(d)  # the next commit (or its failure) answers it
                self._schedule_flush()
                continue
            except Exception as e:
                d.fail(e)
                continue
            d.answer(outcome)
        if body is None:
            return None
        result = self._tx(self._conn, self._registering(body))
        self._registered = True
        return result

    def _fail_deferred(self, error: Exception) -> None:
        deferred, self._deferred = self._deferred, []
        for d in deferred:
            d.fail(error)

    def _locked(self) -> LedgerUnavailable:
        return _unchained(LedgerUnavailable(
            f"sqlite ledger {self.path}: database stayed locked for {self.busy_seconds:g}s"
        ))

    def _fault(self, e: BaseException) -> LedgerUnavailable:
        """A fault that is not a lock: drop the connection (the next call reconnects)."""
        self._drop()
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return _unchained(LedgerUnavailable(f"sqlite ledger {self.path}: {reason}"))

    def _defer(self, body: Callable[[sqlite3.Connection], Settlement | None],
               done: FinishDone) -> None:
        self._deferred.append(_Deferred(body, done))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """End of the loop turn: commit the finishes no reservation has carried yet."""
        self._flush_handle = None
        if not self._deferred:
            return
        try:
            self._commit(None)
            self._busy_delay = 0.0
        except (sqlite3.Error, OSError) as e:
            if not (isinstance(e, sqlite3.Error) and _is_busy(e)):
                self._fail_deferred(self._fault(e))
                return
            now = time.monotonic()
            waiting = []
            for d in self._deferred:
                d.deadline = d.deadline or now + self.busy_seconds
                if now < d.deadline:
                    waiting.append(d)
                else:
                    d.fail(self._locked())
            self._deferred = waiting
            if waiting:
                self._busy_delay = min(self._busy_delay * 2, 0.02) if self._busy_delay else 0.0005
                self._flush_handle = asyncio.get_running_loop().call_later(
                    self._busy_delay, self._flush)

    def _registering(
        self, body: Callable[[sqlite3.Connection], T]
    ) -> Callable[[sqlite3.Connection], T]:
        """Write this owner's heartbeat row with the first write after (re)connecting."""
        if self._registered:
            return body

        def wrapped(conn: sqlite3.Connection) -> T:
            conn.execute(SQL_BEAT, (self.owner, self._clock()))
            return body(conn)

        return wrapped

    def _writable(self) -> None:
        if self.readonly:
            raise LedgerUnavailable("ledger was opened read-only")

    # -- the Ledger interface ------------------------------------------------------------

    async def open(self) -> list[HoldInfo]:
        await self._run(lambda conn: None, write=False)  # connect, schema, owner row
        if self.readonly:
            return []
        try:
            self._live.hold()
        except OSError as e:
            raise _unchained(LedgerUnavailable(
                f"sqlite ledger {self.path}: cannot lock {self._live.dir} ({e.strerror or e})"
            )) from None
        reclaimed = await self.heartbeat()
        self._live.sweep()
        return reclaimed

    async def close(self) -> None:
        if not self.readonly and self._conn is not None:
            try:
                await self._run(
                    lambda c: c.execute(
                        "DELETE FROM owners WHERE owner = ? AND NOT EXISTS (SELECT 1 FROM holds"
                        " WHERE owner = ? AND orphaned_at IS NULL)",
                        (self.owner, self.owner),
                    ),
                    write=True,
                )
            except LedgerUnavailable as e:
                log.warning("%s (owner left registered; its lease will lapse)", e)
        self._live.release()
        self._drop()

    async def reserve(
        self, caps: Sequence[Cap], amount: int, *, now: float | None = None
    ) -> Reservation:
        w.check_reserve(caps, amount)
        self._writable()
        now = self._clock() if now is None else now

        def body(conn: sqlite3.Connection) -> Reservation:
            refusals = []
            states = []
            for cap in caps:
                if cap.limit is None:
                    continue
                start = w.window_start(cap.window, now)
                start = NO_START if start is None else start
                spent, reserved = conn.execute(
                    SQL_CAP_STATE, (cap.subject, start, cap.subject)).fetchone()
                rows: list[tuple[int, int]] = []
                if cap.window.kind == "rolling" and spent + amount > cap.limit:
                    rows = conn.execute(SQL_ROWS, (cap.subject, start)).fetchall()
                refusal = w.judge(cap, amount, spent, reserved, now, rows)
                if refusal is not None:
                    refusals.append(refusal)
                states.append(CapState(cap.subject, cap.limit, cap.window, spent,
                                       reserved + amount))
            if refusals:
                return Reservation(None, amount, tuple(refusals))
            hold_id = self._hold_ids()
            conn.executemany(
                SQL_HOLD,
                [
                    (
                        hold_id,
                        pos,
                        cap.subject,
                        bucket,
                        w.prune_after(cap.window, bucket),
                        self.owner,
                        amount,
                        now,
                    )
                    for pos, cap in enumerate(caps)
                    for bucket in (w.bucket_of(cap.window, now),)
                ],
            )
            return Reservation(hold_id, amount, states=tuple(states))

        result = await self._run(body, write=True)
        assert result is not None
        return result

    async def settle(
        self, hold_id: str, actual: int, *, source: UsageSource, now: float | None = None
    ) -> Settlement:
        w.check_settle(actual, source)
        self._writable()
        result = await self._run(self._settle_body(hold_id, actual), write=True)
        assert result is not None
        return result

    async def release(self, hold_id: str) -> None:
        self._writable()
        await self._run(self._release_body(hold_id), write=True)

    def finish_soon(self, hold_id: str, action: FinishAction, actual: int, *,
                    source: UsageSource, done: FinishDone) -> None:
        """Deferred to the next commit: the next reservation's transaction carries it, or
        the end of this loop turn commits it. No task, no wait: one commit then serves a
        settle and the next reserve."""
        if action == "settle":
            w.check_settle(actual, source)
        if self.readonly:
            done(None, LedgerUnavailable("ledger was opened read-only"))
            return
        self._defer(self._settle_body(hold_id, actual) if action == "settle"
                    else self._release_body(hold_id), done)

    async def drain(self) -> None:
        if self._deferred:
            await self._run(lambda conn: None, write=True)

    @staticmethod
    def _take_hold(conn: sqlite3.Connection, hold_id: str) -> list[Any]:
        """Delete a hold; its rows (HOLD_COLUMNS) as they were, [] when there was none."""
        rows = conn.execute(SQL_HOLD_ROWS, (hold_id,)).fetchall()
        conn.execute(SQL_DROP_HOLD, (hold_id,))
        return rows

    def _settle_body(self, hold_id: str, actual: int
                     ) -> Callable[[sqlite3.Connection], Settlement]:
        def body(conn: sqlite3.Connection) -> Settlement:
            rows = self._take_hold(conn, hold_id)
            if not rows:
                return Settlement(0, False, already_final=True)
            amount = rows[0][3]
            delta = actual if rows[0][4] is None else actual - amount
            self._charge(conn, rows, delta)
            return Settlement(actual, actual > amount)

        return body

    def _release_body(self, hold_id: str) -> Callable[[sqlite3.Connection], None]:
        def body(conn: sqlite3.Connection) -> None:
            rows = self._take_hold(conn, hold_id)
            if rows and rows[0][4] is not None:
                self._charge(conn, rows, -rows[0][3])  # never sent after all: refund

        return body

    @staticmethod
    def _charge(conn: sqlite3.Connection, rows: list[Any], delta: int) -> None:
        if delta:
            conn.executemany(SQL_ADD, [(r[0], r[1], delta, r[2]) for r in rows])

    async def adjust(self, cap: Cap, delta: int, *, now: float | None = None) -> int:
        w.check_adjust(cap, delta)
        self._writable()
        now = self._clock() if now is None else now
        start = w.window_start(cap.window, now)
        start = NO_START if start is None else start

        def body(conn: sqlite3.Connection) -> int:
            rows = conn.execute(SQL_ROWS, (cap.subject, start)).fetchall()
            conn.executemany(SQL_ADD, [
                (cap.subject, bucket, change, w.prune_after(cap.window, bucket))
                for bucket, change in w.plan_adjust(cap.window, rows, delta, now)
            ])
            return int(conn.execute(SQL_SPENT, (cap.subject, start)).fetchone()[0])

        result = await self._run(body, write=True)
        assert result is not None
        return result

    async def snapshot(self, caps: Sequence[Cap], *, now: float | None = None) -> list[CapState]:
        now = self._clock() if now is None else now

        def body(conn: sqlite3.Connection) -> list[CapState]:
            out = []
            for cap in caps:
                start = w.window_start(cap.window, now)
                start = NO_START if start is None else start
                spent, reserved = conn.execute(
                    SQL_CAP_STATE, (cap.subject, start, cap.subject)).fetchone()
                out.append(CapState(cap.subject, cap.limit, cap.window, spent, reserved))
            return out

        if not caps:
            await self._run(lambda conn: conn.execute("SELECT 1").fetchone(), write=False)
            return []
        result = await self._run(self._read(body), write=False)
        return (
            result
            if result is not None
            else [CapState(cap.subject, cap.limit, cap.window, 0, 0) for cap in caps]
        )

    def _dead_owners_holds(self, conn: sqlite3.Connection, known: set[str]) -> list[Any]:
        """Live holds (rows as in heartbeat) of owners whose liveness lock is free: their
        process is dead, whatever their lease says. Only while this ledger holds its own
        lock (open() was called): a ledger used without it judges by leases alone."""
        if not self._live.held:
            return []
        owners = [r[0] for r in conn.execute(
            "SELECT DISTINCT owner FROM holds WHERE orphaned_at IS NULL AND owner != ?",
            (self.owner,))]
        dead = [o for o in owners if self._live.is_dead(o)]
        if not dead:
            return []
        marks = ",".join("?" * len(dead))
        rows = conn.execute(
            "SELECT subject, bucket, prune_after, amount, hold_id, owner, created FROM holds"
            f" WHERE orphaned_at IS NULL AND owner IN ({marks})", dead).fetchall()
        return [r for r in rows if r[4] not in known]

    @staticmethod
    def _read(body: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        """One consistent read: a deferred transaction spanning all statements."""

        def wrapped(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return body(conn)
            finally:
                conn.execute("COMMIT")

        return wrapped

    async def holds(self) -> list[HoldInfo]:
        def body(conn: sqlite3.Connection) -> list[HoldInfo]:
            found: dict[str, list[Any]] = {}
            for hid, subject, owner, amount, created in conn.execute(
                "SELECT hold_id, subject, owner, amount, created FROM holds"
                " WHERE orphaned_at IS NULL ORDER BY created, hold_id, pos"
            ):
                found.setdefault(hid, [owner, amount, created, []])[3].append(subject)
            return [HoldInfo(h, o, a, tuple(s), c) for h, (o, a, c, s) in found.items()]

        return await self._run(self._read(body), write=False) or []

    async def heartbeat(self, *, now: float | None = None) -> list[HoldInfo]:
        if self.readonly:
            return []
        now = self._clock() if now is None else now

        def body(conn: sqlite3.Connection) -> list[HoldInfo]:
            conn.execute(SQL_BEAT, (self.owner, now))
            lapsed = conn.execute(
                "SELECT h.subject, h.bucket, h.prune_after, h.amount, h.hold_id, h.owner,"
                " h.created FROM holds h"
                " LEFT JOIN owners o ON o.owner = h.owner WHERE h.orphaned_at IS NULL"
                " AND (h.created < ? OR o.heartbeat IS NULL OR o.heartbeat < ?)",
                (now - self.max_hold_seconds, now - self.lease_seconds),
            ).fetchall()
            lapsed += self._dead_owners_holds(conn, {r[4] for r in lapsed})
            conn.executemany(SQL_ADD, [(r[0], r[1], r[3], r[2]) for r in lapsed])
            ids = sorted({r[4] for r in lapsed})
            conn.executemany(
                "UPDATE holds SET orphaned_at = ? WHERE hold_id = ?", [(now, h) for h in ids]
            )
            conn.execute("DELETE FROM holds WHERE orphaned_at < ?", (now - w.ORPHAN_KEEP_SECONDS,))
            conn.execute(
                "DELETE FROM owners WHERE heartbeat < ? AND owner NOT IN"
                " (SELECT owner FROM holds WHERE orphaned_at IS NULL)",
                (now - self.lease_seconds,),
            )
            conn.execute("DELETE FROM spend WHERE prune_after < ?", (now,))
            infos: dict[str, HoldInfo] = {}
            for r in sorted(lapsed, key=lambda r: r[4]):
                info = infos.get(r[4])
                subjects = (info.subjects if info else ()) + (r[0],)
                infos[r[4]] = HoldInfo(r[4], r[5], r[3], subjects, r[6])
            return list(infos.values())

        reclaimed = await self._run(body, write=True) or []
        self.reclaimed_total += len(reclaimed)
        return reclaimed
