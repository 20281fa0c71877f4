"""Adversarial: no raw credential in what `-w` saves at shutdown (issue 14, item 5).

A non-LLM request (a GET that seatbelt does not meter) is still in flight at a real
uvicorn upstream when mitmdump stops; mitmproxy's Save addon writes in-flight flows in its
`done`. Before, only metered flows were scrubbed at exit, so this one was saved with its
raw credential.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mitmproxy import io

from tests.e2e.conftest import Key, policy_text, wait_for
from tests.e2e.test_bypass_hosts import upstream  # noqa: F401  (the fixture)
from tests.e2e.test_bypass_paths import send

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
