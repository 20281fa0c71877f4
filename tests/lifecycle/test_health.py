"""Ledger health (seatbelt/lifecycle/health.py): the gauge, the log lines, waiting for an
open under way."""

from __future__ import annotations

import asyncio
import logging

import pytest

from seatbelt.lifecycle.health import LedgerHealth


def test_usable_only_when_open_and_answering_and_a_new_ledger_starts_closed() -> None:
    health = LedgerHealth(lambda _: None)
    assert not health.usable()
    health.open = True
    health.set_up(True)
    assert health.usable()
    health.set_up(False, "timeout")
    assert not health.usable()
    health.set_up(True)
    health.reset()
    assert (health.open, health.up, health.usable()) == (False, False, False)


def test_the_gauge_says_up_down_or_failing_open() -> None:
    seen: list[float] = []
    health = LedgerHealth(seen.append)
    health.set_up(True)
    health.set_up(False, "x")
    health.fail_open = True
    health.set_up(False, "x")
    health.set_up(True)
    assert seen == [1, 0, -1, 1]


def test_changes_are_logged_once_and_say_what_happens_to_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = LedgerHealth(lambda _: None)
    with caplog.at_level(logging.INFO, logger="seatbelt"):
        health.set_up(True)  # the first up: nothing to say
        health.set_up(False, "refused")
        health.set_up(False, "refused")  # no change: no second line
        health.set_up(True)
        health.fail_open = True
        health.set_up(False, "gone")
    assert [r.getMessage() for r in caplog.records] == [
        "seatbelt: ledger unavailable (refused); refusing LLM requests",
        "seatbelt: ledger reachable again; admitting LLM requests",
        "seatbelt: ledger unavailable (gone); passing LLM requests UNMETERED (fail-open)",
    ]


def test_the_fail_open_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    health = LedgerHealth(lambda _: None)
    with caplog.at_level(logging.WARNING, logger="seatbelt"):
        for _ in range(5):
            health.warn_fail_open()
    assert len(caplog.records) == 1 and "FAIL-OPEN" in caplog.records[0].getMessage()


def test_a_waiter_wakes_when_the_open_under_way_ends() -> None:
    async def go() -> tuple[bool, bool]:
        health = LedgerHealth(lambda _: None)
        await asyncio.wait_for(health.wait_opening(60), 1)  # none under way: at once
        health.opening()
        waiter = asyncio.ensure_future(health.wait_opening(60))
        await asyncio.sleep(0)
        still_waiting = not waiter.done()
        health.opened()
        await asyncio.wait_for(waiter, 1)
        return still_waiting, waiter.done()

    assert asyncio.run(go()) == (True, True)


def test_a_waiter_gives_up_after_its_timeout() -> None:
    async def go() -> bool:
        health = LedgerHealth(lambda _: None)
        health.opening()
        await health.wait_opening(0.01)  # returns, never raises
        return health._opening is not None and not health._opening.is_set()

    assert asyncio.run(go())
