"""Reservation arithmetic: prompt estimate with media allowances, completion estimate,
the reservation per contract §4.2, and the estimate against every fixture's real usage."""

from __future__ import annotations

import base64
import json
import math

import pytest

from seatbelt.admission import estimate
from seatbelt.admission.estimate import (
    AUDIO_TOKENS,
    FILE_TOKENS,
    IMAGE_TOKENS,
    VIDEO_TOKENS,
    completion_estimate,
    prompt_estimate,
    reservation,
)
from seatbelt.apis import route_request
from seatbelt.apis.base import RequestFacts
from tests.wire import FIXTURES

B64 = base64.b64encode(bytes(range(256)) * 4000).decode()  # ~1.4 MB of base64


def compact_len(body) -> int:
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


def test_text_is_bytes_over_four_rounded_up():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 101}]}
    assert prompt_estimate(body) == math.ceil(compact_len(body) / 4)
    assert prompt_estimate({}) == 1
    # non-ASCII counts its UTF-8 bytes (never under-counts CJK, ~1 token per char)
    cjk = {"messages": [{"content": "世界" * 100}]}
    assert prompt_estimate(cjk) == math.ceil(compact_len(cjk) / 4) >= 150


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
        IMAGE_TOKENS + 10)


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
    assert allowances < got < allowances + 40


def test_anthropic_media_and_text_documents():
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": B64}}
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": "y" * 4000}}
    got = prompt_estimate({"messages": [{"role": "user", "content": [img, pdf]}]})
    assert IMAGE_TOKENS + FILE_TOKENS < got < IMAGE_TOKENS + FILE_TOKENS + 40
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
    assert allowances < prompt_estimate(gem) < allowances + 60
    oll = {"model": "llava", "messages": [{"role": "user", "content": "hi", "images": [B64, B64]}]}
    assert 2 * IMAGE_TOKENS < prompt_estimate(oll) < 2 * IMAGE_TOKENS + 30


def test_any_base64_data_url_gets_an_allowance():
    body = {"tool_result": {"nested": [f"data:image/webp;base64,{B64}"]}}
    assert IMAGE_TOKENS < prompt_estimate(body) < IMAGE_TOKENS + 20
    # a long plain string is text: bytes / 4
    assert prompt_estimate({"x": B64}) > len(B64) // 4


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
def test_prompt_estimate_is_within_2x_of_every_fixtures_reported_prompt(fx):
    """Within 2x of the real prompt; tiny prompts may add the JSON envelope (keys, model
    name), at most ENVELOPE tokens, which the real prompt does not count."""
    real = fx.usage["prompt_tokens"]
    est = prompt_estimate(fx.request)
    envelope = 16
    assert real / 2 <= est <= 2 * real + envelope, (est, real)
    # and the whole hold covers the real usage when the request names its limit
    r = route_request("POST", fx.path, {})
    f = r.family.parse_request(r, dict(fx.request))
    amount, _ = reservation(f, est, None, 4096)
    if f.produces_output and fx.usage["completion_tokens"] is not None:
        assert amount >= real / 2 + fx.usage["completion_tokens"]


def test_estimate_module_is_pure():
    body = {"messages": [{"content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    before = json.dumps(body)
    estimate.prompt_estimate(body)
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
def test_the_raw_text_shortcut_never_changes_the_estimate(body, ascii_only):
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    assert prompt_estimate(body, raw) == prompt_estimate(body)


def test_a_media_part_spelled_with_escapes_is_still_found():
    raw = b'{"m":[{"\\u0074ype":"\\u0069mage_url","\\u0069mage_url":{"url":"https://x/y"}}]}'
    body = json.loads(raw)
    assert prompt_estimate(body, raw) == prompt_estimate(body) >= IMAGE_TOKENS
