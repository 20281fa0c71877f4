"""Operator actions (seatbelt/cli/admin.py) and their mitmproxy commands: reset, top-up, holds,
release, each one audit line; at the end `python -m seatbelt.cli.admin` beside a running proxy,
on SQLite and a real Redis: it acts, audits, and neither registers an owner nor reclaims the
proxy's holds."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

import seatbelt.addon as entry
from seatbelt.cli import admin as ops
from seatbelt.config.policy import fingerprint, load_policy
from seatbelt.ledger import Ledger, open_ledger, parse_ledger_url
from seatbelt.records.audit import AUDIT_FIELDS
from seatbelt.runtime import Runtime
from seatbelt.ui.commands import SeatbeltCommands
from tests.ledger import conftest as ledgers
from tests.ledger.conftest import shared_redis, url_for

POLICY = f"""\
version: 1
prices:
  gpt-4o-mini: {{input: 0.15, output: 0.60}}
accounts:
  team: {{cap: 1000, cap_usd: 10}}
  solo: {{}}
keys:
  - id: alice
    account: team
    credential_sha256: {fingerprint("sk-a")}
    cap: 500
    cap_usd: 1
  - id: bob
    account: solo
    credential_sha256: {fingerprint("sk-b")}
    cap: 100
"""


@pytest.fixture
def policy(tmp_path, write_policy):
    return load_policy(str(write_policy(tmp_path, POLICY)))


def run(coro):
    return asyncio.run(coro)


def test_targets(policy) -> None:
    alice = ops.resolve_target(policy, "alice")
    assert (alice.label, alice.account, alice.tokens.subject, alice.tokens.limit) == (
        "key:alice", "team", "key:alice", 500)
    assert alice.usd is not None and alice.usd.subject == "usd:key:alice"
    assert ops.resolve_target(policy, "key:bob").usd is None
    team = ops.resolve_target(policy, "account:team")
    assert (team.tokens.subject, team.tokens.limit) == ("account:team", 1000)
    assert team.usd is not None and team.usd.limit == 10_000_000
    for bad in ("carol", "account:nobody", "hold:x"):
        with pytest.raises(ops.OperatorError):
            ops.resolve_target(policy, bad)


def test_reset_topup_release_on_a_ledger(policy) -> None:
    async def go() -> None:
        ledger = open_ledger("memory://")
        await ledger.open()
        alice = ops.resolve_target(policy, "alice")
        caps = policy.caps_for(policy.keys[0])
        usd_caps = policy.usd_caps_for(policy.keys[0])
        r = await ledger.reserve(caps, 450)
        await ledger.settle(r.hold_id, 450, source="reported")
        u = await ledger.reserve(usd_caps, 900_000)
        await ledger.settle(u.hold_id, 800_000, source="reported")
        live = await ledger.reserve(caps, 30)
        assert not (await ledger.reserve(caps, 100)).granted

        done = await ops.reset(ledger, alice)
        assert (done.outcome, done.adjust_tokens, done.spent_after) == ("operator_reset", -450, 0)
        assert (done.adjust_usd, done.spent_usd_after) == (-800_000, 0)
        (key_state, team_state) = await ledger.snapshot(caps)
        assert (key_state.spent, key_state.reserved) == (0, 30)  # the live hold stays
        assert team_state.spent == 450  # a key's reset leaves its account's spend alone
        assert (await ledger.reserve(caps, 100)).granted

        up = await ops.topup(ledger, ops.resolve_target(policy, "bob"), 250)
        assert (up.outcome, up.adjust_tokens, up.spent_after) == ("operator_topup", -250, -250)
        assert "of 100" in up.message and "350 left" in up.message
        usd_up = await ops.topup(ledger, alice, 2_000_000, usd=True)
        assert usd_up.spent_usd_after == -2_000_000 and "$2.00" in usd_up.message
        with pytest.raises(ops.OperatorError, match="no USD budget"):
            await ops.topup(ledger, ops.resolve_target(policy, "bob"), 1, usd=True)
        with pytest.raises(ops.OperatorError, match="positive"):
            await ops.topup(ledger, alice, 0)

        gone = await ops.release(ledger, live.hold_id)
        assert gone.outcome == "operator_release" and gone.hold.amount == 30
        assert (gone.key, gone.account) == ("alice", "team")
        assert live.hold_id not in {h.hold_id for h in await ledger.holds()}
        with pytest.raises(ops.OperatorError, match="no live hold"):
            await ops.release(ledger, live.hold_id)
        await ledger.close()

    run(go())


def test_audit_line_has_the_contract_fields_then_the_operator(policy) -> None:
    result = ops.Result("operator_topup", "team", "alice", "key:alice", "m",
                        adjust_usd=-1_500_000, spent_usd_after=250_000)
    line = ops.audit_line(result, via="cli", operator="ops-user")
    assert tuple(line)[: len(AUDIT_FIELDS)] == AUDIT_FIELDS
    assert (line["outcome"], line["key"], line["account"]) == ("operator_topup", "alice", "team")
    assert (line["operator"], line["via"], line["target"]) == ("ops-user", "cli", "key:alice")
    assert (line["adjust_usd"], line["spent_usd_after"]) == (-1.5, 0.25)
    assert line["flow_id"].startswith("operator:") and line["usage_source"] == "none"
    json.dumps(line)
    assert ops.operator_name()  # the test runner's OS user


def test_a_top_up_beyond_the_spend_reads_as_credit() -> None:
    assert ops._spent_now(-500) == "credit now 500"
    assert ops._spent_now(120) == "spent now 120"
    assert ops._spent_now(-1_500_000, usd=True) == "credit now $1.50"


def test_hold_lines_show_tokens_and_dollars() -> None:
    from seatbelt.ledger.base import HoldInfo

    holds = [HoldInfo("h1", "o" * 32, 70, ("key:alice", "account:team"), 100.0),
             HoldInfo("h2", "o" * 32, 1_250_000, ("usd:key:alice", "usd:account:team"), 100.0)]
    assert ops.hold_lines(holds, now=112.0) == [
        "hold_id  amount     key    account  age    owner",
        "h1       70 tokens  alice  team     12.0s  oooooooooooo",
        "h2       $1.25      alice  team     12.0s  oooooooooooo",
    ]
    assert ops.hold_lines([]) == ["seatbelt: no live holds"]


# -- the mitmproxy commands --------------------------------------------------------------


@pytest.fixture
def runtime(monkeypatch) -> Runtime:
    rt = Runtime()
    monkeypatch.setattr(entry, "RUNTIME", rt)
    return rt


async def _settled(rt: Runtime, tasks: int = 50) -> None:
    for _ in range(tasks):
        await asyncio.sleep(0)
        if not rt._tasks:
            return
    await asyncio.gather(*list(rt._tasks))


def test_commands_act_on_the_proxy_ledger_and_audit(runtime, tmp_path, write_policy) -> None:
    path = write_policy(tmp_path, POLICY)
    audit = tmp_path / "audit.jsonl"
    released: list[str] = []

    async def go() -> None:
        sb = entry.Seatbelt()
        cmds = SeatbeltCommands(lambda: entry.RUNTIME)
        with taddons.context(sb, cmds) as tctx:
            with pytest.raises(exceptions.CommandError, match="not open"):
                tctx.master.commands.execute("seatbelt.reset alice")
            tctx.configure(sb, seatbelt_policy=str(path), seatbelt_ledger="memory://",
                           seatbelt_metrics="", seatbelt_audit=str(audit))
            for _ in range(100):
                if runtime.ready():
                    break
                await asyncio.sleep(0.01)
            caps = runtime.policy.caps_for(runtime.policy.keys[0])
            r = await runtime.ledger.reserve(caps, 400)
            await runtime.ledger.settle(r.hold_id, 400, source="reported")
            live = await runtime.ledger.reserve(caps, 20)
            released.append(live.hold_id)

            execute = tctx.master.commands.execute
            assert "started" in execute("seatbelt.reset alice")
            await _settled(runtime)
            assert (await runtime.ledger.snapshot(caps[:1]))[0].spent == 0
            execute("seatbelt.topup key:bob 40")
            execute("seatbelt.topup_usd alice $0.50")
            await _settled(runtime)
            bob = runtime.policy.caps_for(runtime.policy.keys[1])[0]
            assert (await runtime.ledger.snapshot([bob]))[0].spent == -40
            usd = runtime.policy.usd_caps_for(runtime.policy.keys[0])[0]
            assert (await runtime.ledger.snapshot([usd]))[0].spent == -500_000

            assert execute("seatbelt.holds") == [
                "seatbelt: reading the holds now; run seatbelt.holds again"]
            await _settled(runtime)
            lines = execute("seatbelt.holds")
            assert lines[0].startswith("seatbelt: 1 live hold(s), read ")
            assert lines[1].split() == ["hold_id", "amount", "key", "account", "age", "owner"]
            assert lines[2].split()[:5] == [live.hold_id, "20", "tokens", "alice", "team"]
            execute(f"seatbelt.release {live.hold_id}")
            await _settled(runtime)
            assert await runtime.ledger.holds() == []

            for bad, says in [("seatbelt.reset carol", "no key"),
                              ("seatbelt.topup alice 0", "positive"),
                              ("seatbelt.topup_usd bob 5", "no cap_usd"),
                              ("seatbelt.topup_usd alice lots", "not a USD amount")]:
                with pytest.raises(exceptions.CommandError, match=says):
                    execute(bad)
            await _settled(runtime)

    run(go())
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    ours = [x for x in lines if x["outcome"].startswith("operator_")]
    assert [x["outcome"] for x in ours] == [
        "operator_reset", "operator_topup", "operator_topup", "operator_release"]
    assert all(x["via"] == "command" and x["operator"] for x in ours)
    assert (ours[0]["adjust_tokens"], ours[0]["target"]) == (-400, "key:alice")
    assert ours[2]["adjust_usd"] == -0.5
    assert ours[3]["hold_id"] == released[0] and ours[3]["hold_amount"] == 20


# --- the CLI beside a running proxy, on SQLite and a real Redis ---------------------------


@pytest.fixture(scope="module", autouse=True)
def _redis() -> Iterator[None]:
    """The redis-server tests/ledger/conftest.py starts on first use, stopped after these."""
    yield
    while ledgers._SHARED:
        ledgers._SHARED.pop().stop()


CLI_POLICY = f"""\
version: 1
prices:
  gpt-4o-mini: {{input: 0.15, output: 0.60}}
