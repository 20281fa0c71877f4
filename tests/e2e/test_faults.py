"""Faults after a good start fail closed and heal; health endpoints (issue 4, points 7-8).

SQLite ledger made locked or unwritable under a running mitmdump: LLM requests get 503
`ledger_unavailable` (never forwarded), other traffic flows, `seatbelt_ledger_up` drops and
/readyz says so, and everything heals by itself once the fault clears. The audit log
follows logrotate on SIGHUP, and a failing audit disk is loud but never stops metering.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import openai
import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    chat,
    http_get,
    http_module,
    openai_client,
    policy_text,
    refusal,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

# A fast heartbeat (0.2 s instead of 5 s) only makes healing quicker to watch.
TIMING = {"SEATBELT_TEST_LEDGER_TIMING": "lease=1,max_hold=60,heartbeat=0.2"}
LOCKED, RO, ROT, FULL = Key("locked", cap=100_000), Key("ro"), Key("rot"), Key("full")


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    p = proxy_factory("faults", policy_text([LOCKED, RO, ROT]), start=False)
    with mock.patch.dict(os.environ, TIMING):
        return p.start()


def ledger_up(proxy: Proxy) -> float | None:
    return proxy.metrics().value("seatbelt_ledger_up")


def served(proxy: Proxy, key: Key, text: str) -> bool:
    try:
        openai_client(proxy, key).chat.completions.create(**chat(text, max_tokens=5))
        return True
    except openai.APIStatusError:
        return False


def assert_fails_closed_and_heals(proxy: Proxy, standin: StandIn, key: Key,
                                  fault: Callable[[], Callable[[], None]]) -> None:
    t = tag()
    assert served(proxy, key, f"{t} before")
    undo = fault()
    try:
        with pytest.raises(openai.APIStatusError) as e:
            openai_client(proxy, key).chat.completions.create(
                **chat(f"{t} during", max_tokens=5))
        status, headers, body = refusal(e.value)
        assert status == 503 and body["error"]["code"] == "ledger_unavailable", body
        assert headers.get("retry-after") == "1"
        assert headers.get("x-seatbelt-refused") == "ledger_unavailable"
        assert [r for r in standin.received(t) if b"during" in r.body] == []
        plain = http_module().get(proxy.url + "/plain", timeout=10)
        assert (plain.status_code, plain.text) == (200, "hello")
        wait_for("seatbelt_ledger_up 0", lambda: ledger_up(proxy) == 0)
        assert http_get(proxy.metrics_url + "/readyz")[0] == 503
        assert http_get(proxy.metrics_url + "/healthz")[0] == 200  # alive, just not ready
    finally:
        undo()
    wait_for("seatbelt_ledger_up 1", lambda: ledger_up(proxy) == 1, timeout=20)
    assert http_get(proxy.metrics_url + "/readyz")[0] == 200
    wait_for("LLM requests served again", lambda: served(proxy, key, f"{t} after"))
    row = proxy.row(key.id)
    assert row["reserved"] == 0 and row["spent"] > 0, row
    lines = proxy.audit_for(key.id)
    assert {a["outcome"] for a in lines} <= {"served", "unavailable"}, lines


def test_health_endpoints(proxy: Proxy) -> None:
    assert http_get(proxy.metrics_url + "/healthz") == (200, "ok\n")
    assert http_get(proxy.metrics_url + "/readyz") == (200, "ready\n")
    assert http_get(proxy.metrics_url + "/nothing-here")[0] == 404
    assert ledger_up(proxy) == 1


def test_locked_ledger_fails_closed_and_heals(proxy: Proxy, standin: StandIn) -> None:
    def lock() -> Callable[[], None]:
        blocker = sqlite3.connect(proxy.ledger_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process sits on the write lock

        def undo() -> None:
            blocker.execute("ROLLBACK")
            blocker.close()
        return undo

    assert_fails_closed_and_heals(proxy, standin, LOCKED, lock)


def make_unwritable(paths: list[Path]) -> Callable[[], None]:
    """chmod for normal users; root ignores modes, so the immutable flag there."""
    if os.geteuid() != 0:
        for p in paths:
            os.chmod(p, 0o444)
        return lambda: [os.chmod(p, 0o644) for p in paths] and None
    done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
    assert done.returncode == 0, f"chattr +i failed: {done.stderr}"
    return lambda: subprocess.run(["chattr", "-i", *map(str, paths)], check=True) and None


def test_read_only_ledger_fails_closed_and_heals(proxy: Proxy, standin: StandIn) -> None:
    files = [p for p in (proxy.ledger_path, Path(f"{proxy.ledger_path}-wal"))
             if p.exists()]
    assert_fails_closed_and_heals(proxy, standin, RO, lambda: make_unwritable(files))


def test_sighup_reopens_the_audit_log(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    assert served(proxy, ROT, f"{t} one")
    proxy.wait_audit(ROT.id, 1)
    rotated = proxy.audit_path.with_suffix(".jsonl.1")
    proxy.audit_path.rename(rotated)  # what logrotate does
    assert proxy.proc is not None
    proxy.proc.send_signal(signal.SIGHUP)
    wait_for("the reopen to be logged", lambda: "reopening the audit log" in proxy.log())
    assert proxy.proc.poll() is None, "SIGHUP stopped the proxy"
    assert served(proxy, ROT, f"{t} two")
    (line,) = proxy.wait_audit(ROT.id, 1)  # only the new line is in the new file
    assert line["usage_source"] == "reported"
    old = rotated.read_text()
    assert old.count('"key":"rot"') == 1 and "reopening" not in old


def test_audit_disk_full_is_loud_but_metering_goes_on(
    proxy_factory: Any, standin: StandIn
) -> None:
    full = proxy_factory("auditfull", policy_text([FULL]), options={"seatbelt_audit": "/dev/full"})
    t = tag()
    for i in range(3):
        assert served(full, FULL, f"{t} {i}")
    upstream = standin.received(t)
    assert len(upstream) == 3
    wait_for("every request settled", lambda: full.row(FULL.id)["spent"]
             == sum(r.spend for r in upstream))
    assert full.row(FULL.id)["reserved"] == 0
    log = full.log()
    assert "cannot write audit log /dev/full" in log, log[-2000:]
    assert log.count("audit line lost") >= 2, "later losses are not reported"
    m = full.metrics()
    assert m.value("seatbelt_spend_tokens_total", account=FULL.account, key=FULL.id) == sum(
        r.spend for r in upstream)
