"""One ledger test-suite for every backend.

`ledger` and `make_ledger` are parametrised by backend name; a new backend (Redis) is
one more entry in BACKENDS plus a branch in `url_for`. All instances made in one test
share one store (the same SQLite file, the same named memory store) and one fake clock.
`async def` tests run through the small runner at the bottom (no async plugin needed).
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from pathlib import Path
from typing import Any

import pytest

from addon.ledger import Ledger, open_ledger

BACKENDS = ["memory", "sqlite"]

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
    raise ValueError(backend)


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
