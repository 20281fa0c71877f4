"""SQLite group commit: writes queued in one loop turn share a transaction, and sharing
changes nothing a caller can see (caps, atomicity per call, faults, locks)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from addon.ledger import Cap, LedgerUnavailable
from addon.ledger.sqlite import SqliteLedger

ACCOUNT = Cap("account:r", 20)


def count_commits(ledger: SqliteLedger) -> list[str]:
    """The COMMIT statements the ledger's connection runs from now on."""
    seen: list[str] = []
    assert ledger._conn is not None
    ledger._conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


async def test_writes_of_one_loop_turn_share_one_commit_and_caps_still_hold(
        tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    await ledger.open()
    commits = count_commits(ledger)
    results = await asyncio.gather(*(ledger.reserve([ACCOUNT], 1) for _ in range(50)))
    assert sum(r.granted for r in results) == 20  # each call sees the ones before it
    assert len(commits) == 1
    await asyncio.gather(*(ledger.settle(r.hold_id, 1, source="reported")
                           for r in results if r.hold_id is not None))
    assert len(commits) == 2
    (state,) = await ledger.snapshot([ACCOUNT])
    assert (state.spent, state.reserved) == (20, 0)
    await ledger.close()


async def test_sequential_writes_are_each_committed_before_they_return(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path)
    await ledger.open()
    other = SqliteLedger(path, readonly=True)  # another process's view of the file
    for n in range(1, 4):
        r = await ledger.reserve([ACCOUNT], 1)
        assert r.hold_id is not None
        (state,) = await other.snapshot([ACCOUNT])
        assert state.reserved == n
    await ledger.close()


async def test_a_write_that_raises_takes_nothing_else_with_it(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    await ledger.open()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta VALUES ('half-done', 'x')")
        raise ZeroDivisionError("a bug in one write")

    before = ledger.reserve([ACCOUNT], 3)
    bad = ledger._run(broken, write=True)
    after = ledger.reserve([ACCOUNT], 4)
    first, failed, last = await asyncio.gather(before, bad, after, return_exceptions=True)
    assert isinstance(failed, ZeroDivisionError)
    assert first.granted and last.granted  # type: ignore[union-attr]
    (state,) = await ledger.snapshot([ACCOUNT])
    assert state.reserved == 7
    assert ledger._conn is not None
    assert ledger._conn.execute("SELECT v FROM meta WHERE k = 'half-done'").fetchone() is None
    await ledger.close()


async def test_a_batch_waits_for_another_process_lock_then_commits(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path, busy_seconds=5)
    await ledger.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    pending = asyncio.gather(*(ledger.reserve([ACCOUNT], 1) for _ in range(5)))
    await asyncio.sleep(0.05)
    assert not pending.done()  # waiting for the lock, the loop free meanwhile
    blocker.execute("ROLLBACK")
    blocker.close()
    results = await asyncio.wait_for(pending, 5)
    assert all(r.granted for r in results)
    (state,) = await ledger.snapshot([ACCOUNT])
    assert state.reserved == 5
    await ledger.close()


async def test_a_fault_fails_every_write_of_the_batch_and_the_next_one_heals(
        tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path)
    await ledger.open()
    assert ledger._conn is not None
    ledger._conn.close()  # the connection dies under the ledger (as on a vanished file)
    results = await asyncio.gather(*(ledger.reserve([ACCOUNT], 1) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, LedgerUnavailable) for r in results)
    assert all(str(r).startswith("sqlite ledger ") for r in results)
    assert (await ledger.reserve([ACCOUNT], 1)).granted  # reconnected
    await ledger.close()


@pytest.mark.parametrize("committed", [False, True], ids=["before-commit", "after-commit"])
async def test_a_cancelled_caller_leaves_no_hold_behind(tmp_path: Path, committed: bool) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    await ledger.open()
    tasks = [asyncio.ensure_future(ledger.reserve([ACCOUNT], 1)) for _ in range(3)]
    await asyncio.sleep(0)  # all three queued, the commit is next in line
    if committed:
        await asyncio.sleep(0)  # committed; the callers have not resumed yet
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert done[0].granted and done[2].granted  # type: ignore[union-attr]
    for _ in range(10):
        (state,) = await ledger.snapshot([ACCOUNT])
        if state.reserved == 2:
            break
        await asyncio.sleep(0.01)
    assert state.reserved == 2  # the cancelled caller's grant, if any, was released
    await ledger.close()
