"""The SQLite ledger (seatbelt/ledger/sqlite.py) in real life: SIGKILL, several processes on
one file, faults and healing; and finishes handed over without waiting (finish_soon), which
share the next commit and change nothing a caller can see (caps, atomicity per call, faults,
locks). The contract every backend keeps is tests/ledger/test_ledger.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from seatbelt.ledger import Cap, LedgerUnavailable, open_ledger
from seatbelt.ledger.base import Settlement
from seatbelt.ledger.sqlite import SqliteLedger

ROOT = Path(__file__).resolve().parents[2]
KEY, ACCOUNT = Cap("key:a", None), Cap("account:r", 10**6)


def child(script: str, *args: str) -> subprocess.Popen[str]:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


CRASHER = """
    import asyncio, json, sys
    from seatbelt.ledger import Cap, open_ledger

    async def main():
        ledger = open_ledger(sys.argv[1])
        await ledger.open()
        caps = [Cap("key:a", None), Cap("account:r", 10**6)]
        for n in (100, 200, 300):
            r = await ledger.reserve(caps, n + 50)
            await ledger.settle(r.hold_id, n, source="reported")
        r = await ledger.reserve(caps, 500)
        print(json.dumps({"owner": ledger.owner, "hold": r.hold_id}), flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
"""


async def test_sigkill_keeps_spend_and_orphans_the_dead_hold_at_the_next_start(
    tmp_path: Path,
) -> None:
    """The dead process's liveness lock is free, so the next open() charges its hold whole
    at once, 30 s (its lease) before the lease would have said so."""
    url = f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    proc = child(CRASHER, url)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "child died before holding"
        dead = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    ledger = open_ledger(url)
    reclaimed = await ledger.open()  # lease not lapsed, but the owner is dead
    try:
        assert [(h.hold_id, h.owner, h.amount) for h in reclaimed] == [
            (dead["hold"], dead["owner"], 500)
        ]
        assert sorted(reclaimed[0].subjects) == ["account:r", "key:a"]
        states = await ledger.snapshot([KEY, ACCOUNT])
        assert [(s.spent, s.reserved) for s in states] == [(1100, 0), (1100, 0)]
        assert await ledger.holds() == []
        assert await ledger.heartbeat() == []  # charged once
    finally:
        await ledger.close()
    ro = open_ledger(url, readonly=True)
    await ro.open()
    assert [s.spent for s in await ro.snapshot([KEY, ACCOUNT])] == [1100, 1100]


async def test_a_live_process_keeps_its_holds_and_its_death_frees_them_at_once(
    tmp_path: Path,
) -> None:
    """Liveness by lock, not by clock: while the other process runs, its hold stays (even
    past its lease by this ledger's clock it is judged by the lease, as before); the next
    heartbeat after its SIGKILL reclaims it without any time passing."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    proc = child(CRASHER, url)
    try:
        assert proc.stdout is not None
        dead = json.loads(proc.stdout.readline())
        ledger = open_ledger(url)
        assert await ledger.open() == []  # alive: its lock is held
        assert [h.hold_id for h in await ledger.holds()] == [dead["hold"]]
        assert await ledger.heartbeat() == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    try:
        (info,) = await ledger.heartbeat()
        assert (info.hold_id, info.amount) == (dead["hold"], 500)
        assert await ledger.holds() == []
        lock_files = list((tmp_path / "ledger.db.live").iterdir())
        assert [p.name for p in lock_files] == [f"{ledger.owner}.lock"]  # the dead one's went
    finally:
        await ledger.close()
    assert list((tmp_path / "ledger.db.live").iterdir()) == []


RACER = """
    import asyncio, os, sys, time
    from seatbelt.ledger import Cap, open_ledger

    async def main():
        ledger = open_ledger(sys.argv[1])
        await ledger.open()
        print("ready", flush=True)
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.001)
        granted = 0
        for _ in range(1000):
            granted += (await ledger.reserve([Cap("key:shared", 1500)], 1)).granted
        print(granted, flush=True)
        await ledger.close()

    asyncio.run(main())
"""


async def test_two_processes_sharing_a_file_never_both_pass_a_cap(tmp_path: Path) -> None:
    url, go = f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "go"
    procs = [child(RACER, url, str(go)) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        granted = [int(p.stdout.readline()) for p in procs if p.stdout is not None]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
            p.wait()
    assert sum(granted) == 1500 and all(g > 0 for g in granted)
    ledger = open_ledger(url, readonly=True)
    (s,) = await ledger.snapshot([Cap("key:shared", 1500)])
    assert (s.spent, s.reserved) == (0, 1500)


def assert_one_line(e: pytest.ExceptionInfo[LedgerUnavailable]) -> None:
    assert "\n" not in str(e.value) and str(e.value).startswith("sqlite ledger ")
    assert e.value.__cause__ is None and e.value.__suppress_context__


async def test_missing_directory_that_cannot_be_created_then_heals(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    ledger = open_ledger(f"sqlite:///{blocker / 'ledger.db'}")
    with pytest.raises(LedgerUnavailable) as e:
        await ledger.open()
    assert_one_line(e)
    with pytest.raises(LedgerUnavailable):
        await ledger.reserve([ACCOUNT], 1)
    blocker.unlink()
    await ledger.open()
    assert (await ledger.reserve([ACCOUNT], 1)).granted
    await ledger.close()


async def test_file_that_is_not_a_database_then_heals(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"not sqlite at all " * 512)
    ledger = open_ledger(f"sqlite:///{path}")
    with pytest.raises(LedgerUnavailable) as e:
        await ledger.open()
    assert_one_line(e)
    assert "not a database" in str(e.value)
    path.unlink()
    await ledger.open()
    assert await ledger.ping()
    await ledger.close()


async def test_lock_held_past_busy_time_then_heals(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path, busy_seconds=0.2)
    await ledger.open()
    await ledger.reserve([ACCOUNT], 7)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process sits on the write lock
    try:
        with pytest.raises(LedgerUnavailable) as e:
            await ledger.reserve([ACCOUNT], 1)
        assert_one_line(e)
        assert "locked" in str(e.value)
        (s,) = await ledger.snapshot([ACCOUNT])  # WAL readers are not blocked
        assert s.reserved == 7
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await ledger.reserve([ACCOUNT], 1)).granted
    assert [s.reserved for s in await ledger.snapshot([ACCOUNT])] == [8]
    await ledger.close()


def make_unwritable(path: Path) -> Callable[[], None]:
    """chmod for normal users; root ignores modes, so use the immutable flag there."""
    os.chmod(path, 0o444)
    try:
        with open(path, "ab"):
            pass
    except PermissionError:
        return lambda: os.chmod(path, 0o644)
    os.chmod(path, 0o644)
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot make a file unwritable here (root without chattr)")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True) and None


async def test_unwritable_file_then_heals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = open_ledger(url)
    await first.open()
    r = await first.reserve([ACCOUNT], 5)
    await first.settle(r.hold_id, 5, source="reported")  # type: ignore[arg-type]
    await first.close()
    undo = make_unwritable(tmp_path / "ledger.db")
    try:
        ledger = open_ledger(url)
        with pytest.raises(LedgerUnavailable) as e:
            await ledger.open()
        assert_one_line(e)
        ro = open_ledger(url, readonly=True)  # the report can still read it
        assert [s.spent for s in await ro.snapshot([ACCOUNT])] == [5]
        await ro.close()
    finally:
        undo()
    await ledger.open()
    assert (await ledger.reserve([ACCOUNT], 1)).granted
    await ledger.close()


async def test_readonly_on_missing_file_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}", readonly=True)
    await ledger.open()
    (s,) = await ledger.snapshot([ACCOUNT])
    assert (s.spent, s.reserved, s.remaining) == (0, 0, 10**6)
    assert await ledger.holds() == [] and await ledger.heartbeat() == []
    await ledger.close()
    assert not path.parent.exists()


# --- finish_soon: deferred finishes share the next commit ---------------------------------

SMALL = Cap("account:r", 20)  # the deferred-finish tests' account: room for 20 tokens


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
    (s,) = await ledger.snapshot([SMALL])
    return s.spent, s.reserved


async def test_finishes_of_one_loop_turn_share_one_commit(tmp_path: Path) -> None:
    ledger = await opened(tmp_path / "ledger.db")
    holds = [(await ledger.reserve([SMALL], 2)).hold_id for _ in range(5)]
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
    full = await ledger.reserve([SMALL], 20)
    assert full.hold_id is not None and not (await ledger.reserve([SMALL], 1)).granted
    commits = count_commits(ledger)
    answers = Answers()
    ledger.finish_soon(full.hold_id, "release", 0, source="none", done=answers)
    again = await ledger.reserve([SMALL], 20)  # sees the release: the hold is gone
    assert again.granted and answers.got == [(None, None)] and len(commits) == 1
    await asyncio.sleep(0)
    assert len(commits) == 1  # nothing was left for the end of the turn
    await ledger.close()


async def test_a_reservation_is_committed_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = await opened(path)
    other = SqliteLedger(path, readonly=True)  # another process's view of the file
    for n in range(1, 4):
        assert (await ledger.reserve([SMALL], 1)).granted
        assert await state(other) == (0, n)
    await ledger.close()


async def test_a_write_that_raises_takes_nothing_else_with_it(tmp_path: Path) -> None:
    ledger = await opened(tmp_path / "ledger.db")
    first = await ledger.reserve([SMALL], 3)
    assert first.hold_id is not None

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta VALUES ('half-done', 'x')")
        raise ZeroDivisionError("a bug in one write")

    settled, failed = Answers(), Answers()
    ledger.finish_soon(first.hold_id, "settle", 3, source="reported", done=settled)
    ledger._defer(broken, failed)
    assert (await ledger.reserve([SMALL], 4)).granted
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
    hold = (await ledger.reserve([SMALL], 5)).hold_id
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
    hold = (await ledger.reserve([SMALL], 5)).hold_id
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
    holds = [(await ledger.reserve([SMALL], 2)).hold_id for _ in range(2)]
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
    hold = (await dead.reserve([SMALL], 7)).hold_id
    assert hold is not None
    dead.finish_soon(hold, "settle", 3, source="reported", done=Answers())
    dead._drop()  # killed before the end of the loop turn: the settle never landed
    dead._deferred.clear()
    await asyncio.sleep(0.1)
    alive = await opened(path, lease_seconds=0.05)  # its first heartbeat reclaims
    assert alive.reclaimed_total == 1  # the dead owner's hold: orphaned, charged whole
    assert await state(alive) == (7, 0)
    await alive.close()


async def test_a_new_file_has_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """1 KiB pages make each commit's WAL frames smaller (seatbelt/ledger/sqlite.py
    PAGE_SIZE); a ledger made before keeps 4 KiB pages and works the same."""
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")  # a file with pages: its page size is fixed
    conn.close()
    for path, size in ((tmp_path / "new.db", 1024), (old, 4096)):
        ledger = SqliteLedger(str(path))
        await ledger.open()
        r = await ledger.reserve([KEY, ACCOUNT], 500)
        await ledger.settle(r.hold_id, 300, source="reported")
        await ledger.close()
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA page_size").fetchone()[0] == size
        assert check.execute("SELECT SUM(tokens) FROM spend WHERE subject = 'account:r'"
                             ).fetchone()[0] == 300
        check.close()
