"""Exact prompt counting (seatbelt/admission/exact.py): which encoding counts which model,
which texts it sees, and that the exact count is still a bound on a real tokenizer's bill
(cl100k billed by tiktoken, an independent implementation) on the dense suite, far below
the byte bound on English."""

from __future__ import annotations

import json

import pytest
import quicktok

from seatbelt.admission import exact
from seatbelt.admission.estimate import IMAGE_TOKENS, prompt_bound
from seatbelt.apis import route_request
from tests.admission import dense
from tests.standin.server import billed_prompt

CHAT = route_request("POST", "/v1/chat/completions", {})
RESPONSES = route_request("POST", "/v1/responses", {})
COMPLETIONS = route_request("POST", "/v1/completions", {})
MESSAGES = route_request("POST", "/v1/messages", {})
OLLAMA = route_request("POST", "/api/chat", {})
CL100K = quicktok.get_encoding("cl100k_base").count
O200K = quicktok.get_encoding("o200k_base").count


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("o1", "o200k_base"),
    ("o3-mini", "o200k_base"), ("o4-mini", "o200k_base"), ("gpt-5-nano", "o200k_base"),
    ("gpt-4.1-mini", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"),
    ("gpt-3.5-turbo-0125", "cl100k_base"), ("text-embedding-3-small", "cl100k_base"),
    ("ft:gpt-4o:org::id", "o200k_base"), ("llama3", None), ("claude-3-opus", None),
    (None, None),
])
def test_openai_models_follow_tiktokens_map(model: str | None, encoding: str | None) -> None:
    assert exact.encoding_for(CHAT, model, None) == encoding


def test_the_policy_names_the_tokenizer_of_other_models() -> None:
    assert exact.encoding_for(CHAT, "qwen2.5-72b", "qwen3") == "qwen3"
    assert exact.encoding_for(OLLAMA, "llama3", "llama3") == "llama3"
    assert exact.encoding_for(OLLAMA, "gpt-4o", None) is None  # the map is OpenAI's names only
    # No public tokenizer behind Anthropic or Gemini shapes: a named one is not used there.
    assert exact.encoding_for(MESSAGES, "claude-3-opus", "cl100k_base") is None


def test_texts_are_the_content_the_tokenizer_sees() -> None:
    body = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "hello"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ], "tools": dense.TOOLS_OPENAI}
    assert sorted(exact.prompt_texts(body)) == ["be brief", "hello"]
    assert exact.prompt_texts({"prompt": ["a", "b"]}) == ["b", "a"]
    assert exact.prompt_texts({"input": [{"type": "message", "content": [
        {"type": "input_text", "text": "x"}]}], "instructions": "y"}) == ["y", "x"]
    # A data URL where text goes is media, counted by its allowance only.
    assert exact.prompt_texts({"messages": [{"content": "data:image/png;base64,AAAA"}]}) == []


def _chat(text: str, tools: bool = False) -> dict:
    body = {"model": "gpt-4", "max_tokens": 10, "messages": [
        {"role": "system", "content": "You answer in one line."},
        {"role": "user", "content": f"{text} #bill:cl100k"}]}
    if tools:
        body["tools"] = dense.TOOLS_OPENAI
    return body


@pytest.mark.parametrize("tools", [False, True])
@pytest.mark.parametrize("name", [*dense.dense_texts(), "english"])
def test_exact_bound_covers_a_real_tokenizers_bill(name: str, tools: bool) -> None:
    text = dense.english_text(500) if name == "english" else dense.dense_texts()[name]
    body = _chat(text, tools)
    for ascii_only in (False, True):
        raw = json.dumps(body, ensure_ascii=ascii_only).encode()
        held = exact.exact_bound(CHAT, json.loads(raw), CL100K, raw)
        billed = billed_prompt("chat", body)  # tiktoken's cl100k_base, framing and tools
        assert billed <= held <= prompt_bound(CHAT, body, raw), (name, billed, held)


def test_english_is_held_near_its_real_count() -> None:
    body = _chat(dense.english_text(3000))
    billed = billed_prompt("chat", body)
    held = exact.exact_bound(CHAT, body, CL100K)
    bound = prompt_bound(CHAT, body)
    assert billed <= held <= billed * 1.02 + 150  # 1 % margin, framing, keys and roles
    assert bound > 4 * held  # what the byte bound alone would have reserved


def test_media_keep_their_allowance_and_no_payload_counts_twice() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9000}}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, image]}]}
    held = exact.exact_bound(CHAT, body, O200K)
    assert IMAGE_TOKENS < held < IMAGE_TOKENS + 300


def test_a_text_the_tokenizer_cannot_take_keeps_its_bytes() -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "\ud800" * 50}]}
    assert exact.exact_bound(CHAT, body, CL100K) >= 150  # 3 bytes each, as the bound counts


def test_every_completions_prompt_and_responses_input_is_counted() -> None:
    text = dense.english_text(400)
    many = {"model": "gpt-3.5-turbo-instruct", "prompt": [text] * 4}
    assert exact.exact_bound(COMPLETIONS, many, CL100K) >= 4 * CL100K(text)
    one = {"model": "gpt-4o", "input": text, "instructions": "Be brief."}
    assert O200K(text) <= exact.exact_bound(RESPONSES, one, O200K) < O200K(text) + 120
