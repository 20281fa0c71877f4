"""Random interleavings of reserve / settle / release / lease expiry / crash-restart across
two proxies sharing one ledger, checked step by step against a model (issue 4, point 3).

The ledger suite's property test (tests/ledger) covers windows with one live owner; this
one adds what happens between owners: leases lapsing, a proxy dying (its instance dropped
without close) and a new one reclaiming its holds as `orphaned`, late settles and releases
of orphaned holds, and holds of a live owner that must never be taken. After every step
the live holds and every cap's spent/reserved equal the model's; at the end nothing is
reserved and the spend is exactly the sum of what was settled (orphans: whole holds).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seatbelt.ledger import Cap, Ledger, open_ledger
from tests.ledger.conftest import FakeClock, url_for

LEASE, MAX_HOLD = 10.0, 100.0
KEYS = {"a": Cap("key:a", 300), "b": Cap("key:b", None)}
ACCOUNT = Cap("account:x", 500)
ALL = [*KEYS.values(), ACCOUNT]

reserve = st.tuples(st.just("reserve"), st.integers(0, 1), st.sampled_from(sorted(KEYS)),
                    st.booleans(), st.integers(0, 200))
op = st.one_of(
    reserve,
    reserve,
    st.tuples(st.just("settle"), st.integers(0, 60), st.integers(0, 250)),
    st.tuples(st.just("release"), st.integers(0, 60)),
    st.tuples(st.just("advance"), st.integers(1, 30)),
    st.tuples(st.just("advance"), st.integers(1, 30)),
    st.tuples(st.just("beat"), st.integers(0, 1)),
    st.tuples(st.just("crash"), st.integers(0, 1)),
)


@dataclass
class Hold:
    owner: str
    amount: int
    created: float
    subjects: list[str]
    orphaned: bool = False


@dataclass
class Model:
    beats: dict[str, float] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)  # live or orphaned, not finished
    spent: dict[str, int] = field(default_factory=lambda: {c.subject: 0 for c in ALL})
    excess: dict[str, int] = field(default_factory=lambda: {c.subject: 0 for c in ALL})

    def charge(self, hold: Hold, tokens: int) -> None:
        for s in hold.subjects:
            self.spent[s] += tokens

    def reclaim(self, owner: str, now: float) -> int:
        """What heartbeat()/open() of `owner` at `now` does."""
        self.beats[owner] = now
        n = 0
        for h in self.holds.values():
            beat = self.beats.get(h.owner)
            if not h.orphaned and (h.created < now - MAX_HOLD or beat is None
                                   or beat < now - LEASE):
                h.orphaned = True
                self.charge(h, h.amount)
                n += 1
        return n

    def reserved(self, subject: str) -> int:
        return sum(h.amount for h in self.holds.values()
                   if not h.orphaned and subject in h.subjects)


async def run(url: str, ops: list[tuple]) -> None:
    clock = FakeClock()

    def make() -> Ledger:
        return open_ledger(url, clock=clock, lease_seconds=LEASE, max_hold_seconds=MAX_HOLD)

    model = Model()
    insts: list[Ledger] = []
    for _ in range(2):
        inst = make()
        model.reclaim(inst.owner, clock())
        await inst.open()
        insts.append(inst)
    order: list[str] = []  # hold ids in creation order, for the ops' indices
    try:
        for o in ops:
            now = clock()
            if o[0] == "reserve":
                inst = insts[o[1]]
                caps = [KEYS[o[2]]] + ([ACCOUNT] if o[3] else [])
                room = all(c.limit is None or model.spent[c.subject]
                           + model.reserved(c.subject) + o[4] <= c.limit for c in caps)
                r = await inst.reserve(caps, o[4])
                assert r.granted == room, (o, r, model.spent)
                if r.granted:
                    assert r.hold_id is not None
                    model.holds[r.hold_id] = Hold(inst.owner, o[4], now,
                                                  [c.subject for c in caps])
                    order.append(r.hold_id)
            elif o[0] in ("settle", "release") and order:
                hold_id = order.pop(o[1] % len(order))
                h = model.holds.pop(hold_id)
                inst = insts[o[1] % 2]  # any proxy may finish it: the id is global
                if o[0] == "release":
                    await inst.release(hold_id)
                    if h.orphaned:
                        model.charge(h, -h.amount)  # never sent after all: refunded
                else:
                    s = await inst.settle(hold_id, o[2], source="reported")
                    assert (s.charged, s.overrun) == (o[2], o[2] > h.amount)
                    model.charge(h, o[2] - (h.amount if h.orphaned else 0))
                    for subject in h.subjects:
                        model.excess[subject] += max(0, o[2] - h.amount)
            elif o[0] == "advance":
                clock.advance(o[1])
            elif o[0] == "beat":
                inst = insts[o[1]]
                assert len(await inst.heartbeat()) == model.reclaim(inst.owner, now)
            elif o[0] == "crash":
                dead = insts[o[1]]
                drop = getattr(dead, "_drop", None)
                if drop is not None:
                    drop()  # the connection goes with the process; nothing is cleaned up
                new = make()
                expected = model.reclaim(new.owner, now)
                await new.open()
                assert new.reclaimed_total == expected  # type: ignore[attr-defined]
                insts[o[1]] = new
            await check(insts[0], model)
        # Every request ends: finish what is open, then let every lease lapse.
        for hold_id in order:
            h = model.holds.pop(hold_id)
            await insts[0].settle(hold_id, h.amount // 2, source="estimated")
            model.charge(h, h.amount // 2 - (h.amount if h.orphaned else 0))
        clock.advance(LEASE + 1)
        await insts[1].heartbeat()
        await check(insts[0], model)
        assert await insts[0].holds() == []
        assert all(s.reserved == 0 for s in await insts[0].snapshot(ALL))
    finally:
        for inst in insts:
            await inst.close()


async def check(ledger: Ledger, model: Model) -> None:
    live = {hid for hid, h in model.holds.items() if not h.orphaned}
    assert {h.hold_id for h in await ledger.holds()} == live
    for s in await ledger.snapshot(ALL):
        assert (s.spent, s.reserved) == (model.spent[s.subject], model.reserved(s.subject)), s
        if s.limit is not None:
            assert s.spent + s.reserved <= s.limit + model.excess[s.subject], s


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=8, max_size=50))
def test_interleavings_across_owners_leases_and_crashes(
    backend: str, tmp_path: Path, ops: list[tuple]
) -> None:
    asyncio.run(run(url_for(backend, tmp_path), ops))
