"""Ollama native family: routing, streaming by default, num_predict, NDJSON usage on the
final done:true object (a missing count is unknown), `{"error": "..."}` refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seatbelt.admission import estimate
from seatbelt.apis import route_request
from seatbelt.apis.base import BadRequestBody, ErrorShape, Usage
from seatbelt.apis.ollama import Ollama
from seatbelt.metering.scanner import Scanner
from tests.wire import FIXTURES

FAMILY = Ollama()
FX = [f for f in FIXTURES.values() if f.family == "ollama"]


def route(path="/api/chat", method="POST"):
    r = route_request(method, path, {})
    assert r is not None and r.family.name == "ollama", path
    return r


@pytest.mark.parametrize(
    "method,path,endpoint,kind",
    [
        ("POST", "/api/chat", "chat", "metered"),
        ("POST", "/api/generate", "generate", "metered"),
        ("POST", "/ollama/api/chat/", "chat", "metered"),
        ("POST", "/api/embed", "embed", "metered"),
        ("POST", "/api/embeddings", "embed", "metered"),
        ("GET", "/api/chat", "chat", "free"),
        ("DELETE", "/api/generate", "generate", "unmetered"),
    ],
)
def test_routes(method, path, endpoint, kind):
    r = route(path, method)
    assert (r.provider, r.endpoint, r.kind) == ("ollama", endpoint, kind)


@pytest.mark.parametrize("path", ["/api/tags", "/api/version", "/api/delete", "/api/pull",
                                  "/api/v1/chat", "/api/chats"])
def test_free_or_foreign_paths_are_left_alone(path):
    assert route_request("POST", path, {}) is None


def test_v1_endpoints_are_openai_style():
    assert route_request("POST", "/v1/chat/completions", {}).family.name == "openai"


def facts(body, path="/api/chat"):
    return FAMILY.parse_request(route(path), body)


def test_streams_by_default_and_reads_num_predict():
    f = facts({"model": "llama3.2", "messages": []})
    assert (f.model, f.stream, f.max_output, f.multiplier, f.wants_usage) == (
        "llama3.2", True, None, 1, True)
    assert facts({"stream": None}).stream is True
    f = facts({"stream": False, "options": {"num_predict": 128, "temperature": 0}})
    assert (f.stream, f.max_output) == (False, 128)
    emb = facts({"model": "nomic-embed-text", "input": "x"}, "/api/embed")
    assert (emb.produces_output, emb.stream) == (False, False)


@pytest.mark.parametrize("value", [None, -1, -2, 0])
def test_no_limit_values_get_the_reserved_limit_written(value):
    body = {"model": "m", "options": {"num_predict": value, "temperature": 0.1}}
    assert facts(body).max_output is None
    FAMILY.write_limit(route(), body, 4096)
    assert body["options"] == {"num_predict": 4096, "temperature": 0.1}
    body = {"model": "m"}
    FAMILY.write_limit(route(), body, 9)
    assert body == {"model": "m", "options": {"num_predict": 9}}


@pytest.mark.parametrize(
    "body,field",
    [
        ({"options": {"num_predict": "100"}}, "num_predict"),
        ({"options": {"num_predict": 1.5}}, "num_predict"),
        ({"options": {"num_predict": -3}}, "num_predict"),
        ({"options": {"num_predict": True}}, "num_predict"),
        ({"options": [1]}, "options"),
        ({"stream": "false"}, "stream"),
    ],
)
def test_bad_requests_are_refused(body, field):
    with pytest.raises(BadRequestBody, match=field):
        facts(body)


def test_framing():
    r = route()
    assert FAMILY.framing(r, facts({}), "application/x-ndjson") == "ndjson"
    assert FAMILY.framing(r, facts({}), "application/json") == "ndjson"  # stream: true
    assert FAMILY.framing(r, facts({"stream": False}), "application/json") == "json"


@pytest.mark.parametrize("fx", FX, ids=lambda f: f.name)
def test_usage_of_every_fixture(fx):
    reader = FAMILY.new_usage_reader(route(fx.path))
    for line in fx.body.splitlines():
        if line.strip():
            reader.feed(json.loads(line))
    assert dataclasses.asdict(reader.usage) == fx.usage
    assert reader.invalid is None


def test_a_missing_count_is_unknown_not_zero():
    reader = FAMILY.new_usage_reader(route())
    reader.feed({"done": False, "message": {"content": "x"}})
    assert reader.usage == Usage()
    reader.feed({"done": True, "eval_count": 12})
    assert reader.usage == Usage(None, 12)
    reader = FAMILY.new_usage_reader(route("/api/embed"))
    reader.feed({"embeddings": [[0.1]], "prompt_eval_count": 8})
    assert reader.usage == Usage(8, 0)


def test_absurd_counts_are_flagged():
    reader = FAMILY.new_usage_reader(route())
    reader.feed({"done": True, "prompt_eval_count": 3, "eval_count": -5})
    assert reader.invalid and "eval_count" in reader.invalid


def scan(fx, cuts=()):
    r = route(fx.path)
    sc = Scanner(FAMILY, r, FAMILY.parse_request(r, dict(fx.request)),
                 content_type=fx.content_type, content_encoding="", hide_injected_usage=False)
    edges = [0, *cuts, len(fx.body)]
    for a, b in zip(edges, edges[1:]):
        sc(fx.body[a:b])
    sc(b"")
    return sc


def test_usage_split_inside_a_number():
    fx = FIXTURES["ollama_chat_stream"]
    at = fx.body.index(b'"eval_count":') + len(b'"eval_count":') + 1
    sc = scan(fx, [at - 30, at])
    assert dataclasses.asdict(sc.usage) == fx.usage
    assert sc.output_chars == len(fx.output_text)


def test_error_line_after_200_is_an_upstream_error():
    sc = scan(FIXTURES["ollama_chat_stream_error"])
    assert sc.upstream_error and "unexpected EOF" in sc.upstream_error and sc.output_seen


@pytest.mark.parametrize("fx", [f for f in FX if f.usage["completion_tokens"]],
                         ids=lambda f: f.name)
def test_estimates_within_2x_of_reported(fx):
    sc = scan(fx)
    est = estimate.completion_estimate(sc.output_chars)
    real = fx.usage["completion_tokens"]
    assert est > 0 and real / 2 <= est <= real * 2, (est, real)


def test_error_body_is_ollamas_shape():
    body = FAMILY.error_body(ErrorShape(401, "invalid_api_key", "seatbelt: no key"))
    assert body == {"error": "seatbelt: no key"}
    assert FAMILY.credential_headers == ("authorization",)
