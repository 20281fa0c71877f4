"""Gemini family: routing (model in the path), camel/snake request fields, cumulative
usageMetadata in SSE frames and in a streamed JSON array, error shape."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seatbelt.admission import estimate
from seatbelt.apis import route_request
from seatbelt.apis.base import BadRequestBody, ErrorShape, Usage
from seatbelt.apis.gemini import Gemini
from seatbelt.metering.scanner import Scanner
from tests.apis.test_openai import sse_objects
from tests.wire import FIXTURES

FAMILY = Gemini()
FX = [f for f in FIXTURES.values() if f.family == "gemini"]
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def route(path=GEN, method="POST"):
    r = route_request(method, path, {})
    assert r is not None and r.family.name == "gemini", path
    return r


@pytest.mark.parametrize(
    "method,path,endpoint,kind,model",
    [
        ("POST", GEN, "generate", "metered", "gemini-2.5-flash"),
        ("POST", STREAM, "stream", "metered", "gemini-2.5-flash"),
        ("POST", "/v1/models/Gemini-Pro:generateContent", "generate", "metered", "Gemini-Pro"),
        ("POST", "/v1/projects/p/locations/us-central1/publishers/google/models/"
         "gemini-2.0-flash:streamGenerateContent", "stream", "metered", "gemini-2.0-flash"),
        ("POST", "/gw/v1beta/models/gemini-2.5-pro%3AgenerateContent", "generate", "metered",
         "gemini-2.5-pro"),
        ("POST", "/v1beta/tunedModels/my-tune:generateContent", "generate", "metered", "my-tune"),
        ("POST", "/v1beta/models/text-embedding-004:embedContent", "embed", "metered",
         "text-embedding-004"),
        ("POST", "/v1beta/models/x:batchEmbedContents", "embed", "metered", "x"),
        ("POST", "/v1beta/models/x:countTokens", "counttokens", "free", "x"),
        ("POST", "/v1beta/models/x:batchGenerateContent", "batchgeneratecontent", "unmetered",
         "x"),
        ("POST", "/v1beta/models/imagen-4:predict", "predict", "unmetered", "imagen-4"),
        ("GET", "/v1beta/models", "models", "free", None),
        ("GET", "/v1beta/models/gemini-2.5-flash", "models", "free", None),
        ("POST", "/v1beta/cachedContents", "cachedcontents", "unmetered", None),
        ("POST", "/upload/v1beta/files", "files", "free", None),
        ("DELETE", "/v1beta/cachedContents/c1", "cachedcontents", "free", None),
    ],
)
def test_routes(method, path, endpoint, kind, model):
    r = route(path, method)
    assert (r.provider, r.endpoint, r.kind, r.model_from_path) == ("gemini", endpoint, kind,
                                                                   model)


def test_openai_compatible_and_other_paths_are_not_gemini():
    assert route_request("POST", "/v1beta/openai/chat/completions", {}).family.name == "openai"
    assert route_request("GET", "/v1/models", {}).family.name == "openai"
    assert route_request("POST", "/static/models/x.bin", {}) is None


def test_credentials_header_query_and_vertex_bearer():
    assert FAMILY.credential_headers == ("x-goog-api-key", "authorization")
    assert FAMILY.credential_query == ("key", "access_token")


def facts(body, path=GEN):
    return FAMILY.parse_request(route(path), body)


def test_request_facts_camel_and_snake_case():
    f = facts({"generationConfig": {"maxOutputTokens": 200, "candidateCount": 3}}, STREAM)
    assert (f.model, f.stream, f.max_output, f.multiplier, f.wants_usage) == (
        "gemini-2.5-flash", True, 200, 3, True)
    f = facts({"generation_config": {"max_output_tokens": 50, "candidate_count": 2}})
    assert (f.stream, f.max_output, f.multiplier) == (False, 50, 2)
    assert facts({}).max_output is None and facts({}).multiplier == 1
    emb = facts({"content": {"parts": [{"text": "x"}]}},
                "/v1beta/models/text-embedding-004:embedContent")
    assert (emb.produces_output, emb.max_output) == (False, None)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"generationConfig": {"maxOutputTokens": "100"}}, "maxOutputTokens"),
        ({"generationConfig": {"maxOutputTokens": -1}}, "maxOutputTokens"),
        ({"generationConfig": {"max_output_tokens": 1.5}}, "max_output_tokens"),
        ({"generationConfig": {"candidateCount": 0}}, "candidateCount"),
        ({"generationConfig": []}, "generationConfig"),
        ({"generationConfig": {}, "generation_config": {}}, "generation_config"),
        ({"generationConfig": {"maxOutputTokens": 5, "max_output_tokens": 900}},
         "max_output_tokens"),
    ],
)
def test_bad_or_ambiguous_requests_are_refused(body, field):
    with pytest.raises(BadRequestBody, match=field):
        facts(body)


def test_write_limit_keeps_the_clients_spelling_and_other_settings():
    body = {"contents": [], "generationConfig": {"temperature": 0.2}}
    FAMILY.write_limit(route(), body, 4096)
    assert body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 4096}
    body = {"generation_config": {"max_output_tokens": None, "top_k": 3}}
    FAMILY.write_limit(route(), body, 64)
    assert body == {"generation_config": {"top_k": 3, "max_output_tokens": 64}}
    body = {}
    FAMILY.write_limit(route(), body, 8)
    assert body == {"generationConfig": {"maxOutputTokens": 8}}


def test_framing():
    r, f = route(STREAM), facts({}, STREAM)
    assert FAMILY.framing(r, f, "text/event-stream") == "sse"
    assert FAMILY.framing(r, f, "application/json; charset=UTF-8") == "json-array"
    assert FAMILY.framing(route(), facts({}), "application/json") == "json"


def objects(fx):
    if fx.content_type == "text/event-stream":
        return list(sse_objects(fx.body))
    doc = json.loads(fx.body)
    return doc if isinstance(doc, list) else [doc]


@pytest.mark.parametrize("fx", FX, ids=lambda f: f.name)
def test_usage_of_every_fixture(fx):
    reader = FAMILY.new_usage_reader(route(fx.path))
    for obj in objects(fx):
        reader.feed(obj)
    assert dataclasses.asdict(reader.usage) == fx.usage
    assert reader.invalid is None


def test_usage_arithmetic_and_last_snapshot_wins():
    reader = FAMILY.new_usage_reader(route())
    reader.feed({"usageMetadata": {"promptTokenCount": 399, "totalTokenCount": 399}})
    assert reader.usage == Usage(399, None)  # no output count yet: unknown, not 0
    reader.feed({"usageMetadata": {"promptTokenCount": 399, "toolUsePromptTokenCount": 20,
                                   "candidatesTokenCount": 191, "thoughtsTokenCount": 40,
                                   "cachedContentTokenCount": 300}})
    assert reader.usage == Usage(419, 231, 300, None, 40)
    reader.feed({"usageMetadata": {"promptTokenCount": 399, "candidatesTokenCount": 200}})
    assert reader.usage == Usage(399, 200)  # replaced whole, never summed
    reader.feed({"candidates": []})
    assert reader.usage == Usage(399, 200)


def test_absurd_usage_is_flagged():
    reader = FAMILY.new_usage_reader(route())
    reader.feed({"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": -3}})
    assert reader.invalid and "candidatesTokenCount" in reader.invalid
    reader = FAMILY.new_usage_reader(route())
    reader.feed({"usageMetadata": "x"})
    assert reader.invalid


def scan(fx, cuts=()):
    r = route(fx.path)
    sc = Scanner(FAMILY, r, FAMILY.parse_request(r, dict(fx.request)),
                 content_type=fx.content_type, content_encoding="", hide_injected_usage=False)
    body = fx.body
    edges = [0, *cuts, len(body)]
    for a, b in zip(edges, edges[1:]):
        sc(body[a:b])
    sc(b"")
    return sc


def test_array_stream_split_inside_a_number_and_a_string():
    fx = FIXTURES["gemini_stream_array"]
    at = fx.body.rindex(b'"candidatesTokenCount": ') + len(b'"candidatesTokenCount": ') + 1
    sc = scan(fx, [fx.body.index(b"leaves") + 2, at])
    assert dataclasses.asdict(sc.usage) == fx.usage
    assert sc.output_chars == len(fx.output_text)


def test_array_error_element_is_an_upstream_error():
    sc = scan(FIXTURES["gemini_stream_array_error"])
    assert sc.upstream_error and "UNAVAILABLE" in sc.upstream_error
    assert sc.usage == Usage(23, None)


@pytest.mark.parametrize("fx", [f for f in FX if f.usage["completion_tokens"]],
                         ids=lambda f: f.name)
def test_estimates_within_2x_of_reported(fx):
    """Visible output only: thinking tokens are not in the stream (contract: estimated)."""
    sc = scan(fx)
    visible = fx.usage["completion_tokens"] - (fx.usage["reasoning_tokens"] or 0)
    est = estimate.completion_estimate(sc.output_chars)
    assert est > 0 and visible / 2 <= est <= visible * 2, (est, visible)


@pytest.mark.parametrize(
    "status,code,rpc",
    [
        (429, "insufficient_quota", "RESOURCE_EXHAUSTED"),
        (429, "rate_limit_exceeded", "RESOURCE_EXHAUSTED"),
        (401, "invalid_api_key", "UNAUTHENTICATED"),
        (403, "endpoint_not_metered", "PERMISSION_DENIED"),
        (400, "invalid_request", "INVALID_ARGUMENT"),
        (413, "invalid_request", "INVALID_ARGUMENT"),
        (503, "ledger_unavailable", "UNAVAILABLE"),
    ],
)
def test_error_body_is_google_rpc_status(status, code, rpc):
    body = FAMILY.error_body(ErrorShape(status, code, "key k: cap 100 reached"))
    err = body["error"]
    assert (err["code"], err["message"], err["status"]) == (status, "key k: cap 100 reached", rpc)
    (info,) = err["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == code.upper() and info["metadata"] == {"code": code}


def test_error_body_carries_the_retry_delay_as_retry_info():
    body = FAMILY.error_body(ErrorShape(429, "rate_limit_exceeded", "m", retry_after=7))
    info, retry = body["error"]["details"]
    assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}


def test_proto_field_names_are_read_like_their_json_names() -> None:
    """Google's JSON parsers also accept a field's proto name (snake_case): an agent that
    spells the limit and the multiplier that way is held for what it asks, and one that
    sends both spellings is refused (tried as a way around the hold)."""
    from seatbelt.apis import route_request
    from seatbelt.apis.base import BadRequestBody

    r = route_request("POST", "/v1beta/models/gemini-2.0-flash:generateContent", {})
    assert r is not None
    facts = r.family.parse_request(r, {"contents": [], "generation_config": {
        "max_output_tokens": 99999, "candidate_count": 4}})
    assert (facts.max_output, facts.multiplier) == (99999, 4)
    with pytest.raises(BadRequestBody):
        r.family.parse_request(r, {"contents": [], "generationConfig": {
            "maxOutputTokens": 10, "max_output_tokens": 99999}})


@pytest.mark.parametrize("model,config,hidden", [
    ("gemini-2.5-flash", {}, True), ("gemini-3-pro-preview", {}, True),
    ("gemini-2.0-flash", {}, False),
    ("gemini-2.0-flash", {"thinkingConfig": {"thinkingBudget": 512}}, True),
])
def test_thinking_models_hide_reasoning(model: str, config: dict, hidden: bool) -> None:
    route = route_request("POST", f"/v1beta/models/{model}:streamGenerateContent", {})
    assert route is not None
    body = {"contents": [], "generationConfig": config}
    assert Gemini().parse_request(route, body).hidden_reasoning is hidden


def test_stream_error_closes_a_json_array() -> None:
    frame = Gemini().stream_error("json-array", ErrorShape(400, "output_limit_exceeded", "cut"))
    doc = json.loads(b"[{}," + frame)
    assert doc[1]["error"]["status"] == "INVALID_ARGUMENT", doc
