"""SQLite: finishes handed over without waiting (finish_soon) share the next commit; that
changes nothing a caller can see (caps, atomicity per call, faults, locks)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from seatbelt.ledger import Cap, LedgerUnavailable
from seatbelt.ledger.base import Settlement
from seatbelt.ledger.sqlite import SqliteLedger

ACCOUNT = Cap("account:r", 20)


def count_commits(ledger: SqliteLedger) -> list[str]:
    """The COMMIT statements the ledger's connection runs from now on."""
    seen: list[str] = []
    assert ledger._conn is not None
    ledger._conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


class Answers:
    """finish_soon's `done` callbacks, recorded."""

    def __init__(self) -> None:
        self.got: list[tuple[Settlement | None, Exception | None]] = []

    def __call__(self, settled: Settlement | None, error: Exception | None) -> None:
        self.got.append((settled, error))


async def opened(path: Path, **kw: Any) -> SqliteLedger:
    ledger = SqliteLedger(path, **kw)
    await ledger.open()
    return ledger


async def state(ledger: SqliteLedger) -> tuple[int, int]:
    (s,) = await ledger.snapshot([ACCOUNT])
    return s.spent, s.reserved


async def test_finishes_of_one_loop_turn_share_one_commit(tmp_path: Path) -> None:
    ledger = await opened(tmp_path / "ledger.db")
    holds = [(await ledger.reserve([ACCOUNT], 2)).hold_id for _ in range(5)]
    commits = count_commits(ledger)
    answers = Answers()
    for hold in holds:
        assert hold is not None
        ledger.finish_soon(hold, "settle", 1, source="reported", done=answers)
    assert answers.got == [] and commits == []  # handed over: nothing waited, not yet written
    await asyncio.sleep(0)  # the end of the loop turn
    assert len(commits) == 1
    assert [(s.charged, s.overrun) for s, _ in answers.got] == [(1, False)] * 5  # type: ignore
    assert await state(ledger) == (5, 0)
    await ledger.close()


async def test_the_next_reservation_carries_them_before_judging(tmp_path: Path) -> None:
    ledger = await opened(tmp_path / "ledger.db")
    full = await ledger.reserve([ACCOUNT], 20)
    assert full.hold_id is not None and not (await ledger.reserve([ACCOUNT], 1)).granted
    commits = count_commits(ledger)
    answers = Answers()
    ledger.finish_soon(full.hold_id, "release", 0, source="none", done=answers)
    again = await ledger.reserve([ACCOUNT], 20)  # sees the release: the hold is gone
    assert again.granted and answers.got == [(None, None)] and len(commits) == 1
    await asyncio.sleep(0)
    assert len(commits) == 1  # nothing was left for the end of the turn
    await ledger.close()


async def test_a_reservation_is_committed_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = await opened(path)
    other = SqliteLedger(path, readonly=True)  # another process's view of the file
    for n in range(1, 4):
        assert (await ledger.reserve([ACCOUNT], 1)).granted
        assert await state(other) == (0, n)
    await ledger.close()


async def test_a_write_that_raises_takes_nothing_else_with_it(tmp_path: Path) -> None:
    ledger = await opened(tmp_path / "ledger.db")
    first = await ledger.reserve([ACCOUNT], 3)
    assert first.hold_id is not None

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta VALUES ('half-done', 'x')")
        raise ZeroDivisionError("a bug in one write")

    settled, failed = Answers(), Answers()
    ledger.finish_soon(first.hold_id, "settle", 3, source="reported", done=settled)
    ledger._defer(broken, failed)
    assert (await ledger.reserve([ACCOUNT], 4)).granted
    assert settled.got[0][0] is not None and settled.got[0][1] is None
    assert isinstance(failed.got[0][1], ZeroDivisionError)
    assert await state(ledger) == (3, 4)
    assert ledger._conn is not None
    assert ledger._conn.execute("SELECT v FROM meta WHERE k = 'half-done'").fetchone() is None
    await ledger.close()


async def settle_while_locked(path: Path, busy_seconds: float, locked_for: float
                              ) -> tuple[SqliteLedger, Answers]:
    """Hand over a settle while another process holds the write lock for `locked_for`
    seconds; returns once it was answered (or after 1 s)."""
    ledger = await opened(path, busy_seconds=busy_seconds)
    hold = (await ledger.reserve([ACCOUNT], 5)).hold_id
    assert hold is not None
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    answers = Answers()
    try:
        ledger.finish_soon(hold, "settle", 4, source="reported", done=answers)
        await asyncio.sleep(locked_for)
        assert answers.got == [] or locked_for > busy_seconds  # the loop was free meanwhile
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for _ in range(100):
        if answers.got:
            break
        await asyncio.sleep(0.01)
    return ledger, answers


async def test_finishes_wait_out_another_process_lock(tmp_path: Path) -> None:
    ledger, answers = await settle_while_locked(tmp_path / "ledger.db", 5, locked_for=0.05)
    assert answers.got and answers.got[0][1] is None
    assert await state(ledger) == (4, 0)
    await ledger.close()


async def test_a_finish_locked_out_past_busy_time_is_answered_unavailable(
        tmp_path: Path) -> None:
    ledger, answers = await settle_while_locked(tmp_path / "ledger.db", 0.1, locked_for=0.5)
    assert answers.got and isinstance(answers.got[0][1], LedgerUnavailable)
    assert "locked" in str(answers.got[0][1])
    assert await state(ledger) == (0, 5)  # still held: the caller retries it (runtime)
    await ledger.close()


async def test_a_fault_fails_the_deferred_finishes_and_the_next_call_heals(
        tmp_path: Path) -> None:
    ledger = await opened(tmp_path / "ledger.db")
    hold = (await ledger.reserve([ACCOUNT], 5)).hold_id
    assert hold is not None and ledger._conn is not None
    ledger._conn.close()  # the connection dies under the ledger
    answers = Answers()
    ledger.finish_soon(hold, "settle", 4, source="reported", done=answers)
    await asyncio.sleep(0)
    assert isinstance(answers.got[0][1], LedgerUnavailable)
    assert str(answers.got[0][1]).startswith("sqlite ledger ")
    await ledger.settle(hold, 4, source="reported")  # the retry, reconnected
    assert await state(ledger) == (4, 0)
    await ledger.close()


async def test_drain_and_close_commit_what_was_handed_over(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = await opened(path)
    holds = [(await ledger.reserve([ACCOUNT], 2)).hold_id for _ in range(2)]
    answers = Answers()
    for hold in holds:
        assert hold is not None
        ledger.finish_soon(hold, "settle", 2, source="reported", done=answers)
    await ledger.drain()
    assert len(answers.got) == 2
    ledger.finish_soon(holds[0], "settle", 2, source="reported", done=answers)  # a repeat
    await ledger.close()
    assert answers.got[-1][0] is not None and answers.got[-1][0].already_final
    assert await state(SqliteLedger(path, readonly=True)) == (4, 0)


async def test_a_crash_before_the_commit_leaves_the_hold_to_be_charged_whole(
        tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    dead = await opened(path, lease_seconds=0.05)
    hold = (await dead.reserve([ACCOUNT], 7)).hold_id
    assert hold is not None
    dead.finish_soon(hold, "settle", 3, source="reported", done=Answers())
    dead._drop()  # killed before the end of the loop turn: the settle never landed
    dead._deferred.clear()
    await asyncio.sleep(0.1)
    alive = await opened(path, lease_seconds=0.05)  # its first heartbeat reclaims
    assert alive.reclaimed_total == 1  # the dead owner's hold: orphaned, charged whole
    assert await state(alive) == (7, 0)
    await alive.close()
