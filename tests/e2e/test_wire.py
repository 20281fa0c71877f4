"""Recorded wire bodies (tests/wire) served verbatim through mitmdump: metered as recorded,
passed to the client byte for byte except the usage frame seatbelt itself asked for."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from tests import wire
from tests.e2e.conftest import Key, Proxy, http_module, policy_text, tag
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

WIRE = Key("wire")
FRAME = re.compile(rb".+?(?:\r?\n\r?\n|$)", re.S)


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("wire", policy_text([WIRE]))


def _request(fixture: Any, marker: str) -> dict[str, Any]:
    """The fixture's own request, with the switch that makes the stand-in replay it."""
    body = copy.deepcopy(fixture.request)
    switch = f" {marker} #wire:{fixture.name}"
    if "messages" in body:
        last = body["messages"][-1]
        last["content"] = str(last["content"]) + switch
    elif "prompt" in body:
        body["prompt"] += switch
    elif "contents" in body:  # Gemini
        body["contents"][-1]["parts"][-1]["text"] += switch
    elif isinstance(body["input"], list):  # Responses input items
        body["input"][-1]["content"] += switch
    else:
        body["input"] += switch
    return body


def _headers(fixture: Any) -> dict[str, str]:
    if fixture.family == "anthropic":
        return {"x-api-key": WIRE.credential, "anthropic-version": "2023-06-01"}
    if fixture.path.startswith("/openai/deployments/"):
        return {"api-key": WIRE.credential}
    if fixture.family == "gemini":
        return {"x-goog-api-key": WIRE.credential}
    return {"authorization": f"Bearer {WIRE.credential}"}


def _usage_only(frame: bytes) -> bool:
    """An OpenAI-style frame with no choices and a usage object: the injected one."""
    payload = frame.strip()[len(b"data:"):].strip() if frame.startswith(b"data:") else b""
    try:
        obj = json.loads(payload)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and bool(obj.get("usage"))


@pytest.mark.parametrize("name", sorted(wire.FIXTURES))
def test_wire_fixture_metered_and_passed_through(
    proxy: Proxy, standin: StandIn, name: str
) -> None:
    fixture = wire.FIXTURES[name]
    t = tag()
    before = len(proxy.audit_for(WIRE.id))
    path = fixture.path + ("?api-version=2024-10-21" if "/deployments/" in fixture.path else "")
    r = http_module().post(proxy.url + path, json=_request(fixture, t),
                           headers=_headers(fixture), timeout=30)
    assert r.status_code == 200
    (up,) = standin.received(t)
    (line,) = proxy.wait_audit(WIRE.id, before + 1)[before:]
    assert proxy.row(WIRE.id)["reserved"] == 0

    sent = fixture.body
    asked = (fixture.request.get("stream_options") or {}).get("include_usage") is True
    injected = (up.json.get("stream_options") or {}).get("include_usage") is True and not asked
    if injected:
        assert "usage_requested" in line["edits"]
        want = [f for f in FRAME.findall(sent) if not _usage_only(f)]
        assert FRAME.findall(r.content) == want, "client saw the injected frame or altered bytes"
    else:
        assert r.content == sent, "the response body was altered"

    usage = fixture.usage
    if fixture.upstream_error or usage["prompt_tokens"] is None or usage["completion_tokens"] \
            is None:
        assert line["usage_source"] == "estimated", line
        assert line["prompt_tokens"] + line["completion_tokens"] > 0
        return
    assert line["usage_source"] == "reported", line
    assert line["overrun"] is False
    for field in ("prompt_tokens", "completion_tokens"):
        assert line[field] == usage[field], (field, line)
    for field in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
        assert line[field] == usage[field] or (usage[field] is None and line[field] in (0, None)), \
            (field, line)
