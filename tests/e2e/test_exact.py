"""Exact where it can be (issue 13 item 2): what the byte bound alone refuses is counted.

English runs at ~4-5 bytes per token, so its byte bound is ~4x its bill. Against the
stand-in billing with a real tokenizer (`#bill:cl100k`: tiktoken's cl100k_base; Anthropic
with its hidden tool prompt), a prompt that fits the cap only when counted is admitted and
settles under the cap: by the local tokenizer for an OpenAI model, by the provider's count
endpoint (Anthropic count_tokens, Gemini countTokens) where the policy opts in. Where
counting cannot help (no tokenizer, no opt-in, the count failed) the bound stands and the
refusal says the request *may* need that much. Counting happens off the event loop: the
proxy serves other requests while a count is outstanding.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import openai
import pytest

from tests.admission import dense
from tests.e2e.conftest import (
    Key,
    Proxy,
    anthropic_client,
    http_module,
    openai_client,
    policy_text,
    refusal,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

CAP = 6000
OPENAI = Key("exact-openai", cap=CAP)
PLAIN = Key("exact-plain", cap=CAP)
ANTHROPIC = Key("exact-anthropic", cap=CAP)
GEMINI = Key("exact-gemini", cap=CAP)
HELD = Key("exact-held", cap=CAP)
BIG = Key("exact-big", cap=400_000)
MODELS = ("models:\n  claude-count: {count_tokens: provider}\n"
          "  gemini-count: {count_tokens: provider}\n")
ENGLISH = dense.english_text(3300)  # ~3,500 cl100k tokens, ~19,000 bytes


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    text = policy_text([OPENAI, PLAIN, ANTHROPIC, GEMINI, HELD, BIG])
    return proxy_factory("exact", text.replace("keys:", MODELS + "keys:", 1))


def test_an_english_prompt_the_bound_refuses_is_counted_and_admitted(
        proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, OPENAI)
    r = client.chat.completions.create(
        model="gpt-4", max_tokens=200,
        messages=[{"role": "user", "content": f"{t} {ENGLISH} #bill:cl100k"}])
    assert r.usage.prompt_tokens > 3000
    (line,) = proxy.wait_audit(OPENAI.id, 1)
    assert "prompt_counted" in line["edits"] and line["reserved"] < CAP, line
    (up,) = standin.received(t)
    assert up.spend == _spent(line) <= line["reserved"] and not line["overrun"]
    row = proxy.row(OPENAI.id)
    assert (row["spent"], row["reserved"]) == (up.spend, 0) and row["spent"] <= CAP

    # A model with no public tokenizer: the byte bound stands, and the refusal says *may*.
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(proxy, PLAIN, max_retries=0).chat.completions.create(
            model="house-model", max_tokens=200,
            messages=[{"role": "user", "content": f"{t} {ENGLISH} #bill:cl100k"}])
    status, _, body = refusal(info.value)
    assert status == 429 and "may need up to" in body["error"]["message"], body
    assert len(standin.received(t)) == 1


def _spent(line: dict[str, Any]) -> int:
    return line["prompt_tokens"] + line["completion_tokens"]


def _messages(t: str, *switches: str) -> dict[str, Any]:
    return {"model": "claude-count", "max_tokens": 200, "tools": dense.TOOLS_ANTHROPIC,
            "messages": [{"role": "user", "content": f"{t} {ENGLISH} #bill:cl100k "
                          + " ".join(switches)}]}


def test_anthropic_counts_at_the_provider_with_the_requests_credential(
        proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = anthropic_client(proxy, ANTHROPIC, max_retries=0)
    r = client.messages.create(**_messages(t))
    assert r.usage.input_tokens > 3000  # its text, framing, tools and the 530-token tool prompt
    count, served = standin.received(t)
    assert count.path == "/v1/messages/count_tokens" and served.path == "/v1/messages"
    sent = {count.header("x-api-key"), (count.header("authorization") or "")[7:]}
    assert ANTHROPIC.credential in sent, "not the request's own credential"
    assert set(count.json) == {"model", "messages", "tools"}  # what count_tokens accepts
    (line,) = proxy.wait_audit(ANTHROPIC.id, 1)
    assert "prompt_counted" in line["edits"] and served.spend == _spent(line) <= CAP

    # The count fails: the bound stands (never admitted past what it admits).
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(**_messages(f"{t}-fail", "#count-fail"))
    status, _, body = refusal(info.value)
    assert status == 429 and "may need up to" in body["error"]["message"], body
    assert [r.path for r in standin.received(f"{t}-fail")] == ["/v1/messages/count_tokens"]
    # No opt-in for the model: no count is asked.
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(**dict(_messages(f"{t}-plain"), model="claude-plain"))
    assert standin.received(f"{t}-plain") == []


def test_gemini_counts_at_the_provider(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    http = http_module()
    body = {"contents": [{"role": "user", "parts": [{"text": f"{t} {ENGLISH} #bill:cl100k"}]}],
            "generationConfig": {"maxOutputTokens": 200}}
    r = http.post(proxy.url + "/v1beta/models/gemini-count:generateContent", json=body,
                  headers={"x-goog-api-key": GEMINI.credential}, timeout=30)
    assert r.status_code == 200, r.text
    count, served = standin.received(t)
    assert count.path == "/v1beta/models/gemini-count:countTokens"
    assert count.header("x-goog-api-key") == GEMINI.credential
    assert count.json["generateContentRequest"]["contents"] == body["contents"]
    (line,) = proxy.wait_audit(GEMINI.id, 1)
    assert "prompt_counted" in line["edits"] and served.spend == _spent(line) <= CAP


def test_other_requests_are_served_while_a_count_is_outstanding(
        proxy: Proxy, standin: StandIn) -> None:
    """The count endpoint holds its answer: meanwhile the proxy serves another request.
    And a 1 MB prompt is counted locally while other requests go through."""
    t = tag()
    http = http_module()
    headers = {"x-api-key": HELD.credential, "anthropic-version": "2023-06-01"}
    held: dict[str, Any] = {}

    def counted_at_provider() -> None:
        held["status"] = http.post(proxy.url + "/v1/messages", headers=headers, timeout=30,
                                   json=_messages(t, f"#count-hold:{t}")).status_code

    def small(i: int) -> int:
        return http.post(proxy.url + "/v1/chat/completions", timeout=30,
                         headers={"authorization": f"Bearer {OPENAI.credential}"},
                         json={"model": "gpt-4", "max_tokens": 5,
                               "messages": [{"role": "user", "content": f"{t} hi {i}"}]}
                         ).status_code

    worker = threading.Thread(target=counted_at_provider)
    worker.start()
    wait_for("the count request", lambda: standin.received(t))
    assert small(0) == 200
    assert "status" not in held  # its count is still outstanding
    standin.release(t)
    worker.join(30)
    assert held["status"] == 200

    big = dense.english_text(180_000)  # ~1 MB, ~190,000 tokens: its bound is ~1,000,000
    with ThreadPoolExecutor(3) as pool:
        large = pool.submit(http.post, proxy.url + "/v1/chat/completions", timeout=60,
                            headers={"authorization": f"Bearer {BIG.credential}"},
                            content=json.dumps({"model": "gpt-4o", "max_tokens": 5, "messages": [
                                {"role": "user", "content": f"{t} {big}"}]}).encode())
        assert list(pool.map(small, range(1, 5))) == [200] * 4
        assert large.result().status_code == 200, large.result().text
    big_line = proxy.wait_audit(BIG.id, 1)[0]
    assert "prompt_counted" in big_line["edits"] and big_line["reserved"] < 400_000
