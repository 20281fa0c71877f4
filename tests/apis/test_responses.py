"""OpenAI Responses family: routing, request facts, background, usage in terminal events."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seatbelt.admission import estimate
from seatbelt.apis import route_request
from seatbelt.apis.base import BadRequestBody, ErrorShape, UnmeteredRequest, Usage
from seatbelt.apis.responses import Responses
from seatbelt.metering.scanner import Scanner
from tests.apis.test_openai import sse_objects
from tests.wire import FIXTURES

FAMILY = Responses()
FX = [f for f in FIXTURES.values() if f.family == "responses"]


def route(path="/v1/responses", method="POST", headers=None):
    r = route_request(method, path, headers or {})
    assert r is not None and r.family.name == "responses", path
    return r


@pytest.mark.parametrize(
    "method,path,kind",
    [
        ("POST", "/v1/responses", "metered"),
        ("POST", "/openai/v1/responses", "metered"),  # Azure v1
        ("POST", "/openai/responses", "metered"),  # Azure classic (?api-version=)
        ("POST", "/backend-api/codex/responses", "metered"),  # ChatGPT Codex backend
        ("POST", "/V1/Responses/", "metered"),
        ("GET", "/v1/responses/resp_1", "free"),
        ("GET", "/v1/responses/resp_1/input_items", "free"),
        ("DELETE", "/v1/responses/resp_1", "free"),
        ("POST", "/v1/responses/resp_1/cancel", "free"),
        ("POST", "/v1/responses/input_tokens", "free"),
        ("POST", "/v1/responses/compact", "unmetered"),
        ("PUT", "/v1/responses", "unmetered"),
    ],
)
def test_routes(method, path, kind):
    r = route(path, method)
    assert (r.endpoint, r.kind) == ("responses", kind)


def test_provider_and_unrelated_paths():
    assert route().provider == "openai"
    assert route("/openai/v1/responses", headers={"API-Key": "k"}).provider == "azure"
    assert route_request("POST", "/api/responses", {}) is None  # a survey app, not OpenAI
    assert route_request("POST", "/responses", {}) is None


def test_request_facts_and_limit():
    f = FAMILY.parse_request(route(), {"model": "gpt-5", "input": "hi", "stream": True,
                                       "max_output_tokens": 300})
    assert (f.model, f.stream, f.max_output, f.multiplier, f.wants_usage) == (
        "gpt-5", True, 300, 1, True)
    assert FAMILY.parse_request(route(), {"input": "hi"}).max_output is None
    body = {"model": "gpt-5", "input": "hi"}
    FAMILY.write_limit(route(), body, 512)
    assert body == {"model": "gpt-5", "input": "hi", "max_output_tokens": 512}
    body = {"stream": True}
    assert FAMILY.request_usage(route(), body) is False and body == {"stream": True}


@pytest.mark.parametrize("value", ["9", -1, 1.5, True, [3]])
def test_bad_limit_is_refused(value):
    with pytest.raises(BadRequestBody, match="max_output_tokens"):
        FAMILY.parse_request(route(), {"max_output_tokens": value})


def test_background_is_unmetered_and_fails_closed():
    with pytest.raises(UnmeteredRequest):
        FAMILY.parse_request(route(), {"model": "o3", "input": "x", "background": True})
    # a caller unaware of it still refuses the request (400), never forwards it unmetered
    assert issubclass(UnmeteredRequest, BadRequestBody)
    assert FAMILY.parse_request(route(), {"background": False}).stream is False
    with pytest.raises(BadRequestBody, match="background"):
        FAMILY.parse_request(route(), {"background": "yes"})


def objects(fx):
    if fx.content_type == "application/json":
        return [json.loads(fx.body)]
    return list(sse_objects(fx.body))


@pytest.mark.parametrize("fx", FX, ids=lambda f: f.name)
def test_usage_of_every_fixture(fx):
    reader = FAMILY.new_usage_reader(route())
    for obj in objects(fx):
        reader.feed(obj)
    assert dataclasses.asdict(reader.usage) == fx.usage
    assert reader.invalid is None


def test_usage_from_incomplete_and_only_terminal_events():
    reader = FAMILY.new_usage_reader(route())
    reader.feed({"type": "response.created", "response": {"usage": None}})
    assert reader.usage == Usage()
    reader.feed({"type": "response.incomplete", "response": {"usage": {
        "input_tokens": 100, "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 4096, "output_tokens_details": {"reasoning_tokens": 3900}}}})
    assert reader.usage == Usage(100, 4096, 40, None, 3900)


def scan(fx, body=None):
    r = route(fx.path)
    sc = Scanner(FAMILY, r, FAMILY.parse_request(r, dict(fx.request)),
                 content_type=fx.content_type, content_encoding="", hide_injected_usage=False)
    sc(body if body is not None else fx.body)
    sc(b"")
    return sc


def test_streamed_text_is_counted_once_although_done_events_repeat_it():
    fx = FIXTURES["responses_stream"]
    assert fx.body.count(fx.output_text.encode()) >= 3  # .done, part, item, completed
    assert scan(fx).output_chars == len(fx.output_text)


def test_buffered_text_is_counted_from_the_output_items():
    fx = FIXTURES["responses"]
    assert scan(fx).output_chars == len(fx.output_text)


def test_error_event_and_failed_response_are_upstream_errors():
    sc = scan(FIXTURES["responses_stream_failed"])
    assert sc.upstream_error and "server_error" in sc.upstream_error
    assert sc.output_seen and sc.usage == Usage()


@pytest.mark.parametrize("fx", [f for f in FX if f.usage["completion_tokens"]],
                         ids=lambda f: f.name)
def test_estimates_within_2x_of_reported(fx):
    """What seatbelt would charge without usage: within 2x of the visible output the API
    reported (hidden reasoning tokens cannot be seen in the stream), never 0."""
    sc = scan(fx)
    visible = fx.usage["completion_tokens"] - (fx.usage["reasoning_tokens"] or 0)
    est = estimate.completion_estimate(sc.output_chars)
    assert est > 0 and visible / 2 <= est <= visible * 2, (est, visible)
    route = route_request("POST", "/v1/responses", {})
    assert route is not None
    prompt = estimate.prompt_bound(route, fx.request)
    assert fx.usage["prompt_tokens"] <= prompt <= fx.usage["prompt_tokens"] * 8 + 200


def test_error_body_is_openai_shaped():
    body = FAMILY.error_body(ErrorShape(429, "rate_limit_exceeded", "m"))
    assert body == {"error": {"message": "m", "type": "tokens", "param": None,
                              "code": "rate_limit_exceeded"}}
    assert FAMILY.credential_headers == ("authorization", "api-key")
