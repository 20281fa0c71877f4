"""`python -m seatbelt.cli.admin` beside a running proxy, on SQLite and a real Redis: it acts,
audits, and neither registers an owner nor reclaims the proxy's holds."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from seatbelt.cli import admin as ops
from seatbelt.config.policy import fingerprint, load_policy
from seatbelt.ledger import Ledger, open_ledger, parse_ledger_url

from .conftest import shared_redis, url_for

POLICY = f"""\
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
    policy_path = write_policy(tmp_path, POLICY)
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
    policy_path = str(write_policy(tmp_path, POLICY))
    missing = f"sqlite:///{tmp_path / 'nothing' / 'ledger.db'}"
    code, _, err = cli(capsys, "--ledger", missing, "--policy", policy_path, "reset", "alice")
    assert code == 1 and "no ledger file" in err
    assert not (tmp_path / "nothing").exists()  # and it did not create one
    code, _, err = cli(capsys, "--ledger", "memory://", "holds")
    assert code == 1 and "mitmproxy commands" in err
    code, _, err = cli(capsys, "--ledger", "postgres://x", "holds")
    assert code == 1 and "--ledger" in err
