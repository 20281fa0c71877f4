"""The shared field rules: spellings a case-insensitive upstream reads differently, limits
of 0, the legacy completions prompt array as an output multiplier."""

from __future__ import annotations

import pytest

from seatbelt.apis import route_request
from seatbelt.apis.base import BadRequestBody
from seatbelt.apis.fields import check_spelling
from seatbelt.apis.openai import prompt_count

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
    "gemini": "/v1beta/models/g:generateContent",
    "ollama": "/api/chat",
}


def parse(kind: str, body: dict):
    route = route_request("POST", PATHS[kind], {})
    assert route is not None
    return route.family.parse_request(route, body)


@pytest.mark.parametrize("kind", sorted(PATHS))
@pytest.mark.parametrize("keys", [("model", "Model"), ("max_tokens", "MAX_TOKENS"),
                                  ("stream", "Stream")])
def test_keys_that_differ_only_in_case_are_refused(kind, keys):
    body = {keys[0]: "m" if keys[0] == "model" else 5, keys[1]: 7}
    if keys[0] == "stream":
        body = {keys[0]: False, keys[1]: True}
    with pytest.raises(BadRequestBody, match="differ only in case"):
        parse(kind, body)


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_a_read_field_spelled_in_another_case_is_refused(kind):
    with pytest.raises(BadRequestBody, match="spell it 'model'"):
        parse(kind, {"MODEL": "m"})
    # Go folds the Kelvin sign to k: "max_toKens" is max_tokens there
    with pytest.raises(BadRequestBody):
        check_spelling({"max_to\u212aens": 3})


def test_gemini_and_ollama_nested_objects_are_checked():
    with pytest.raises(BadRequestBody, match="generationConfig"):
        parse("gemini", {"generationConfig": {"maxOutputTokens": 5, "MaxOutputTokens": 9}})
    with pytest.raises(BadRequestBody, match="options"):
        parse("ollama", {"options": {"num_predict": 5, "NUM_PREDICT": 9}})


@pytest.mark.parametrize("kind,body", [
    ("chat", {"max_tokens": 0}),
    ("chat", {"max_completion_tokens": 0}),
    ("completions", {"max_tokens": 0}),
    ("responses", {"max_output_tokens": 0}),
    ("gemini", {"generationConfig": {"maxOutputTokens": 0}}),
])
def test_a_limit_of_zero_is_refused_where_zero_is_not_nothing(kind, body):
    with pytest.raises(BadRequestBody, match="0 is read as"):
        parse(kind, body)


def test_ollama_zero_is_no_limit_and_gets_one_written():
    facts = parse("ollama", {"model": "m", "options": {"num_predict": 0}})
    assert facts.max_output is None


def test_two_different_chat_limits_are_refused_equal_ones_pass():
    with pytest.raises(BadRequestBody, match="differ"):
        parse("chat", {"max_tokens": 10, "max_completion_tokens": 20})
    assert parse("chat", {"max_tokens": 10, "max_completion_tokens": 10}).max_output == 10


@pytest.mark.parametrize("prompt,count", [
    ("one", 1), ([1, 2, 3], 1), (["a", "b", "c"], 3), ([[1, 2], [3]], 2), ([], 1), (None, 1),
])
def test_legacy_prompt_arrays_multiply_the_output(prompt, count):
    assert prompt_count(prompt) == count
    facts = parse("completions", {"prompt": prompt, "n": 2, "best_of": 3, "max_tokens": 5})
    assert facts.multiplier == 3 * count


@pytest.mark.parametrize("kind,body,field", [
    ("responses", {"model": "gpt-4o", "previous_response_id": "resp_1"}, "previous_response_id"),
    ("responses", {"model": "gpt-4o", "conversation": "conv_1"}, "conversation"),
    ("responses", {"model": "gpt-4o", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ("gemini", {"cachedContent": "cachedContents/x"}, "cachedContent"),
    ("gemini", {"cached_content": "cachedContents/x"}, "cached_content"),
    ("responses", {"model": "gpt-4o", "input": "hi"}, None),
])
def test_hidden_context_is_named(kind, body, field):
    assert parse(kind, body).hidden_context == field


def test_default_context_windows_by_model_prefix():
    route = route_request("POST", PATHS["responses"], {})
    assert route is not None
    assert route.family.context_window("gpt-4o-mini") == 128_000
    assert route.family.context_window("gpt-4.1-nano") == 1_047_576
    assert route.family.context_window("my-model") is None
