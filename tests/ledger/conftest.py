"""One ledger test-suite for every backend.

`ledger` and `make_ledger` are parametrised by backend name; a new backend (Redis) is
one more entry in BACKENDS plus a branch in `url_for`. All instances made in one test
share one store (the same SQLite file, the same named memory store) and one fake clock.
`async def` tests run through the small runner at the bottom (no async plugin needed).

Redis: a real `redis-server` (no persistence) on a free loopback port, started on first
use and stopped at the end of the session; each `url_for("redis", ...)` flushes and
hands out the next of its 16 databases, so stores of one test never meet. The suite's
FakeClock reaches Redis only because SEATBELT_TEST_CLOCK=1 is set for these tests.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from seatbelt.ledger import Ledger, open_ledger
from tests.e2e.conftest import free_port

BACKENDS = ["memory", "sqlite", "redis"]

# 2024-03-10 12:00:00 UTC, a multiple of 3600 so rolling buckets start on it.
T0 = 1710072000.0


class FakeClock:
    """A clock tests move by hand, so windows and leases need no sleeping."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


def url_for(backend: str, directory: Path) -> str:
    """A fresh, empty store of `backend` (each call a new one)."""
    if backend == "memory":
        return f"memory://t-{uuid.uuid4().hex}"
    if backend == "sqlite":
        return f"sqlite:///{directory / uuid.uuid4().hex / 'ledger.db'}"
    if backend == "redis":
        return shared_redis().fresh_url()
    raise ValueError(backend)


# -- a real redis-server ---------------------------------------------------------------


class RedisServer:
    """One `redis-server` on 127.0.0.1 with persistence off, in its own temp dir.

    `kill()` and `start()` again (same port) simulate an outage; `password` turns on
    `requirepass`. Fails loudly when redis-server is missing (CI installs it).
    """

    def __init__(self, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="seatbelt-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._dbs = itertools.cycle(range(16))

    def url(self, db: int = 0, *, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        cmd = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.dir, "--databases", "16",
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        with open(os.path.join(self.dir, "redis.log"), "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL: everything in memory is gone, clients see refused connections."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str, db: int = 0) -> Any:
        """One synchronous command (test set-up and inspection only)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, db=db,
                             password=self.password, decode_responses=True)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def fresh_url(self) -> str:
        db = next(self._dbs)
        self.command("FLUSHDB", db=db)
        return self.url(db, password=self.password)


_SHARED: list[RedisServer] = []


def shared_redis() -> RedisServer:
    """The session's redis-server, started on first use."""
    if not _SHARED:
        _SHARED.append(RedisServer().start())
    return _SHARED[0]


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_redis() -> Iterator[None]:
    yield
    while _SHARED:
        _SHARED.pop().stop()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's real redis-server (shared by every Redis test of this directory)."""
    return shared_redis()


@pytest.fixture(autouse=True)
def _test_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Redis ledger honours a client clock only with this set (tests only)."""
    monkeypatch.setenv("SEATBELT_TEST_CLOCK", "1")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_for(request.param, tmp_path)


class Ledgers:
    """The ledgers of one test, all on one store and one clock.

    `await make_ledger(**kw)` builds and opens one inside the test; fixtures only build
    (`build`), and the runner below opens those before the test and closes every ledger
    after it, in the test's own event loop (a networked backend's connections are bound
    to the loop that made them).
    """

    def __init__(self, url: str, clock: FakeClock) -> None:
        self.url, self.clock = url, clock
        self.made: list[Ledger] = []
        self.unopened: list[Ledger] = []

    def build(self, **kw: Any) -> Ledger:
        kw.setdefault("clock", self.clock)
        ledger = open_ledger(self.url, **kw)
        self.made.append(ledger)
        return ledger

    async def __call__(self, **kw: Any) -> Ledger:
        ledger = self.build(**kw)
        await ledger.open()
        return ledger

    async def open_built(self) -> None:
        while self.unopened:
            await self.unopened.pop(0).open()

    async def close_all(self) -> None:
        for ledger in self.made:
            await ledger.close()


MakeLedger = Ledgers


@pytest.fixture
def make_ledger(ledger_url: str, clock: FakeClock) -> Ledgers:
    return Ledgers(ledger_url, clock)


@pytest.fixture
def ledger(make_ledger: Ledgers) -> Ledger:
    """An instance of the parametrised backend, opened when the test starts."""
    built = make_ledger.build()
    make_ledger.unopened.append(built)
    return built


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests of this directory in a fresh event loop (no plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    ledgers = pyfuncitem.funcargs.get("make_ledger")

    async def main() -> None:
        try:
            if isinstance(ledgers, Ledgers):
                await ledgers.open_built()
            await pyfuncitem.obj(**args)
        finally:
            if isinstance(ledgers, Ledgers):
                await ledgers.close_all()

    asyncio.run(main())
    return True
