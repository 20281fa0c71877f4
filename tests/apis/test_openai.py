"""OpenAI-style family: routing by path shape, request facts, rewrites, usage, errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from seatbelt.apis import route_request
from seatbelt.apis.base import BadRequestBody, ErrorShape, Usage
from seatbelt.apis.openai import OpenAI
from tests.wire import FIXTURES

FAMILY = OpenAI()


def route(path: str, method: str = "POST", headers: dict[str, str] | None = None):
    r = route_request(method, path, headers or {})
    assert r is not None, path
    return r


@pytest.mark.parametrize(
    "path,endpoint",
    [
        ("/v1/chat/completions", "chat"),
        ("/openai/v1/chat/completions", "chat"),  # Groq-style, Azure v1
        ("/api/v1/chat/completions", "chat"),  # OpenRouter-style
        ("/chat/completions", "chat"),  # base URL without /v1
        ("/v1beta/openai/chat/completions", "chat"),  # Gemini's OpenAI compatibility
        ("/v1/completions", "completions"),
        ("/deep/prefix/v1/completions", "completions"),
        ("/v1/embeddings", "embeddings"),
        ("/embeddings", "embeddings"),
        # spellings an upstream may still accept must not escape the meter
        ("/v1/chat/completions/", "chat"),
        ("/V1/Chat/Completions", "chat"),
        ("/v1//chat/completions", "chat"),
        ("/v1/chat%2Fcompletions", "chat"),
        ("/v1/chat/complet%69ons", "chat"),
        ("/v1/x/../chat/completions", "chat"),
    ],
)
def test_metered_endpoints_under_any_prefix(path, endpoint):
    r = route(path)
    got = (r.family.name, r.endpoint, r.kind, r.provider)
    assert got == ("openai", endpoint, "metered", "openai")


def test_routing_ignores_the_host_and_the_query():
    # route_request never sees a host; the same path gives the same route everywhere
    assert route("/v1/chat/completions").kind == "metered"
    assert FAMILY.route("POST", "/v1/chat/completions?api-version=2024-10-21", {}).kind == "metered"


def test_azure_deployment_paths_carry_the_model_and_provider():
    r = route("/openai/deployments/My-GPT4o/chat/completions")
    assert (r.provider, r.endpoint, r.kind, r.model_from_path) == (
        "azure", "chat", "metered", "My-GPT4o")
    r = route("/openai/deployments/emb/embeddings")
    assert (r.provider, r.endpoint, r.model_from_path) == ("azure", "embeddings", "emb")
    assert route("/openai/v1/chat/completions", headers={"Api-Key": "k"}).provider == "azure"
    assert route("/openai/v1/chat/completions").provider == "openai"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/gpt-4o-mini"),
        ("GET", "/v1/models/meta-llama/Llama-3.1-8B-Instruct"),  # vLLM model ids have "/"
        ("GET", "/openai/v1/models"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/file-abc/content"),
        ("GET", "/v1/batches/batch_1"),
        ("GET", "/v1/chat/completions"),  # listing stored completions
        ("POST", "/v1/moderations"),
    ],
)
def test_free_endpoints(method, path):
    r = route(path, method)
    assert (r.family.name, r.kind) == ("openai", "free")


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1/batches"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/realtime"),  # a websocket upgrade spends tokens
        ("POST", "/v1/realtime/sessions"),  # mints client secrets
        ("POST", "/v1/assistants"),
        ("POST", "/v1/threads/thread_1/runs"),
        ("POST", "/v1/threads/runs"),
        ("POST", "/v1/threads/thread_1/messages"),
        ("POST", "/v1/audio/speech"),
        ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/uploads"),
        ("POST", "/v1/files"),
        ("POST", "/openai/deployments/dalle/images/generations"),
        ("DELETE", "/v1/chat/completions"),
    ],
)
def test_unmetered_endpoints(method, path):
    r = route(path, method)
    assert (r.family.name, r.kind) == ("openai", "unmetered")


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("GET", "/static/images/logo.png"),  # no version segment: not OpenAI's images API
        ("POST", "/api/users"),
        ("POST", "/v1/chat/completion"),
        ("POST", "/v1/chat/completionsx"),
        ("POST", "/v1/mycompletions"),
        ("GET", "/healthz"),
    ],
)
def test_other_traffic_is_not_an_llm_route(method, path):
    assert route_request(method, path, {}) is None


def test_anthropic_paths_are_not_taken_by_openai():
    assert route("/v1/messages").family.name == "anthropic"
    assert route("/anthropic/v1/messages").family.name == "anthropic"
    assert route("/v1/threads/t/messages").family.name == "openai"
    assert route("/v1/models", "GET").family.name == "openai"
    anth = route("/v1/models", "GET", {"anthropic-version": "2023-06-01"})
    assert (anth.family.name, anth.kind) == ("anthropic", "free")


def test_credential_headers():
    assert FAMILY.credential_headers == ("authorization", "api-key")


# -- request facts -----------------------------------------------------------------


def facts(body, path="/v1/chat/completions"):
    return FAMILY.parse_request(route(path), body)


def test_chat_limits_precedence_and_n():
    assert facts({"model": "m"}).max_output is None
    assert facts({"max_tokens": 100}).max_output == 100
    assert facts({"max_completion_tokens": 50, "max_tokens": 50}).max_output == 50
    assert facts({"max_completion_tokens": None, "max_tokens": 100}).max_output == 100
    for body in ({"max_tokens": 0}, {"max_completion_tokens": 50, "max_tokens": 100}):
        with pytest.raises(BadRequestBody):  # 0 may mean "no limit"; two limits may differ
            facts(body)
    assert facts({"n": 3, "max_tokens": 10}).multiplier == 3
    assert facts({"n": None}).multiplier == 1
    f = facts({"model": "gpt-4o", "stream": True})
    assert (f.model, f.stream, f.produces_output, f.wants_usage) == ("gpt-4o", True, True, False)


def test_completions_limit_and_best_of():
    f = facts({"max_tokens": 16, "n": 2, "best_of": 5}, "/v1/completions")
    assert (f.max_output, f.multiplier) == (16, 5)
    assert facts({"n": 4, "best_of": 2}, "/v1/completions").multiplier == 4
    # max_completion_tokens is not a completions field: not read there
    assert facts({"max_completion_tokens": 9}, "/v1/completions").max_output is None


def test_embeddings_produce_no_output():
    f = facts({"model": "text-embedding-3-small", "input": "x", "max_tokens": "junk"},
              "/v1/embeddings")
    assert (f.produces_output, f.max_output, f.multiplier, f.stream) == (False, None, 1, False)


def test_model_from_azure_path_when_body_has_none():
    f = FAMILY.parse_request(route("/openai/deployments/dep1/chat/completions"), {})
    assert f.model == "dep1"


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions", "embeddings"])
def test_the_azure_deployment_decides_the_model_whatever_the_body_says(endpoint):
    """Azure runs the deployment in the path: a cheaper `model` in the body changes nothing."""
    r = route(f"/openai/deployments/gpt-4o/{endpoint}")
    assert FAMILY.parse_request(r, {"model": "gpt-4o-mini"}).model == "gpt-4o"
    body: dict = {"model": "gpt-4o"}
    FAMILY.write_limit(route("/openai/deployments/o3-prod/chat/completions"), body, 7)
    assert body == {"model": "gpt-4o", "max_completion_tokens": 7}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", ["100", True, False, 10.0, 1.5, -1, 1e30, 2**53, [1], {"a": 1}])
def test_bad_limits_are_refused_naming_the_field(field, value):
    with pytest.raises(BadRequestBody, match=field):
        facts({field: value})


@pytest.mark.parametrize("value", [0, -2, "2", True, 2.0, 2**53])
def test_bad_n_and_best_of(value):
    with pytest.raises(BadRequestBody, match=r"\bn\b"):
        facts({"n": value})
    with pytest.raises(BadRequestBody, match="best_of"):
        facts({"best_of": value}, "/v1/completions")


def test_bad_stream_and_model():
    with pytest.raises(BadRequestBody, match="stream"):
        facts({"stream": "true"})
    with pytest.raises(BadRequestBody, match="model"):
        facts({"model": ["gpt-4o"]})


def test_wants_usage_only_when_the_client_asked():
    assert facts({"stream": True, "stream_options": {"include_usage": True}}).wants_usage
    assert not facts({"stream": True, "stream_options": {"include_usage": False}}).wants_usage
    assert not facts({"stream": False, "stream_options": {"include_usage": True}}).wants_usage


# -- rewrites ------------------------------------------------------------------------


def test_write_limit_uses_max_tokens_except_for_reasoning_models():
    for model in ("gpt-4o-mini", "llama3.2", "openai/o3", None):
        body = {"model": model} if model else {}
        FAMILY.write_limit(route("/v1/chat/completions"), body, 512)
        assert body.get("max_tokens") == 512 and "max_completion_tokens" not in body, model
    for model in ("o3-mini", "o1", "gpt-5-mini", "O4-mini"):
        body = {"model": model}
        FAMILY.write_limit(route("/v1/chat/completions"), body, 512)
        assert body == {"model": model, "max_completion_tokens": 512}
    body = {"model": "o3-mini"}  # legacy completions only know max_tokens
    FAMILY.write_limit(route("/v1/completions"), body, 64)
    assert body["max_tokens"] == 64
    body = {}
    FAMILY.write_limit(route("/openai/deployments/o3-prod/chat/completions"), body, 7)
    assert body == {"max_completion_tokens": 7}


def test_request_usage_injects_and_keeps_other_options():
    r = route("/v1/chat/completions")
    body = {"stream": True, "stream_options": {"include_obfuscation": False}}
    assert FAMILY.request_usage(r, body) is True
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    body = {"stream": True}
    assert FAMILY.request_usage(r, body) and body["stream_options"] == {"include_usage": True}
    body = {"stream": True, "stream_options": {"include_usage": False}}
    assert FAMILY.request_usage(r, body) and body["stream_options"]["include_usage"] is True
    body = {"stream": True, "stream_options": {"include_usage": True}}
    assert FAMILY.request_usage(r, body) is False
    assert body == {"stream": True, "stream_options": {"include_usage": True}}
    body = {"stream": False}
    assert FAMILY.request_usage(r, body) is False and body == {"stream": False}
    assert FAMILY.request_usage(route("/v1/completions"), {"stream": True}) is True
    body = {"stream": True}
    assert FAMILY.request_usage(route("/v1/embeddings"), body) is False and body == {"stream": True}


def test_injected_usage_frame_is_recognised_by_its_usage_object():
    assert FAMILY.is_injected_usage_frame({"choices": [], "usage": {"prompt_tokens": 1}})
    azure_first = {"choices": [], "prompt_filter_results": [{"prompt_index": 0}]}
    assert not FAMILY.is_injected_usage_frame(azure_first)
    assert not FAMILY.is_injected_usage_frame({"choices": [], "usage": None})
    continuous = {"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 1}}
    assert not FAMILY.is_injected_usage_frame(continuous)
    assert not FAMILY.is_injected_usage_frame([1])


def test_framing_by_content_type():
    r = route("/v1/chat/completions")
    f = facts({"stream": True})
    assert FAMILY.framing(r, f, "text/event-stream; charset=utf-8") == "sse"
    assert FAMILY.framing(r, f, "application/json") == "json"
    assert FAMILY.framing(r, f, "") == "json"


# -- usage -----------------------------------------------------------------------


def sse_objects(body: bytes):
    """Reference SSE parser (slow, independent of the scanner)."""
    for event in re.split(rb"\r?\n\r?\n", body):
        data = [line[5:].lstrip(b" ") for line in re.split(rb"\r?\n", event)
                if line.startswith(b"data:")]
        payload = b"\n".join(data)
        if payload and payload != b"[DONE]":
            yield json.loads(payload)


OPENAI_FIXTURES = [f for f in FIXTURES.values() if f.family == "openai"]


@pytest.mark.parametrize("fx", OPENAI_FIXTURES, ids=lambda f: f.name)
def test_usage_of_every_fixture(fx):
    r = route(fx.path)
    reader = FAMILY.new_usage_reader(r)
    objects = [json.loads(fx.body)] if fx.content_type == "application/json" else list(
        sse_objects(fx.body))
    for obj in objects:
        reader.feed(obj)
    assert dataclasses.asdict(reader.usage) == fx.usage
    assert reader.invalid is None


def test_last_usage_replaces_never_sums():
    reader = FAMILY.new_usage_reader(route("/v1/chat/completions"))
    reader.feed({"usage": {"prompt_tokens": 10, "completion_tokens": 0}})
    reader.feed({"usage": None})
    reader.feed({"usage": {"prompt_tokens": 10, "completion_tokens": 5}})
    reader.feed({"choices": []})
    assert reader.usage == Usage(10, 5)


def test_usage_details_and_cache_writes():
    reader = FAMILY.new_usage_reader(route("/v1/chat/completions"))
    reader.feed({"usage": {"prompt_tokens": 100, "completion_tokens": 40,
                           "prompt_tokens_details": {"cached_tokens": 60,
                                                     "cache_write_tokens": 30},
                           "completion_tokens_details": {"reasoning_tokens": 25}}})
    assert reader.usage == Usage(100, 40, 60, 30, 25)
    reader.feed({"usage": {"prompt_tokens": 1, "completion_tokens": 2, "cache_write_tokens": 9}})
    assert reader.usage == Usage(1, 2, None, 9, None)


def test_embeddings_usage_has_zero_completion():
    reader = FAMILY.new_usage_reader(route("/v1/embeddings"))
    reader.feed({"usage": {"prompt_tokens": 8, "total_tokens": 8}})
    assert reader.usage == Usage(8, 0)


@pytest.mark.parametrize("bad", [-1, 1e30, 2**53, "12", True, 3.5, [1], {"a": 1}])
def test_absurd_usage_is_ignored_and_flagged(bad):
    reader = FAMILY.new_usage_reader(route("/v1/chat/completions"))
    reader.feed({"usage": {"prompt_tokens": 10, "completion_tokens": bad}})
    assert reader.usage.prompt_tokens == 10
    assert reader.usage.completion_tokens is None
    assert reader.invalid and "completion_tokens" in reader.invalid


def test_usage_that_is_not_an_object_is_flagged():
    reader = FAMILY.new_usage_reader(route("/v1/chat/completions"))
    reader.feed({"usage": 42})
    assert reader.usage == Usage() and reader.invalid


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,code,kind",
    [
        (429, "insufficient_quota", "insufficient_quota"),
        (429, "rate_limit_exceeded", "tokens"),
        (401, "invalid_api_key", "invalid_request_error"),
        (403, "endpoint_not_metered", "invalid_request_error"),
        (403, "model_not_allowed", "invalid_request_error"),
        (400, "invalid_request", "invalid_request_error"),
        (413, "invalid_request", "invalid_request_error"),
        (503, "ledger_unavailable", "server_error"),
    ],
)
def test_error_body_shape(status, code, kind):
    body = FAMILY.error_body(ErrorShape(status, code, "key k: cap 100 reached"))
    assert body == {"error": {"message": "key k: cap 100 reached", "type": kind,
                              "param": None, "code": code}}


@pytest.mark.parametrize("model,extra,hidden", [
    ("o3-mini", {}, True), ("gpt-5-nano", {}, True), ("o1", {}, True),
    ("gpt-4o-mini", {}, False), ("gpt-4o-mini", {"reasoning_effort": "low"}, True),
    ("llama", {"reasoning": {"effort": "high"}}, True),
])
def test_hidden_reasoning_is_known_per_request(model: str, extra: dict, hidden: bool) -> None:
    route = route_request("POST", "/v1/chat/completions", {})
    assert route is not None
    facts = OpenAI().parse_request(route, {"model": model, "messages": [], **extra})
    assert facts.hidden_reasoning is hidden
    responses = route_request("POST", "/v1/responses", {})
    assert responses is not None
    facts = responses.family.parse_request(responses, {"model": model, "input": "x", **extra})
    assert facts.hidden_reasoning is hidden


def test_stream_error_is_an_sse_error_object() -> None:
    shape = ErrorShape(400, "output_limit_exceeded", "cut")
    frame = OpenAI().stream_error("sse", shape)
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert json.loads(frame[6:])["error"]["code"] == "output_limit_exceeded"
