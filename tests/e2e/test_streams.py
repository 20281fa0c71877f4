"""Metering of real response bytes: streams, injection, gzip, split frames (§3, §4.2, §4.4)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    anthropic_client,
    chat,
    http_module,
    openai_client,
    policy_text,
    tag,
)
from tests.standin import Received, StandIn

pytestmark = pytest.mark.e2e

INJECT = Key("inject")
ASKED = Key("asked")
LEGACY = Key("legacy")
BYTES = Key("bytes")
ANT = Key("ant")
LIMIT = Key("limit")
BIG = Key("big")
KEYS = [INJECT, ASKED, LEGACY, BYTES, ANT, LIMIT, BIG]
SMALL_MODEL_LIMIT = 50


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    policy = policy_text(KEYS, models={"gpt-4o-mini": 16384, "standin-small": SMALL_MODEL_LIMIT})
    return proxy_factory("streams", policy)


def exact(proxy: Proxy, key: Key, upstream: list[Received]) -> list[dict[str, Any]]:
    """Every request settled from reported usage, and the ledger holds exactly that."""
    assert upstream and all(r.usage_reported for r in upstream)
    lines = proxy.wait_audit(key.id, len(upstream))
    assert [a["usage_source"] for a in lines] == ["reported"] * len(upstream)
    assert [a["overrun"] for a in lines] == [False] * len(upstream)
    row = proxy.row(key.id)
    assert row["spent"] == sum(r.spend for r in upstream), (row, [r.usage for r in upstream])
    assert row["reserved"] == 0
    return lines


def test_usage_injected_and_hidden_from_client(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    stream = openai_client(proxy, INJECT).chat.completions.create(
        **chat(f"{t} #len:6", max_tokens=20), stream=True)
    chunks = list(stream)
    (up,) = standin.received(t)
    assert up.json["stream_options"]["include_usage"] is True, "usage was not requested upstream"
    assert all(c.usage is None for c in chunks), "the client saw the injected usage frame"
    assert all(c.choices for c in chunks), "the client saw a frame with no choices"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "".join(f"w{i} " for i in range(6))
    (line,) = exact(proxy, INJECT, [up])
    assert "usage_requested" in line["edits"]
    assert line["stream"] is True


def test_legacy_completions_stream_usage_injected(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    chunks = list(openai_client(proxy, LEGACY).completions.create(
        model="gpt-4o-mini", prompt=f"{t}", max_tokens=4, stream=True))
    (up,) = standin.received(t)
    assert up.json["stream_options"]["include_usage"] is True
    assert all(c.usage is None and c.choices for c in chunks)
    exact(proxy, LEGACY, [up])


def test_client_requested_usage_is_delivered(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    chunks = list(openai_client(proxy, ASKED).chat.completions.create(
        **chat(f"{t}", max_tokens=20), stream=True, stream_options={"include_usage": True}))
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1
    (up,) = standin.received(t)
    assert usage[0].prompt_tokens == up.usage["prompt_tokens"]
    assert usage[0].completion_tokens == up.usage["completion_tokens"]
    (line,) = exact(proxy, ASKED, [up])
    assert "usage_requested" not in line["edits"]


@pytest.mark.parametrize(
    "switches",
    ["#gzip", "#split-usage", "#chunk1", "#gzip #split-usage", "#gzip #chunk1"],
)
def test_encoded_and_fragmented_bodies_metered_exactly(
    proxy: Proxy, standin: StandIn, switches: str
) -> None:
    """Buffered and streamed, OpenAI and Anthropic, through the given wire quirk."""
    t = tag()
    before = len(proxy.audit_for(BYTES.id))
    oa, an = openai_client(proxy, BYTES), anthropic_client(proxy, BYTES)
    resp = oa.chat.completions.create(**chat(f"{t} {switches} #len:11", max_tokens=30))
    assert resp.choices[0].message.content == "".join(f"w{i} " for i in range(11))
    list(oa.chat.completions.create(**chat(f"{t} {switches} #len:12", max_tokens=30),
                                    stream=True, stream_options={"include_usage": True}))
    msgs = [{"role": "user", "content": f"{t} {switches} #len:13 #cache-read:21"}]
    an.messages.create(model="claude-sonnet-4-0", max_tokens=30, messages=msgs)
    with an.messages.stream(model="claude-sonnet-4-0", max_tokens=30, messages=msgs) as s:
        s.get_final_message()
    upstream = standin.received(t)
    assert len(upstream) == 4
    lines = proxy.wait_audit(BYTES.id, before + 4)[before:]
    assert [a["usage_source"] for a in lines] == ["reported"] * 4
    got = sorted((a["prompt_tokens"], a["completion_tokens"]) for a in lines)
    want = sorted((r.usage["prompt_tokens"], r.usage["completion_tokens"]) for r in upstream)
    assert got == want
    assert proxy.row(BYTES.id)["reserved"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_prompt_includes_cache_tokens(
    proxy: Proxy, standin: StandIn, stream: bool
) -> None:
    t = tag()
    before = len(proxy.audit_for(ANT.id))
    client = anthropic_client(proxy, ANT)
    msgs = [{"role": "user", "content": f"{t} #cache-write:40 #cache-read:300 #len:9"}]
    if stream:
        with client.messages.stream(model="claude-sonnet-4-0", max_tokens=64,
                                    messages=msgs) as s:
            usage = s.get_final_message().usage
    else:
        usage = client.messages.create(model="claude-sonnet-4-0", max_tokens=64,
                                       messages=msgs).usage
    (up,) = standin.received(t)
    prompt = usage.input_tokens + 40 + 300
    assert up.usage["prompt_tokens"] == prompt
    (line,) = proxy.wait_audit(ANT.id, before + 1)[before:]
    assert line["provider"] == "anthropic"
    assert line["stream"] is stream
    assert line["prompt_tokens"] == prompt
    assert line["completion_tokens"] == usage.output_tokens == 9
    assert line["cached_tokens"] == 300
    assert line["cache_write_tokens"] == 40
    assert line["usage_source"] == "reported"


@pytest.mark.parametrize("switch", ["#delta-usage", "#multi-delta"])
def test_anthropic_message_delta_replaces_never_sums(
    proxy: Proxy, standin: StandIn, switch: str
) -> None:
    t = tag()
    before = len(proxy.audit_for(ANT.id))
    msgs = [{"role": "user", "content": f"{t} {switch} #cache-read:5 #len:10"}]
    with anthropic_client(proxy, ANT).messages.stream(
            model="claude-sonnet-4-0", max_tokens=64, messages=msgs) as s:
        s.get_final_message()
    (up,) = standin.received(t)
    (line,) = proxy.wait_audit(ANT.id, before + 1)[before:]
    assert line["prompt_tokens"] == up.usage["prompt_tokens"]
    assert line["completion_tokens"] == up.usage["completion_tokens"] == 10


def test_limit_written_when_request_names_none(proxy: Proxy, standin: StandIn) -> None:
    """No max_tokens: the policy's model limit is reserved and written into the request."""
    t = tag()
    client = openai_client(proxy, LIMIT)
    resp = client.chat.completions.create(
        model="standin-small", messages=[{"role": "user", "content": f"{t} #len:80"}])
    (up,) = standin.received(t)
    written = up.json.get("max_completion_tokens", up.json.get("max_tokens"))
    assert written == SMALL_MODEL_LIMIT, up.json
    assert resp.usage.completion_tokens == SMALL_MODEL_LIMIT  # the upstream honoured it
    (line,) = exact(proxy, LIMIT, [up])
    assert "limit_written" in line["edits"]
    assert line["reserved"] >= SMALL_MODEL_LIMIT


def test_limit_named_by_request_is_left_alone(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    openai_client(proxy, LIMIT).chat.completions.create(**chat(t, max_tokens=7))
    (up,) = standin.received(t)
    assert up.json.get("max_tokens") == 7 and "max_completion_tokens" not in up.json
    line = proxy.wait_audit(LIMIT.id, 2)[-1]
    assert "limit_written" not in line["edits"]


def test_big_stream_passes_whole_and_is_metered(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    httpx = http_module()
    body = chat(f"{t} #big:4", max_tokens=100_000, stream=True,
                stream_options={"include_usage": True})
    headers = {"authorization": f"Bearer {BIG.credential}"}
    size = 0
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body,
                      headers=headers, timeout=60) as r:
        assert r.status_code == 200
        for part in r.iter_bytes():
            size += len(part)
    (up,) = standin.received(t)
    assert size > 4 * 1024 * 1024
    exact(proxy, BIG, [up])
