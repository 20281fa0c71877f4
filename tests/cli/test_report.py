from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seatbelt.cli.report import FIELDS, USD_FIELDS, format_table, main, report_caps, report_rows
from seatbelt.config.policy import load_policy
from seatbelt.ledger import open_ledger
from seatbelt.ledger.base import CapState, Window
from seatbelt.records.metrics import ACCOUNT_KEY, BudgetRow, budget_rows

REPO = Path(__file__).resolve().parent.parent

POLICY = """
    version: 1
    accounts:
      research: {cap: 1000, window: balance}
      sandbox: {}
    keys:
      - id: agent-zero
        account: research
        credential_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
        cap: 100
        window: {rolling: 3600}
      - id: agent-one
        account: research
        credential_sha256: 6b86b273ff34fce19c6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b
      - id: tinker
        account: sandbox
        credential_sha256: d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f64d2a12d6d1f30b4d1
        cap: 50
        window: daily
"""


@pytest.fixture
def policy(tmp_path, write_policy):
    return load_policy(str(write_policy(tmp_path, POLICY)))


def state(subject: str, spent: int, reserved: int) -> CapState:
    return CapState(subject, None, Window(), spent, reserved)  # limit/window come from policy


def test_caps_needed_once_each(policy):
    assert [c.subject for c in report_caps(policy)] == [
        "key:agent-zero", "account:research", "key:agent-one", "key:tinker", "account:sandbox",
    ]


def test_rows_negative_remaining_and_uncapped_null(policy):
    rows = report_rows(policy, [
        state("key:agent-zero", 150, 5),  # overran its cap
        state("key:agent-one", 300, 20),
        state("account:research", 450, 25),
    ])
    assert [tuple(r)[:7] for r in rows] == [FIELDS] * 3
    zero, one, tinker = rows
    assert zero == {
        "account": "research", "key": "agent-zero", "window": "rolling:3600", "cap": 100,
        "spent": 150, "reserved": 5, "remaining": -55, "account_cap": 1000,
        "account_spent": 450, "account_remaining": 525, "account_window": "balance",
        "account_reserved": 25, **dict.fromkeys(USD_FIELDS),  # no USD cap: USD columns null
        "credit": 0,
    }
    assert (one["cap"], one["spent"], one["reserved"], one["remaining"]) == (None, 300, 20, None)
    assert one["window"] == "balance" and one["account_remaining"] == 525
    # nothing in the ledger yet for tinker or its uncapped account: zeros
    assert (tinker["window"], tinker["cap"], tinker["spent"], tinker["remaining"]) == (
        "daily", 50, 0, 50)
    assert (tinker["account_cap"], tinker["account_spent"], tinker["account_remaining"]) == (
        None, 0, None)


def test_rows_without_an_account_cap():
    """A policy whose caps_for names only the key's cap still reports (account fields null)."""
    from seatbelt.ledger.base import Cap

    class Key:
        id, account, cap, window = "k", "acct", 10, Window("monthly")

    class Policy:
        keys = (Key(),)

        def caps_for(self, key):
            return [Cap("key:k", 10, Window("monthly"))]

        def usd_caps_for(self, key):
            return []

    (row,) = report_rows(Policy(), [state("key:k", 4, 1)])
    assert row["window"] == "monthly" and row["remaining"] == 5
    assert row["account_cap"] is None and row["account_spent"] is None


def test_table_is_aligned(policy):
    rows = report_rows(policy, [state("key:agent-zero", 12345, 0)])
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:7] == list(FIELDS)
    assert len(lines) == 4
    assert lines[2].split()[:4] == ["research", "agent-one", "balance", "-"]
    # right-aligned numbers: every row's `spent` ends in the same column
    end = lines[0].index("spent") + len("spent")
    assert all(line[end - 1] != " " and line[end:end + 1] in (" ", "") for line in lines)


def test_budget_rows_from_report(policy):
    rows = budget_rows(report_rows(policy, [state("account:research", 7, 3)]))
    assert BudgetRow("research", ACCOUNT_KEY, 1000, 7, 3, 990) in rows
    assert BudgetRow("sandbox", ACCOUNT_KEY, None, 0, 0, None) in rows
    assert [r.key for r in rows].count(ACCOUNT_KEY) == 2
    assert len(rows) == 5


