"""USD holds at admission and settlement (seatbelt/usd/money.py) on a real memory ledger."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from seatbelt.apis.base import Usage
from seatbelt.config.policy import fingerprint, load_policy
from seatbelt.ledger import open_ledger
from seatbelt.ledger.base import Cap, CapRefusal, Window
from seatbelt.metering.meter import Outcome
from seatbelt.runtime import Runtime
from seatbelt.settlement import finish as settlement
from seatbelt.usd import money

POLICY = f"""\
version: 1
prices:
  gpt-4o-mini: {{input: 1000, cached_input: 100, output: 2000}}
accounts:
  team: {{cap_usd: 1}}
keys:
  - id: alice
    account: team
    credential_sha256: {fingerprint("sk-a")}
    cap_usd: 0.5
    window_usd: daily
  - id: bob
    account: team
    credential_sha256: {fingerprint("sk-b")}
"""


def load(tmp_path, write_policy):
    return load_policy(str(write_policy(tmp_path, POLICY)))


def test_unpriced_models_are_refused_only_under_a_usd_cap(tmp_path, write_policy) -> None:
    policy = load(tmp_path, write_policy)
    alice, bob = policy.keys
    assert money.check_priced(policy, alice, "gpt-4o-mini") is None
    refusal = money.check_priced(policy, alice, "gpt-4o")
    assert refusal is not None
    assert (refusal.status, refusal.code) == (403, "model_not_allowed")
    assert "no price" in refusal.message and "'alice'" in refusal.message
    assert "names no model" in money.check_priced(policy, alice, None).message
    # bob has no cap_usd of his own, but his account does
    assert "account's cap_usd" in money.check_priced(policy, bob, "gpt-4o").message


def test_usd_refusals_speak_dollars_with_the_token_status_rules() -> None:
    windows = {"usd:key:a": Window("daily"), "usd:account:t": Window()}
    quota = CapRefusal("usd:account:t", "quota", None, 1_000_000, 990_000, 0, 20_000)
    r = money.for_usd_caps((quota,), "a", windows)
    assert (r.status, r.code, r.retry_after) == (429, "insufficient_quota", None)
    assert "account 't' (of key 'a') has spent $0.99 of its $1.00 USD balance" in r.message
    assert "$0.02" in r.message
    rate = CapRefusal("usd:key:a", "rate", 3600, 500_000, 450_000, 0, 100_000)
    r = money.for_usd_caps((rate,), "a", windows)
    assert (r.status, r.code, r.retry_after) == (429, "rate_limit_exceeded", 3600)
    assert "key 'a' has used $0.45 of its $0.50 USD cap (per UTC day)" in r.message
    assert money.for_usd_caps((rate, quota), "a", windows).code == "insufficient_quota"


def test_admit_settle_and_release_after_an_operator_release(tmp_path, write_policy) -> None:
    policy = load(tmp_path, write_policy)
    alice = policy.keys[0]

    async def go() -> None:
        ledger = open_ledger("memory://")
        await ledger.open()
        rt = Runtime()
        hold, refused = await money.admit(rt, ledger, policy, alice, "gpt-4o-mini", 100, 200)
        assert refused is None and hold is not None
        assert hold.amount == 100 * 1000 + 100 * 2000  # prompt at input, rest at output
        caps = policy.usd_caps_for(alice)
        assert [s.reserved for s in await ledger.snapshot(caps)] == [300_000, 300_000]
        # a second one does not fit alice's $0.50: refused, nothing more held
        again, refused = await money.admit(rt, ledger, policy, alice, "gpt-4o-mini", 100, 200)
        assert again is None and refused is not None and refused.code == "rate_limit_exceeded"
        assert [s.reserved for s in await ledger.snapshot(caps)] == [300_000, 300_000]

        meter = SimpleNamespace(price=policy.price_for("gpt-4o-mini"), ledger=ledger,
                                usd_hold_id=hold.hold_id, usd_reserved=hold.amount,
                                usd_caps=tuple(caps), flow_id="f")
        usage = Usage(prompt_tokens=90, completion_tokens=50, cached_tokens=40)
        result = Outcome("settle", 90, 50, usage, "reported", "served")
        await ledger.release(hold.hold_id)  # an operator released it while the request ran
        charged, overrun = money.usd_outcome(meter, result)
        assert charged == 50 * 1000 + 40 * 100 + 50 * 2000 and not overrun
        recorded: list[str] = []
        settlement.finish_holds(rt, ledger, [(hold.hold_id, charged, tuple(caps))], "settle",
                                "reported", "f", lambda: recorded.append("audit"))
        assert recorded == ["audit"]
        await asyncio.gather(*rt._tasks)  # the charge onto the caps after the release
        assert [s.spent for s in await ledger.snapshot(caps)] == [charged, charged]
        assert [s.reserved for s in await ledger.snapshot(caps)] == [0, 0]

        unpriced = SimpleNamespace(price=None)
        assert money.usd_outcome(unpriced, result) == (None, False)
        released = Outcome("release", None, None, Usage(), "none", "upstream_error")
        assert money.usd_outcome(meter, released) == (0, False)
        over = Outcome("settle", 900, 5000, Usage(900, 5000), "reported", "served")
        assert money.usd_outcome(meter, over)[1]  # above the USD hold: an overrun
        await ledger.close()

    asyncio.run(go())


def test_a_reclaimed_usd_hold_is_audited_in_dollars(tmp_path, write_policy) -> None:
    import json

    policy = load(tmp_path, write_policy)
    audit = tmp_path / "audit.jsonl"

    async def go() -> None:
        clock = [1000.0]
        dead = open_ledger("memory://reclaim-usd", clock=lambda: clock[0], lease_seconds=10)
        await dead.open()
        await dead.reserve(policy.usd_caps_for(policy.keys[0]), 123_456)
        clock[0] += 60
        live = open_ledger("memory://reclaim-usd", clock=lambda: clock[0], lease_seconds=10)
        reclaimed = await live.open()  # reclaims the dead owner's hold
        rt = Runtime()
        rt.audit.open(str(audit))
        rt.record_reclaimed(reclaimed)
        rt.audit.close()
        assert [s.spent for s in await live.snapshot([Cap("usd:key:alice", None)])] == [123_456]

    asyncio.run(go())
    (line,) = [json.loads(x) for x in audit.read_text().splitlines()]
    assert (line["key"], line["account"], line["usage_source"]) == ("alice", "team", "orphaned")
    assert (line["reserved"], line["cost_usd"]) == (None, 0.123456)
