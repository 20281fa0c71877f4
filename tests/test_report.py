"""`python -m seatbelt.report` (seatbelt/report.py), the contract's spelling of the spend
report, still runs the report of seatbelt/cli/report.py: the same rows, the same failures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from seatbelt.config.policy import load_policy
from seatbelt.ledger import open_ledger

ROOT = Path(__file__).resolve().parent.parent

POLICY = """\
version: 1
accounts:
  team: {cap: 5000}
keys:
  - id: k1
    account: team
    credential_sha256: %s
    cap: 1000
""" % ("ab" * 32)


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seatbelt.report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_shim_is_the_cli_report() -> None:
    from seatbelt import report as shim
    from seatbelt.cli import report as cli

    assert shim.main is cli.main


def test_python_m_seatbelt_report_prints_the_ledgers_spend(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    policy = load_policy(str(tmp_path / "policy.yaml"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def spend() -> None:
        ledger = open_ledger(url)
        await ledger.open()
        hold = (await ledger.reserve(policy.caps_for(policy.keys[0]), 300)).hold_id
        await ledger.settle(str(hold), 120, source="reported")
        await ledger.close()

    asyncio.run(spend())
    done = report("--policy", str(tmp_path / "policy.yaml"), "--ledger", url, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["key"], row["account"], row["cap"], row["spent"], row["remaining"]) == (
        "k1", "team", 1000, 120, 880)


def test_its_failures_are_one_line_and_exit_nonzero(tmp_path: Path) -> None:
    done = report("--policy", str(tmp_path / "missing.yaml"))
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("seatbelt report: ")
