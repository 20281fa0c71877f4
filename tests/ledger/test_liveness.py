"""The SQLite ledger's liveness locks (seatbelt/ledger/liveness.py): a lock that can be taken
means its owner is dead. flock locks belong to the open file, so two LivenessLocks of this
one process see each other as two proxies would."""

from __future__ import annotations

from pathlib import Path

import pytest

from seatbelt.ledger.liveness import SUFFIX, LivenessLock, lock_dir


def test_the_lock_directory_sits_beside_the_database(tmp_path: Path) -> None:
    assert lock_dir(tmp_path / "ledger.db") == tmp_path / "ledger.db.live"


def test_a_held_lock_is_alive_and_a_released_one_is_unknown(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    a, b = LivenessLock(db, "owner-a"), LivenessLock(db, "owner-b")
    a.hold()
    a.hold()  # idempotent
    assert a.held and (lock_dir(db) / ("owner-a" + SUFFIX)).exists()
    assert not b.is_dead("owner-a")
    assert not a.is_dead("owner-a")  # never judges itself
    a.release()
    assert not a.held and not (lock_dir(db) / ("owner-a" + SUFFIX)).exists()
    assert not b.is_dead("owner-a")  # no file: judged by its lease alone
    assert not b.is_dead("never-seen")


def test_a_lock_file_left_unlocked_means_its_owner_died_and_is_removed(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    lock_dir(db).mkdir()
    (lock_dir(db) / ("crashed" + SUFFIX)).write_bytes(b"")  # the kernel dropped its flock
    probe = LivenessLock(db, "me")
    assert probe.is_dead("crashed")
    assert not (lock_dir(db) / ("crashed" + SUFFIX)).exists()
    assert not probe.is_dead("crashed")  # said once


def test_a_second_holder_of_one_owner_name_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    first, second = LivenessLock(db, "same"), LivenessLock(db, "same")
    first.hold()
    with pytest.raises(OSError):
        second.hold()
    assert not second.held and first.held
    first.release()


def test_sweep_removes_only_the_dead_owners_files(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    live, me = LivenessLock(db, "live"), LivenessLock(db, "me")
    live.hold()
    me.hold()
    (lock_dir(db) / ("gone" + SUFFIX)).write_bytes(b"")
    me.sweep()
    assert sorted(p.name for p in lock_dir(db).iterdir()) == ["live.lock", "me.lock"]
    live.release()
    me.release()
    LivenessLock(tmp_path / "none.db", "x").sweep()  # no directory: nothing to do