accounts:
  team: {{cap: 1000}}
keys:
  - id: alice
    account: team
    credential_sha256: {fingerprint("sk-a")}
    cap: 500
    cap_usd: 1
  - id: bob
    account: team
    credential_sha256: {fingerprint("sk-b")}
    cap: 100
"""


def owners(url: str) -> set[str]:
    parsed = parse_ledger_url(url)
    if parsed.kind == "sqlite":
        with sqlite3.connect(parsed.path) as conn:
            return {r[0] for r in conn.execute("SELECT owner FROM owners")}
    rows = shared_redis().command("ZRANGE", "{seatbelt}:owners", "0", "-1", db=parsed.db)
    return set(rows)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = ops.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_cli_acts_beside_a_running_proxy(
    backend: str, tmp_path: Path, write_policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_for(backend, tmp_path)
    policy_path = write_policy(tmp_path, CLI_POLICY)
    policy = load_policy(str(policy_path))
    alice, bob = policy.keys
    audit = tmp_path / "audit.jsonl"
    proxy: Ledger = open_ledger(url)

    async def setup() -> str:
        await proxy.open()  # a live proxy: registered owner, heartbeat
        r = await proxy.reserve(policy.caps_for(alice), 300)
        await proxy.settle(r.hold_id, 300, source="reported")  # type: ignore[arg-type]
        u = await proxy.reserve(policy.usd_caps_for(alice), 700_000)
        await proxy.settle(u.hold_id, 700_000, source="reported")  # type: ignore[arg-type]
        live = await proxy.reserve(policy.caps_for(alice), 20)
        assert live.hold_id is not None
        return live.hold_id

    async def state() -> tuple[list[tuple[int, int]], set[str]]:
        caps = [*policy.caps_for(alice), policy.caps_for(bob)[0], policy.usd_caps_for(alice)[0]]
        states = await proxy.snapshot(caps)
        return [(s.spent, s.reserved) for s in states], {h.hold_id for h in await proxy.holds()}

    hold_id = asyncio.run(setup())
    before = owners(url)
    assert len(before) == 1
    base = ["--ledger", url, "--policy", str(policy_path), "--audit", str(audit)]

    code, out, _ = cli(capsys, *base, "reset", "alice")
    assert code == 0 and "reset key:alice: 300 tokens cancelled" in out and "$0.70" in out
    code, out, _ = cli(capsys, *base, "topup", "key:bob", "60")
    assert code == 0 and "topped up key:bob by 60 tokens" in out
    code, out, _ = cli(capsys, *base, "topup", "alice", "0.25", "--usd")
    assert code == 0 and "$0.25" in out
    spent, holds = asyncio.run(state())
    # key alice, account team (untouched by a key's reset), key bob, alice's USD
    assert spent == [(0, 20), (300, 20), (-60, 0), (-250_000, 0)]
    assert holds == {hold_id}  # the proxy's hold was neither reclaimed nor touched

    code, out, _ = cli(capsys, *base, "holds", "--json")
    (row,) = json.loads(out)
    assert (row["hold_id"], row["key"], row["amount"], row["unit"]) == (
        hold_id, "alice", 20, "tokens")
    code, out, _ = cli(capsys, *base, "release", hold_id)
    assert code == 0 and f"released hold {hold_id}" in out
    assert asyncio.run(state())[1] == set()
    assert owners(url) == before  # the CLI left no owner behind

    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["outcome"] for x in lines] == [
        "operator_reset", "operator_topup", "operator_topup", "operator_release"]
    assert all(x["via"] == "cli" and x["operator"] for x in lines)
    assert (lines[0]["adjust_tokens"], lines[0]["adjust_usd"]) == (-300, -0.7)
    assert lines[3]["hold_id"] == hold_id

    code, _, err = cli(capsys, *base, "reset", "carol")
    assert code == 1 and "no key 'carol'" in err and err.count("\n") == 1
    code, _, err = cli(capsys, *base, "release", "nope")
    assert code == 1 and "no live hold" in err
    code, _, err = cli(capsys, *base, "topup", "bob", "ten")
    assert code == 1 and "positive whole number" in err
    assert len(audit.read_text().splitlines()) == 4  # refused actions write nothing
    asyncio.run(proxy.close())


def test_cli_refuses_ledgers_it_cannot_share(
    tmp_path: Path, write_policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_path = str(write_policy(tmp_path, CLI_POLICY))
    missing = f"sqlite:///{tmp_path / 'nothing' / 'ledger.db'}"
    code, _, err = cli(capsys, "--ledger", missing, "--policy", policy_path, "reset", "alice")
    assert code == 1 and "no ledger file" in err
    assert not (tmp_path / "nothing").exists()  # and it did not create one
    code, _, err = cli(capsys, "--ledger", "memory://", "holds")
    assert code == 1 and "mitmproxy commands" in err
    code, _, err = cli(capsys, "--ledger", "postgres://x", "holds")
    assert code == 1 and "--ledger" in err
