"""Requests that end badly still settle exactly once, and spend survives restarts (§4.5)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    chat,
    http_module,
    openai_client,
    policy_text,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

GONE = Key("gone")
EARLY = Key("early")
RESET = Key("reset")
ERR = Key("err", cap=10_000)
LINGER = Key("linger")
CUT = Key("cut")
KEYS = [GONE, EARLY, RESET, ERR, LINGER, CUT]


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("failures", policy_text(KEYS))


def _stream_then_leave(proxy: Proxy, key: Key, text: str, frames: int) -> None:
    """Open a stream, read `frames` SSE events, then drop the connection."""
    httpx = http_module()
    body = chat(text, max_tokens=200, stream=True, stream_options={"include_usage": True})
    with httpx.Client(timeout=30) as client, client.stream(
        "POST", proxy.url + "/v1/chat/completions", json=body,
        headers={"authorization": f"Bearer {key.credential}"},
    ) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data:"):
                seen += 1
                if seen >= frames:
                    break


def assert_estimated(proxy: Proxy, key: Key) -> dict[str, Any]:
    (line,) = proxy.wait_audit(key.id, 1)
    assert line["usage_source"] == "estimated", line
    row = proxy.row(key.id)
    assert row["reserved"] == 0, row
    assert row["spent"] > 0, "an aborted request that reached the upstream was free"
    assert row["spent"] <= line["reserved"] or line["overrun"], (row, line)
    return line


def test_client_leaves_mid_stream(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    _stream_then_leave(proxy, GONE, f"{t} #slow:100 #len:100", frames=3)
    wait_for("the upstream to see the client leave",
             lambda: standin.received(t) and standin.received(t)[0].outcome == "client_gone")
    line = assert_estimated(proxy, GONE)
    assert line["outcome"] == "aborted"


def test_client_leaves_before_any_output(proxy: Proxy, standin: StandIn) -> None:
    """The upstream read the prompt: at least the prompt estimate is charged."""
    t = tag()
    _stream_then_leave(proxy, EARLY, f"{t} #hang", frames=1)
    wait_for("the upstream to see the client leave",
             lambda: standin.received(t) and standin.received(t)[0].outcome == "client_gone")
    assert_estimated(proxy, EARLY)


def test_upstream_resets_mid_stream(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, RESET)
    raised: Exception | None = None
    try:
        for _ in client.chat.completions.create(
                **chat(f"{t} #reset-mid-stream #len:20", max_tokens=50), stream=True,
                stream_options={"include_usage": True}):
            pass
    except Exception as e:  # the SDK or its httpx: either way the stream broke
        raised = e
    assert raised is not None, "the client got a whole stream despite the upstream reset"
    (up,) = standin.received(t)
    assert up.outcome == "reset"
    assert_estimated(proxy, RESET)


def test_upstream_resets_a_json_body_read_whole(proxy: Proxy, standin: StandIn) -> None:
    """A small JSON body is read whole before the scanner sees it (seatbelt/metering/scanner.py
    read_whole): cut half-way, none of it was seen, so the whole hold is charged."""
    t = tag()
    with pytest.raises(openai.APIError):
        openai_client(proxy, CUT, max_retries=0).chat.completions.create(
            **chat(f"{t} #reset-mid-stream #len:20", max_tokens=50))
    (up,) = standin.received(t)
    assert up.outcome == "reset"
    line = assert_estimated(proxy, CUT)
    assert (line["outcome"], line["stream"]) == ("aborted", False)
    assert proxy.row(CUT.id)["spent"] == line["reserved"]  # the bound: prompt + limit
    assert line["completion_tokens"] == 50


def test_upstream_error_releases_the_hold(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    with pytest.raises(openai.InternalServerError):
        openai_client(proxy, ERR).chat.completions.create(**chat(f"{t} #status-500",
                                                                 max_tokens=50))
    assert len(standin.received(t)) == 1
    (line,) = proxy.wait_audit(ERR.id, 1)
    assert line["usage_source"] == "none"
    assert line["outcome"] == "upstream_error"
    assert line["status"] == 500
    row = proxy.row(ERR.id)
    assert row["spent"] == 0 and row["reserved"] == 0 and row["remaining"] == ERR.cap


def test_client_closing_after_the_end_marker_was_served(proxy: Proxy, standin: StandIn) -> None:
    """The SDK stops at `[DONE]` and may close before the upstream ends the body: the client
    got the whole answer (status 200), so it is served and settled from reported usage."""
    t = tag()
    client = openai_client(proxy, LINGER)
    chunks = list(client.chat.completions.create(
        **chat(f"{t} #linger:300", max_tokens=20), stream=True,
        stream_options={"include_usage": True}))
    client.close()
    assert [c.usage for c in chunks if c.usage]
    (up,) = standin.received(t)
    (line,) = proxy.wait_audit(LINGER.id, 1)
    assert line["usage_source"] == "reported"
    assert proxy.row(LINGER.id)["spent"] == up.spend
    assert (line["outcome"], line["status"]) == ("served", 200), line


def test_restart_keeps_spend(proxy_factory: Any, standin: StandIn) -> None:
    key = Key("durable", cap=300)  # holds one ~190-token request
    proxy = proxy_factory("restart", policy_text([key]))
    t = tag()
    openai_client(proxy, key).chat.completions.create(**chat(f"{t} #len:60", max_tokens=60))
    (up,) = standin.received(t)
    proxy.wait_audit(key.id, 1)
    assert proxy.stop() == 0, "mitmdump did not exit cleanly on SIGTERM"
    assert proxy.row(key.id)["spent"] == up.spend
    proxy.start()
    assert proxy.row(key.id)["spent"] == up.spend
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(proxy, key).chat.completions.create(**chat(f"{t} b", max_tokens=400))
    assert info.value.response.json()["error"]["code"] == "insufficient_quota"
    assert len(standin.received(t)) == 1
