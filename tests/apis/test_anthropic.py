"""Anthropic Messages family: routing, request facts, cumulative usage, error shape."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seatbelt.apis import route_request
from seatbelt.apis.anthropic import Anthropic
from seatbelt.apis.base import BadRequestBody, ErrorShape, Usage
from tests.apis.test_openai import sse_objects
from tests.wire import FIXTURES

FAMILY = Anthropic()
AV = {"anthropic-version": "2023-06-01"}


def route(path="/v1/messages", method="POST", headers=None):
    r = route_request(method, path, headers or {})
    assert r is not None and r.family.name == "anthropic", path
    return r


@pytest.mark.parametrize(
    "method,path,endpoint,kind",
    [
        ("POST", "/v1/messages", "messages", "metered"),
        ("POST", "/anthropic/v1/messages", "messages", "metered"),
        ("POST", "/api/anthropic/v1/messages/", "messages", "metered"),
        ("POST", "/V1/Messages", "messages", "metered"),
        ("POST", "/v1/messages/count_tokens", "count_tokens", "free"),
        ("POST", "/v1/messages/batches", "batches", "unmetered"),
        ("GET", "/v1/messages/batches/msgbatch_1/results", "batches", "free"),
        ("POST", "/v1/complete", "complete", "unmetered"),
    ],
)
def test_routes(method, path, endpoint, kind):
    r = route(path, method)
    assert (r.endpoint, r.kind, r.provider) == (endpoint, kind, "anthropic")


def test_models_and_files_only_when_the_request_speaks_anthropic():
    assert route("/v1/models", "GET", AV).kind == "free"
    assert route("/v1/models/claude-sonnet-4", "GET", {"Anthropic-Version": "x"}).kind == "free"
    assert route("/v1/files", "POST", AV).kind == "unmetered"
    assert route_request("GET", "/v1/models", {}).family.name == "openai"
    assert FAMILY.route("GET", "/v1/models", {}) is None


def test_credential_headers():
    assert FAMILY.credential_headers == ("x-api-key", "authorization")


def test_request_facts():
    f = FAMILY.parse_request(route(), {"model": "claude-sonnet-4", "max_tokens": 1024,
                                       "stream": True})
    assert (f.model, f.stream, f.max_output, f.multiplier, f.produces_output) == (
        "claude-sonnet-4", True, 1024, 1, True)
    assert FAMILY.parse_request(route(), {"max_tokens": 0}).max_output == 0  # cache pre-warm
    # required by the API, but when absent: unnamed, so the reservation writes one
    assert FAMILY.parse_request(route(), {"model": "m"}).max_output is None
    assert FAMILY.parse_request(route(), {"max_tokens": None}).max_output is None


@pytest.mark.parametrize("value", ["1024", True, 1024.0, -5, 1e30, 2**53])
def test_bad_max_tokens(value):
    with pytest.raises(BadRequestBody, match="max_tokens"):
        FAMILY.parse_request(route(), {"max_tokens": value})


def test_write_limit():
    body = {"model": "m"}
    FAMILY.write_limit(route(), body, 4096)
    assert body == {"model": "m", "max_tokens": 4096}


def test_never_requests_or_hides_usage():
    body = {"stream": True}
    assert FAMILY.request_usage(route(), body) is False and body == {"stream": True}
    assert not FAMILY.is_injected_usage_frame({"type": "message_delta", "usage": {}})


ANTHROPIC_FIXTURES = [f for f in FIXTURES.values() if f.family == "anthropic"]


@pytest.mark.parametrize("fx", ANTHROPIC_FIXTURES, ids=lambda f: f.name)
def test_usage_of_every_fixture(fx):
    reader = FAMILY.new_usage_reader(route())
    objects = [json.loads(fx.body)] if fx.content_type == "application/json" else list(
        sse_objects(fx.body))
    for obj in objects:
        reader.feed(obj)
    assert dataclasses.asdict(reader.usage) == fx.usage
    assert reader.invalid is None


def start(**usage):
    return {"type": "message_start", "message": {"usage": usage}}


def delta(**usage):
    return {"type": "message_delta", "delta": {}, "usage": usage}


def test_cache_tokens_are_added_to_the_prompt():
    reader = FAMILY.new_usage_reader(route())
    reader.feed({"type": "message", "usage": {"input_tokens": 10,
                                              "cache_creation_input_tokens": 200,
                                              "cache_read_input_tokens": 3000,
                                              "output_tokens": 7}})
    assert reader.usage == Usage(3210, 7, cached_tokens=3000, cache_write_tokens=200)


def test_message_delta_replaces_each_present_field_never_sums():
    reader = FAMILY.new_usage_reader(route())
    reader.feed(start(input_tokens=50, cache_read_input_tokens=10, output_tokens=1))
    assert reader.usage.prompt_tokens == 60
    assert reader.usage.completion_tokens is None  # message_start's output is a placeholder
    reader.feed(delta(output_tokens=15))
    reader.feed(delta(output_tokens=40))
    assert reader.usage == Usage(60, 40, cached_tokens=10)
    reader.feed(delta(input_tokens=52, output_tokens=41, cache_read_input_tokens=None))
    assert reader.usage == Usage(62, 41, cached_tokens=10)


def test_zero_input_in_message_start_is_not_yet_known():
    reader = FAMILY.new_usage_reader(route())
    reader.feed(start(input_tokens=0, cache_creation_input_tokens=0,
                      cache_read_input_tokens=0, output_tokens=0))
    assert reader.usage.prompt_tokens is None
    reader.feed(delta(input_tokens=9, output_tokens=3))
    assert reader.usage == Usage(9, 3)


def test_other_events_are_ignored():
    reader = FAMILY.new_usage_reader(route())
    for obj in ({"type": "ping"}, {"type": "content_block_delta", "usage": {"x": 1}},
                {"type": "error", "error": {"type": "overloaded_error"}}, [1], "x", None):
        reader.feed(obj)
    assert reader.usage == Usage() and reader.invalid is None


@pytest.mark.parametrize("bad", [-3, 1e30, "12", True, 2**60])
def test_absurd_values_are_flagged_and_make_the_field_unknown(bad):
    reader = FAMILY.new_usage_reader(route())
    reader.feed(start(input_tokens=20, output_tokens=1))
    reader.feed(delta(output_tokens=bad))
    assert reader.usage.completion_tokens is None and reader.invalid
    reader = FAMILY.new_usage_reader(route())
    reader.feed(start(input_tokens=20, cache_read_input_tokens=bad, output_tokens=1))
    reader.feed(delta(output_tokens=5))
    assert reader.usage.prompt_tokens is None and reader.invalid  # a part of it is unusable


@pytest.mark.parametrize(
    "status,kind",
    [
        (429, "rate_limit_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (400, "invalid_request_error"),
        (413, "request_too_large"),
        (503, "api_error"),
    ],
)
def test_error_body_shape(status, kind):
    body = FAMILY.error_body(ErrorShape(status, "whatever", "key k over cap"))
    assert body == {"type": "error", "error": {"type": kind, "message": "key k over cap"}}


def test_an_exhausted_balance_is_a_billing_error():
    body = FAMILY.error_body(ErrorShape(429, "insufficient_quota", "balance spent"))
    assert body["error"]["type"] == "billing_error"


@pytest.mark.parametrize("thinking,hidden", [
    (None, False), ({"type": "enabled", "budget_tokens": 2048}, True),
    ({"type": "disabled"}, False),
])
def test_extended_thinking_is_hidden_reasoning(thinking: object, hidden: bool) -> None:
    route = route_request("POST", "/v1/messages", {"anthropic-version": "2023-06-01"})
    assert route is not None
    body: dict = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
    if thinking is not None:
        body["thinking"] = thinking
    assert Anthropic().parse_request(route, body).hidden_reasoning is hidden


def test_stream_error_is_an_error_event() -> None:
    frame = Anthropic().stream_error("sse", ErrorShape(400, "output_limit_exceeded", "cut"))
    head, data = frame.split(b"\ndata: ")
    assert head == b"event: error" and json.loads(data) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": "cut"}}
