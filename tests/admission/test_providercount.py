"""A provider's count request (seatbelt/admission/providercount.py): where it goes, what it
carries (the request's own credential, only the fields the endpoint takes), how its
answer becomes a hold."""

from __future__ import annotations

import json

from seatbelt.admission import providercount
from seatbelt.apis import route_request

MESSAGES = route_request("POST", "/v1/messages", {"anthropic-version": "2023-06-01"})
GEMINI = route_request("POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent", {})
CHAT = route_request("POST", "/v1/chat/completions", {})


def test_anthropic_asks_count_tokens_with_its_own_credential() -> None:
    body = {"model": "claude-x", "max_tokens": 50, "stream": True, "system": "s",
            "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "t"}]}
    headers = {"x-api-key": "k-1", "anthropic-version": "2023-06-01", "accept": "*/*",
               "content-length": "99"}
    ask = providercount.count_request(MESSAGES, "https://api.example/v1/messages?beta=true",
                                      headers, body, "claude-x")
    assert ask is not None
    assert ask.url == "https://api.example/v1/messages/count_tokens?beta=true"
    assert ask.headers == {"x-api-key": "k-1", "anthropic-version": "2023-06-01",
                           "content-type": "application/json"}
    assert json.loads(ask.body) == {k: body[k] for k in ("model", "system", "messages",
                                                         "tools")}
    assert ask.tools


def test_gemini_asks_count_tokens_for_the_whole_request() -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}], "systemInstruction": {"parts": []},
            "generationConfig": {"maxOutputTokens": 5}}
    url = ("http://h:1/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=K"
           "&access_token=T")
    ask = providercount.count_request(GEMINI, url, {"x-goog-api-key": "K2"}, body,
                                      "gemini-2.0-flash")
    assert ask is not None and not ask.tools
    assert ask.url == ("http://h:1/v1beta/models/gemini-2.0-flash:countTokens?key=K"
                       "&access_token=T")
    assert ask.headers["x-goog-api-key"] == "K2"
    assert json.loads(ask.body) == {"generateContentRequest": {
        "model": "models/gemini-2.0-flash", "contents": body["contents"],
        "systemInstruction": {"parts": []}}}


def test_no_count_endpoint_no_request() -> None:
    assert providercount.count_request(CHAT, "http://h/v1/chat/completions", {}, {}, "m") is None
    batches = route_request("POST", "/v1/messages/batches", {"anthropic-version": "1"})
    if batches is not None:
        assert providercount.count_request(batches, "http://h/v1/messages/batches", {}, {},
                                           "m") is None


def test_the_answer_and_its_margin() -> None:
    assert providercount.read_count(MESSAGES, b'{"input_tokens": 1000}') == 1000
    assert providercount.read_count(GEMINI, b'{"totalTokens": 7}') == 7
    for bad in (b"", b"[]", b'{"input_tokens": -1}', b'{"input_tokens": "9"}', b"{"):
        assert providercount.read_count(MESSAGES, bad) is None
    assert providercount.read_count(MESSAGES, b'{"totalTokens": 7}') is None
    assert providercount.with_margin(MESSAGES, True, 1000) == 1100 + 32
    assert providercount.with_margin(GEMINI, False, 1000) == 1100 + 16
    assert providercount.with_margin(GEMINI, True, 1000) == 1100 + 16 + 256


def test_a_swapped_in_credential_is_sent_as_itself() -> None:
    from seatbelt.admission.operating import HiddenCredential

    fields = ((b"x-api-key", HiddenCredential(b"sk-real")), (b"anthropic-version", b"1"))
    assert providercount.header_values(fields) == {"x-api-key": "sk-real",
                                                   "anthropic-version": "1"}
