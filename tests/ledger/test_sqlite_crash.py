"""SQLite in real life: SIGKILL, several processes on one file, faults and healing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from seatbelt.ledger import Cap, LedgerUnavailable, open_ledger
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
