"""Ready when it says so: a request that reaches the proxy while its Redis ledger is still
opening waits for the open (bounded by the ledger's timeout) instead of a 503.

The open is held deterministically: redis-server is stopped (SIGSTOP) before mitmdump
starts, so the kernel accepts the proxy's connection but nothing answers; the proxy runs
with a 5 s Redis timeout (SEATBELT_TEST_LEDGER_TIMING) so the open outlasts the test's
request. Once the request is in, Redis continues (SIGCONT) and the open completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.e2e.conftest import Key, chat, http_get, openai_client, policy_text, tag, wait_for
from tests.e2e.test_redis_fleet import RedisProxy
from tests.ledger.conftest import RedisServer
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

KEY = Key("ready-first", cap=100_000)
TIMING = {"SEATBELT_TEST_LEDGER_TIMING": "timeout=5"}


def test_a_request_during_the_ledger_open_waits_for_it(tmp_path: Path,
                                                      standin: StandIn) -> None:
    server = RedisServer().start()
    proxy = RedisProxy(tmp_path, policy_text([KEY]), server.url(), upstream=standin.url)
    t = tag()
    outcome: dict[str, Any] = {}

    def first_request() -> None:
        try:
            reply = openai_client(proxy, KEY).chat.completions.create(
                **chat(f"{t} first #len:5", max_tokens=5))
            outcome["served"] = reply.usage.total_tokens
        except Exception as e:  # the assertion below shows it
            outcome["error"] = f"{type(e).__name__}: {e}"

    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        with mock.patch.dict(os.environ, TIMING), open(proxy.log_path, "ab") as log:
            proxy.proc = subprocess.Popen(proxy.command(), cwd=proxy.workdir, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for("the proxy port", proxy._listening, timeout=30)
        wait_for("the metrics port", lambda: http_get(proxy.metrics_url + "/readyz", 1)[0])
        assert http_get(proxy.metrics_url + "/readyz", 1)[0] == 503, "ready before the ledger"
        client = threading.Thread(target=first_request)
        client.start()
        time.sleep(0.5)  # the request reaches the proxy and waits there
        assert not outcome, f"answered while the ledger was still opening: {outcome}"
        server.proc.send_signal(signal.SIGCONT)
        client.join(30)
        assert "served" in outcome, f"{outcome}\n{proxy.log()[-3000:]}"
        assert len(standin.received(t)) == 1
        assert http_get(proxy.metrics_url + "/readyz", 1)[0] == 200
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        proxy.stop()
        server.stop()
