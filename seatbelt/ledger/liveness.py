"""Liveness of the processes sharing one SQLite ledger, without waiting for a lease.

Each proxy that opens the ledger holds an exclusive flock(2) on its own file in a directory
beside the database (`ledger.db.live/<owner>.lock`) for as long as it runs. The kernel drops
the lock when the process dies, however it dies (SIGKILL, OOM, power of the process), so a
lock that can be taken means its owner is dead: its holds are reclaimed at once, at the next
start or heartbeat of any proxy on the file, not a lease length later. An owner without a
lock file (a ledger used without open(), an older seatbelt) is judged by its lease alone.

flock, not fcntl: fcntl locks belong to the process, so two ledgers of one process (tests)
would not see each other; flock locks belong to the open file. Local filesystems only (as
is SQLite's WAL mode itself); without fcntl (Windows) only the lease applies.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("seatbelt")

SUFFIX = ".lock"


def lock_dir(database: Path) -> Path:
    return database.with_name(database.name + ".live")


class LivenessLock:
    """This process's lock (hold / release) and the probe of other owners' (is_dead)."""

    def __init__(self, database: Path, owner: str) -> None:
        self.dir = lock_dir(database)
        self.owner = owner
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self) -> None:
        """Take this owner's lock (idempotent). OSError when the directory is unusable."""
        if fcntl is None or self._fd is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / (self.owner + SUFFIX), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Closing: the file goes, so live holds left behind are judged by the lease."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            (self.dir / (self.owner + SUFFIX)).unlink(missing_ok=True)
        finally:
            os.close(fd)

    def is_dead(self, owner: str) -> bool:
        """True when `owner`'s lock file exists and its lock can be taken (its process is
        gone); the file is then removed. False when alive or unknown (no file)."""
        if fcntl is None or owner == self.owner:
            return False
        path = self.dir / (owner + SUFFIX)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: alive
        else:
            path.unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Remove the lock files of dead owners that left no holds (crashed while idle)."""
        if fcntl is None or not self.dir.is_dir():
            return
        for path in self.dir.glob("*" + SUFFIX):
            self.is_dead(path.name.removesuffix(SUFFIX))
