"""The ledger interface's own helpers (seatbelt/ledger/base.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from seatbelt.ledger import open_ledger
from seatbelt.ledger.base import Cap, HoldIds, Window, new_owner


def test_owners_are_named_host_and_pid_so_an_operator_can_find_the_proxy():
    a, b = new_owner(), new_owner()
    host, pid, tail = a.split(":")
    assert host  # the machine, with anything unsafe in a file name replaced
    assert int(pid) == os.getpid() and len(tail) == 8 and a != b


def test_every_backend_names_its_holds_owner_host_pid(tmp_path: Path):
    async def go(url: str) -> str:
        ledger = open_ledger(url)
        await ledger.open()
        try:
            r = await ledger.reserve([Cap("key:k", 100, Window())], 10)
            [hold] = await ledger.holds()
            assert hold.hold_id == r.hold_id
            return hold.owner
        finally:
            await ledger.close()

    for url in ("memory://owner-test", f"sqlite:///{tmp_path / 'l.db'}"):
        owner = asyncio.run(go(url))
        assert owner.split(":")[1] == str(os.getpid()), (url, owner)


def test_hold_ids_are_unique_and_uuid_shaped():
    ids = HoldIds()
    a, b = ids(), ids()
    assert a != b and len(a) == 32 and int(a, 16) >= 0
