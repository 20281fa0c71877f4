"""The in-process ledger (seatbelt/ledger/memory.py): what only it does. The contract every
backend keeps, this one included, is tests/ledger/test_ledger.py."""

from __future__ import annotations

import uuid

import pytest

from seatbelt.ledger.base import Cap, LedgerUnavailable, Settlement
from seatbelt.ledger.memory import MemoryLedger

from .conftest import FakeClock

CAP = Cap("account:a", 100)


async def test_a_named_store_is_shared_and_a_plain_one_is_private() -> None:
    name = f"t-{uuid.uuid4().hex}"
    one, two, alone = MemoryLedger(name), MemoryLedger(name), MemoryLedger()
    assert (await one.reserve([CAP], 60)).granted
    assert not (await two.reserve([CAP], 60)).granted  # the same 100 tokens
    assert (await alone.reserve([CAP], 60)).granted  # a store of its own
    assert [s.reserved for s in await two.snapshot([CAP])] == [60]


async def test_finish_soon_finishes_at_once_and_answers_in_the_call() -> None:
    ledger = MemoryLedger()
    hold = str((await ledger.reserve([CAP], 50)).hold_id)
    got: list[tuple[Settlement | None, Exception | None]] = []
    ledger.finish_soon(hold, "settle", 70, source="reported",
                       done=lambda s, e: got.append((s, e)))
    assert got == [(Settlement(70, True), None)]  # before any await
    assert [(s.spent, s.reserved) for s in await ledger.snapshot([CAP])] == [(70, 0)]


async def test_a_readonly_ledger_refuses_writes_even_through_finish_soon() -> None:
    name = f"t-{uuid.uuid4().hex}"
    writer, reader = MemoryLedger(name), MemoryLedger(name, readonly=True)
    hold = str((await writer.reserve([CAP], 50)).hold_id)
    with pytest.raises(LedgerUnavailable):
        await reader.reserve([CAP], 1)
    got: list[tuple[Settlement | None, Exception | None]] = []
    reader.finish_soon(hold, "release", 0, source="none", done=lambda s, e: got.append((s, e)))
    assert got[0][0] is None and isinstance(got[0][1], LedgerUnavailable)
    assert await reader.open() == [] and await reader.heartbeat() == []
    assert [s.reserved for s in await reader.snapshot([CAP])] == [50]  # it still reads


async def test_close_forgets_an_owner_only_when_it_holds_nothing() -> None:
    clock = FakeClock()
    name = f"t-{uuid.uuid4().hex}"
    busy, idle = MemoryLedger(name, clock=clock), MemoryLedger(name, clock=clock)
    await busy.open()
    await idle.open()
    await busy.reserve([CAP], 10)
    await busy.close()
    await idle.close()
    assert set(busy._store.owners) == {busy.owner}  # its hold lives on until the lease lapses


async def test_reclaimed_total_counts_every_hold_charged_as_orphaned() -> None:
    clock = FakeClock()
    name = f"t-{uuid.uuid4().hex}"
    dead, live = MemoryLedger(name, clock=clock), MemoryLedger(name, clock=clock,
                                                               lease_seconds=10)
    await dead.open()
    await dead.reserve([CAP], 10)
    await dead.reserve([CAP], 20)
    clock.advance(60)
    reclaimed = await live.open()
    assert sorted(h.amount for h in reclaimed) == [10, 20] and live.reclaimed_total == 2
    assert await live.heartbeat() == [] and live.reclaimed_total == 2  # charged once
