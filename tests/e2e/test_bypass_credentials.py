"""Adversarial: no raw credential in what `-w` saves at shutdown, nor in what mitmweb
shows of a request in flight (issue 14, item 5).

A non-LLM request (a GET that seatbelt does not meter) is still in flight at a real
uvicorn upstream when mitmdump stops; mitmproxy's Save addon writes in-flight flows in its
`done`. Before, only metered flows were scrubbed at exit, so this one was saved with its
raw credential.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import io

from tests.e2e.conftest import Key, chat, openai_client, policy_text, tag, wait_for
from tests.e2e.test_bypass_hosts import upstream  # noqa: F401  (the fixture)
from tests.e2e.test_bypass_paths import send
from tests.e2e.test_mitmweb import WebApi, WebProxy
from tests.standin import StandIn

SECRET = "sk-live-never-saved-0123456789"


def test_in_flight_flows_are_saved_without_their_credential(
        proxy_factory: Any, upstream: str, tmp_path: Path) -> None:  # noqa: F811
    flows = tmp_path / "flows.mitm"
    proxy = proxy_factory("credentials", policy_text([Key("creds")]), upstream=upstream,
                          extra_args=["-w", str(flows)])
    done = threading.Event()

    def slow() -> None:
        try:
            send(proxy, "/slow", SECRET, method="GET")
        except (OSError, IndexError):
            pass  # the proxy went away under it: that is the point
        finally:
            done.set()

    threading.Thread(target=slow, daemon=True).start()
    wait_for("the slow request to be in flight",
             lambda: "GET" in proxy.log() or _open_at_upstream(upstream))
    assert proxy.stop() is not None
    done.wait(15)
    with open(flows, "rb") as f:
        saved = list(io.FlowReader(f).stream())
    slow_flows = [f for f in saved if f.request.path == "/slow"]
    assert slow_flows, f"the in-flight flow was not saved: {[f.request.path for f in saved]}"
    assert SECRET.encode() not in flows.read_bytes()
    assert "redacted" in slow_flows[0].request.headers["authorization"]


def _open_at_upstream(url: str) -> bool:
    """The upstream holds one connection open (the slow request has reached it)."""
    port = url.rsplit(":", 1)[1]
    text = Path("/proc/net/tcp").read_text()
    hexport = f"{int(port):04X}"
    return any(f":{hexport} " in line and line.split()[3] == "01"
               for line in text.splitlines()[1:] if line.split()[1].endswith(hexport))


REAL = "sk-real-provider-" + "9" * 24
ENV = "SEATBELT_E2E_BYPASS_UPSTREAM_KEY"


def test_mitmweb_never_shows_a_virtual_keys_real_credential_in_flight(
        tmp_path: Path, standin: StandIn) -> None:
    """A streamed request that hangs after its first frame is in flight at the upstream
    (which received the real key) while mitmweb's /flows is read, as its UI reads it."""
    virtual = Key("creds-virtual")
    policy = policy_text([virtual]).replace(
        f"  - id: {virtual.id}\n", f"  - id: {virtual.id}\n    upstream_credential_env: {ENV}"
        "\n    upstream_hosts: [127.0.0.1]\n", 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, REAL)
        web = WebProxy(tmp_path / "web", policy, upstream=standin.url)
        web.start()
    try:
        t = tag()
        client = openai_client(web, virtual, max_retries=0, timeout=30)
        stream = client.chat.completions.create(**chat(f"{t} #hang", max_tokens=20),
                                                stream=True)
        next(iter(stream))  # the first frame: the request is at the upstream, in flight
        (up,) = standin.received(t)
        assert up.header("authorization") == f"Bearer {REAL}"  # the real key went upstream
        api = WebApi(web)
        flows = wait_for("the flow in mitmweb", lambda: [
            f for f in api.json("/flows") if f["request"]["path"].endswith("/completions")])
        dumped = json.dumps(flows)
        assert REAL not in dumped and virtual.credential not in dumped
        assert "hidden by seatbelt" in dumped
        stream.close()
    finally:
        web.stop()
