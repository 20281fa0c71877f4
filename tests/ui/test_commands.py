"""seatbelt.status and seatbelt.reload, called the way mitmweb and the console call them:
by name, through mitmproxy's command manager, with the addon loaded by taddons."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

import seatbelt.addon as entry
from seatbelt.cli.report import report_rows
from seatbelt.config.policy import fingerprint
from seatbelt.runtime import Runtime
from seatbelt.ui.commands import SeatbeltCommands, status_lines

POLICY = """\
version: 1
accounts:
  team: {{cap: 1000, window: daily}}
keys:
  - id: alice
    account: team
    credential_sha256: {alice}
    cap: 500
  - id: bob
    account: team
    credential_sha256: {bob}
"""
CAROL = """\
  - id: carol
    account: team
    credential_sha256: {carol}
    cap: 70
    window: {{rolling: 3600}}
"""


@pytest.fixture
def runtime(monkeypatch) -> Runtime:
    rt = Runtime()
    monkeypatch.setattr(entry, "RUNTIME", rt)
    return rt


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(alice=fingerprint("sk-a"), bob=fingerprint("sk-b")))
    return path


def run(coro_fn):
    asyncio.run(coro_fn())


async def start(tctx, sb, policy_file) -> None:
    tctx.configure(sb, seatbelt_policy=str(policy_file), seatbelt_ledger="memory://",
                   seatbelt_metrics="", seatbelt_audit="")
    for _ in range(100):  # the ledger opens in the background
        if entry.RUNTIME.ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not ready: {entry.RUNTIME.config_error}")


async def spend(rt: Runtime, key_id: str, settle: int, hold: int) -> None:
    """One settled request and one still in flight, straight through the ledger."""
    key = next(k for k in rt.policy.keys if k.id == key_id)
    caps = rt.policy.caps_for(key)
    first = await rt.ledger.reserve(caps, settle + 10)
    await rt.ledger.settle(first.hold_id, settle, source="reported")
    second = await rt.ledger.reserve(caps, hold)
    assert first.granted and second.granted


def test_status_lists_every_key_from_the_ledger(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        cmds = SeatbeltCommands(lambda: entry.RUNTIME)
        with taddons.context(sb, cmds) as tctx:
            await start(tctx, sb, policy_file)
            await spend(runtime, "alice", settle=120, hold=30)
            await spend(runtime, "bob", settle=7, hold=0)
            await runtime.refresh_budgets()  # what the background task does every second
            lines = tctx.master.commands.execute("seatbelt.status")
            assert lines[0].startswith("seatbelt: 2 key(s), ledger read ")
            assert lines[1:] == [
                "team/alice: window=balance cap=500 spent=120 reserved=30 remaining=350"
                " | account cap=1000 spent=127 reserved=30 remaining=843",
                "team/bob: window=balance cap=none spent=7 reserved=0 remaining=none"
                " | account cap=1000 spent=127 reserved=30 remaining=843",
            ]
            # the same rows as `python -m seatbelt.cli.report`
            states = await runtime.ledger.snapshot(
                [c for k in runtime.policy.keys for c in runtime.policy.caps_for(k)])
            assert lines[1:] == status_lines(report_rows(runtime.policy, states))

    run(go)


def test_status_before_the_first_snapshot_and_unconfigured(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        cmds = SeatbeltCommands(lambda: entry.RUNTIME)
        with taddons.context(sb, cmds) as tctx:
            with pytest.raises(exceptions.CommandError, match="not configured"):
                tctx.master.commands.execute("seatbelt.status")
            with pytest.raises(exceptions.CommandError, match="not configured"):
                tctx.master.commands.execute("seatbelt.reload")
            await start(tctx, sb, policy_file)
            runtime.last_report_at = None  # as if the background task had not run yet
            runtime.budgets.dirty = False
            (line,) = tctx.master.commands.execute("seatbelt.status")
            assert "not been read yet" in line
            assert runtime.budgets.dirty  # a fresh snapshot was asked for

    run(go)


def test_status_says_when_the_ledger_is_down(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        cmds = SeatbeltCommands(lambda: entry.RUNTIME)
        with taddons.context(sb, cmds) as tctx:
            await start(tctx, sb, policy_file)
            await runtime.refresh_budgets()
            runtime.ledger_up = False
            head = tctx.master.commands.execute("seatbelt.status")[0]
            assert "ledger unavailable now" in head

    run(go)


def test_reload_rereads_the_policy_and_a_broken_one_keeps_the_old(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        cmds = SeatbeltCommands(lambda: entry.RUNTIME)
        with taddons.context(sb, cmds) as tctx:
            await start(tctx, sb, policy_file)
            before = runtime.policy
            assert [k.id for k in before.keys] == ["alice", "bob"]

            policy_file.write_text(policy_file.read_text()
                                   + CAROL.format(carol=fingerprint("sk-c")))
            msg = tctx.master.commands.execute("seatbelt.reload")
            assert msg == f"seatbelt: policy {policy_file} reloaded (3 keys)"
            good = runtime.policy
            assert [k.id for k in good.keys] == ["alice", "bob", "carol"]
            assert good.key_by_fingerprint(fingerprint("sk-c")).cap == 70
            await runtime.refresh_budgets()
            lines = tctx.master.commands.execute("seatbelt.status")
            assert any(x.startswith("team/carol: window=rolling:3600 cap=70 ") for x in lines)

            policy_file.write_text("version: 1\nkeys:\n  - id: alice\n    cap: -5\n")
            with pytest.raises(exceptions.CommandError) as e:
                tctx.master.commands.execute("seatbelt.reload")
            assert "stays in force" in str(e.value) and str(policy_file) in str(e.value)
            assert "\n" not in str(e.value)
            assert runtime.policy is good and runtime.ready()

            policy_file.unlink()
            with pytest.raises(exceptions.CommandError, match="stays in force"):
                tctx.master.commands.execute("seatbelt.reload")
            assert runtime.policy is good

    run(go)


def test_the_script_exposes_both_commands_with_help(runtime):
    with taddons.context(*entry.addons) as tctx:
        cmds = tctx.master.commands.commands
        assert {"seatbelt.status", "seatbelt.reload"} <= set(cmds)
        assert "remaining" in cmds["seatbelt.status"].help
        assert cmds["seatbelt.status"].signature_help() == "seatbelt.status  -> str[]"