# --- the CLI ------------------------------------------------------------------------------


async def _fill(url: str, policy) -> None:
    """A proxy's work: one overrun settled, one hold still live."""
    ledger = open_ledger(url)
    await ledger.open()
    zero, one = policy.keys[0], policy.keys[1]
    r = await ledger.reserve(policy.caps_for(zero), 40)
    assert r.granted
    await ledger.settle(r.hold_id, 130, source="reported")
    r = await ledger.reserve(policy.caps_for(one), 25)
    assert r.granted
    await ledger.close()  # the hold stays: close never touches live holds


def run_report(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "seatbelt.cli.report", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_json_against_a_sqlite_ledger(tmp_path, write_policy, policy):
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"  # absolute path -> sqlite:////...
    asyncio.run(_fill(url, policy))
    pol = write_policy(tmp_path, POLICY)
    proc = run_report("--ledger", url, "--policy", str(pol), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["key"] for r in rows] == ["agent-zero", "agent-one", "tinker"]
    zero, one, _ = rows
    assert (zero["spent"], zero["reserved"], zero["remaining"]) == (130, 0, -30)
    assert (one["spent"], one["reserved"], one["remaining"]) == (0, 25, None)
    assert (zero["account_spent"], zero["account_remaining"]) == (130, 1000 - 130 - 25)
    # read-only: the live hold is still there, unreclaimed, after the report
    proc2 = run_report("--ledger", url, "--policy", str(pol), "--json")
    assert json.loads(proc2.stdout)[1]["reserved"] == 25

    table = run_report("--ledger", url, "--policy", str(pol))
    assert table.returncode == 0
    assert table.stdout.splitlines()[1].split()[:7] == [
        "research", "agent-zero", "rolling:3600", "100", "130", "0", "-30"]


@pytest.mark.parametrize("ledger", [None, "sqlite:///stat/ledger.db", "memory://"])
def test_cli_a_ledger_no_proxy_wrote_is_one_line_exit_1_and_creates_nothing(
        tmp_path, write_policy, ledger):
    """Missing or mistyped: not a table of zeros that says every budget is untouched."""
    pol = write_policy(tmp_path, POLICY)
    args = ["--policy", str(pol), *(["--ledger", ledger] if ledger else [])]
    proc = run_report(*args, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == "", proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seatbelt report: --ledger: "), lines
    assert ("memory://" in lines[0]) if ledger == "memory://" else ("no ledger file" in lines[0])
    assert not (tmp_path / "state").exists() and not (tmp_path / "stat").exists()


def test_credit_after_a_top_up_reads_as_credit(policy):
    rows = report_rows(policy, [state("key:agent-zero", -40, 0)])
    assert rows[0]["spent"] == -40 and rows[0]["credit"] == 40
    table = format_table(rows).splitlines()
    assert table[1].split()[:6] == ["research", "agent-zero", "rolling:3600", "100", "40",
                                    "credit"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ledger", "ftp://nowhere"], "--ledger"),
        (["--ledger", "redis://:hunter2@127.0.0.1:1/0"], "ledger"),
        (["--policy", "does/not/exist.yaml"], "does/not/exist.yaml"),
        (["--nonsense"], "--nonsense"),
    ],
)
def test_cli_errors_are_one_line_exit_1(tmp_path, write_policy, args, needle):
    pol = write_policy(tmp_path, POLICY)
    full = ["--policy", str(pol), *args] if "--policy" not in args else args
    proc = run_report(*full, cwd=tmp_path)
    assert proc.returncode == (2 if args == ["--nonsense"] else 1)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "hunter2" not in proc.stderr


def test_cli_bad_policy_names_file_and_line(tmp_path, write_policy, capsys):
    pol = write_policy(tmp_path, "version: 1\nkeys:\n  - id: a\n    cap: -5\n")
    assert main(["--policy", str(pol), "--ledger", "memory://"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{pol}:" in err


def test_cli_unreadable_ledger_file(tmp_path, write_policy, capsys):
    db = tmp_path / "ledger.db"
    db.write_bytes(b"this is not a database" * 100)
    pol = write_policy(tmp_path, POLICY)
    assert main(["--policy", str(pol), "--ledger", f"sqlite:///{db}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("seatbelt report: ledger sqlite:///")
