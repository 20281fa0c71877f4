"""The background loop (seatbelt/lifecycle/background.py) against a real memory ledger:
what one tick does, and that the loop survives a bad tick. The fleet check's warning."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from prometheus_client import CollectorRegistry

from seatbelt.ledger import Cap, open_ledger
from seatbelt.ledger.base import LedgerUnavailable
from seatbelt.ledger.memory import MemoryLedger
from seatbelt.ledger.retry import Unfinished
from seatbelt.lifecycle.background import BEATS_EVERY, BackgroundLoop, FleetCheck
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime
from tests.ledger.conftest import FakeClock

CAPS = [Cap("key:k1", 1000), Cap("account:team", None)]


def runtime(url: str, clock: FakeClock) -> Runtime:
    rt = Runtime(metrics=Metrics(CollectorRegistry()))
    rt.ledger = open_ledger(url, clock=clock, lease_seconds=10)
    return rt


class Polls:
    def __init__(self) -> None:
        self.count = 0

    def poll(self, rt: Runtime) -> None:
        self.count += 1


def test_a_tick_opens_a_closed_ledger_and_polls_the_policy_every_time() -> None:
    async def go() -> tuple[bool, int]:
        rt = runtime("memory://", FakeClock())
        rt.policy_watch = watch = Polls()
        await rt.background.tick(1)
        opened = rt.health.open and rt.health.up
        await rt.background.tick(2)
        return opened, watch.count

    assert asyncio.run(go()) == (True, 2)


def test_only_every_fifth_tick_heartbeats_and_reclaims() -> None:
    url, clock = f"memory://t-{uuid.uuid4().hex}", FakeClock()

    async def go() -> list[int]:
        dead = open_ledger(url, clock=clock, lease_seconds=10)
        await dead.open()
        rt = runtime(url, clock)
        await rt.open_ledger()
        await dead.reserve(CAPS, 300)
        clock.advance(60)  # the dead owner's lease lapsed
        seen = []
        for tick in range(1, BEATS_EVERY + 1):
            await rt.background.tick(tick)
            (state,) = await rt.ledger.snapshot(CAPS[:1])
            seen.append(state.spent)
        return seen

    assert asyncio.run(go()) == [0] * (BEATS_EVERY - 1) + [300]  # charged whole at the beat


def test_a_tick_retries_the_queued_finishes() -> None:
    async def go() -> tuple[int, int, bool]:
        rt = runtime("memory://", FakeClock())
        await rt.open_ledger()
        hold = str((await rt.ledger.reserve(CAPS, 300)).hold_id)
        rt.ledger.unfinished.add(Unfinished(hold, "settle", 120, "reported"))
        await rt.background.tick(1)
        (state,) = await rt.ledger.snapshot(CAPS[:1])
        return state.spent, state.reserved, bool(rt.ledger.unfinished)

    assert asyncio.run(go()) == (120, 0, False)


def test_the_loop_survives_a_bad_tick_and_marks_the_ledger_down_on_a_fault() -> None:
    class Boom:
        """Tick 1 hits a bug, tick 2 a ledger fault; tick 3 notes what the loop made of it."""

        def __init__(self) -> None:
            self.calls = 0
            self.up_at_third: bool | None = None

        def poll(self, rt: Runtime) -> None:
            self.calls += 1
            if self.calls == 1:
                raise ValueError("a bug")
            if self.calls == 2:
                raise LedgerUnavailable("gone")
            if self.calls == 3:
                self.up_at_third = rt.health.up

    async def go() -> Boom:
        rt = runtime("memory://", FakeClock())
        rt.heartbeat_seconds = 0.0  # ticks back to back
        rt.health.set_up(True)
        rt.policy_watch = boom = Boom()
        loop = BackgroundLoop(rt)
        loop.ensure()
        while boom.calls < 3:
            await asyncio.sleep(0)
        loop.cancel()
        return boom

    boom = asyncio.run(go())
    assert boom.up_at_third is False  # the loop went on after both; the fault was noted


class Digests(MemoryLedger):
    """A ledger whose digest check answers the queued warnings in turn."""

    def __init__(self, *answers: str | None) -> None:
        super().__init__()
        self.answers = list(answers)

    async def check_policy_digest(self, digest: str, *, now: float | None = None) -> str | None:
        return self.answers.pop(0)


def test_the_fleet_warning_is_logged_once_and_its_end_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = FleetCheck()
    ledger = Digests("other policy", "other policy", None, None)
    with caplog.at_level(logging.INFO, logger="seatbelt"):
        for _ in range(4):
            asyncio.run(fleet.run(ledger, "abc"))
    assert not fleet.dirty and fleet.warning is None
    assert [r.getMessage() for r in caplog.records] == [
        "seatbelt: other policy",
        "seatbelt: every live proxy on this ledger runs the same policy again",
    ]
