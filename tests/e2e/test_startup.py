"""A bad configuration stops mitmdump at start-up: one line, no traceback, non-zero (§2)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Key, Proxy, policy_text
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

GOOD = policy_text([Key("k", cap=10)])
BROKEN = GOOD + "  - id: k\n    account: team\n    credential_sha256: " + "ab" * 32 + "\n"


def run_to_exit(proxy: Proxy) -> tuple[int | None, str]:
    """Start mitmdump and wait for it to give up (it must not keep proxying)."""
    try:
        out = subprocess.run(proxy.command(), cwd=proxy.workdir, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, text
    return out.returncode, out.stdout + out.stderr


CASES = {
    "broken-policy": ({}, BROKEN, "seatbelt_policy"),
    "missing-policy": ({"seatbelt_policy": "does/not/exist.yaml"}, GOOD, "seatbelt_policy"),
    "bad-ledger-url": ({"seatbelt_ledger": "postgres://127.0.0.1/x"}, GOOD, "seatbelt_ledger"),
    "non-boolean": ({"seatbelt_inject_usage": "maybe"}, GOOD, "seatbelt_inject_usage"),
    "unknown-option": ({"seatbelt_ledgr": "memory://"}, GOOD, "seatbelt_ledgr"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_configuration_stops_start_up(
    tmp_path: Path, standin: StandIn, case: str
) -> None:
    options, policy, named = CASES[case]
    proxy = Proxy(tmp_path, policy, upstream=standin.url, options=options)
    code, output = run_to_exit(proxy)
    assert code is not None, f"mitmdump kept running with a bad configuration:\n{output}"
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if named in line]
    assert len(lines) == 1, f"expected one line naming {named}:\n{output}"
    if case == "broken-policy":
        assert "policy.yaml" in lines[0], lines[0]


def test_metrics_port_in_use_stops_start_up(tmp_path: Path, standin: StandIn) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proxy = Proxy(tmp_path, GOOD, upstream=standin.url)
        proxy.metrics_port = busy.getsockname()[1]
        code, output = run_to_exit(proxy)
    assert code is not None and code != 0, output
    assert "Traceback" not in output, output
    assert any("seatbelt_metrics" in line for line in output.splitlines()), output


def test_good_configuration_starts(proxy_factory: Any) -> None:
    """The control case: the same harness with a good policy is ready and exits 0."""
    proxy = proxy_factory("startup-good", GOOD)
    code = proxy.stop()
    log = proxy.log()
    assert code == 0, log
    assert "Traceback" not in log, log
