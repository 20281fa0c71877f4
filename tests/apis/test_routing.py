"""The routing entry point (seatbelt/apis/__init__.py): every
reading of a path a server may take, the bare paths of LLM servers, and what no family
meters (issue 14, items 1 and 2)."""

from __future__ import annotations

import pytest

from seatbelt.apis import AMBIGUOUS, UNKNOWN, route_request
from seatbelt.apis.fields import norm_path


def kind(method: str, path: str, llm_host: bool = False, **headers: str) -> tuple | None:
    r = route_request(method, path, headers, llm_host=llm_host)
    return None if r is None else (r.family.name, r.endpoint, r.kind)


CHAT = ("openai", "chat", "metered")


@pytest.mark.parametrize("path", [
    "/v1/chat/completions#x",  # uvicorn+httptools and Node drop the fragment
    "/v1/chat/completions#",
    "/v1\\chat\\completions",  # Node's URL parsers: '\' is '/'
    "\\v1\\chat\\completions",
    "/v1/models\\..\\chat\\completions#",  # Node: chat; the others: nothing
    "/v1/chat/completions;jsessionid=1",  # servlet containers cut ;params
    "/v1/chat%2Fcompletions",
    "/%761/chat/completions",  # %76 is 'v'
    "/v1//chat///completions",
    "/v1/./chat/completions",
    "/v1/models/../chat/completions",
    "/v1/models/..%2Fchat/completions",
    "/V1/CHAT/COMPLETIONS",
    "/v1/chat/completions/",
    "/v1/chat/completions?x=1#y",
    "/v1/chat/completions#?x",
])
def test_every_spelling_of_a_metered_path_is_metered(path: str) -> None:
    assert kind("POST", path) == CHAT


@pytest.mark.parametrize("path", [
    # Readings that route differently: a fragment hiding dot segments, etc.
    "/v1/models#/../chat/completions",
    "/v1/chat;x=1/completions",  # servlets: chat; others: legacy completions
    "/v1/embeddings#/../chat/completions",
])
def test_readings_that_disagree_are_refused(path: str) -> None:
    r = route_request("POST", path, {})
    assert r is not None and r.kind == "refused" and r.endpoint == AMBIGUOUS


@pytest.mark.parametrize("method,path,expected", [
    ("POST", "/responses", ("responses", "responses", "metered")),
    ("POST", "/messages", ("anthropic", "messages", "metered")),
    ("POST", "/messages/count_tokens", ("anthropic", "count_tokens", "free")),
    ("POST", "/completion", ("openai", "completion", "unmetered")),  # llama.cpp
    ("POST", "/infill", ("openai", "infill", "unmetered")),
    ("POST", "/generate", ("openai", "generate", "unmetered")),  # TGI
    ("POST", "/generate_stream", ("openai", "generate_stream", "unmetered")),
    ("POST", "/", ("openai", "generate", "unmetered")),  # TGI's compat route
    ("POST", "/tokenize", ("openai", "tokenize", "free")),
    ("POST", "/some/new/endpoint", ("openai", UNKNOWN, "unmetered")),
    ("GET", "/some/page", None),
    ("GET", "/health", None),
])
def test_bare_paths_on_an_llm_host(method: str, path: str, expected: tuple | None) -> None:
    assert kind(method, path, llm_host=True) == expected


@pytest.mark.parametrize("path", ["/responses", "/messages", "/completion", "/generate",
                                  "/some/new/endpoint"])
def test_bare_paths_elsewhere_are_left_alone(path: str) -> None:
    assert kind("POST", path) is None


@pytest.mark.parametrize("path,expected", [
    ("/v1/projects/p/locations/l/endpoints/123:generateContent", ("gemini", "generate",
                                                                  "metered")),
    ("/v1/projects/p/locations/l/endpoints/123:streamGenerateContent", ("gemini", "stream",
                                                                        "metered")),
    ("/v1beta1/projects/p/locations/l/endpoints/123:rawPredict", ("gemini", "rawpredict",
                                                                  "unmetered")),
    ("/v1alpha/auth_tokens", ("gemini", "auth_tokens", "unmetered")),
    ("/model/anthropic.claude-3-haiku-20240307-v1:0/invoke", ("openai", "invoke",
                                                              "unmetered")),
    ("/model/m/invoke-with-response-stream", ("openai", "invoke-with-response-stream",
                                              "unmetered")),
    ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse",
     ("openai", "converse", "unmetered")),
    ("/model/m/converse-stream", ("openai", "converse-stream", "unmetered")),
    ("/async-invoke", ("openai", "async-invoke", "unmetered")),
])
def test_billing_endpoints_are_metered_or_refused(path: str, expected: tuple) -> None:
    assert kind("POST", path) == expected


def test_vertex_endpoint_names_the_model() -> None:
    r = route_request("POST", "/v1/projects/p/locations/l/endpoints/123:generateContent", {})
    assert r is not None and r.model_from_path == "123"


def test_a_routes_override_applies_only_when_every_reading_matches() -> None:
    def api(path: str) -> str | None:
        return "none" if norm_path(path).startswith("/internal") else None
    # '/internal/x#/../../v1/chat/completions': dropping the fragment gives /internal/x
    # (taken off the LLM routes), keeping it (h11, Go) resolves to the chat path: metered.
    assert kind_with(api, "/internal/x#/../../v1/chat/completions") == CHAT
    assert route_request("POST", "/internal/x", {}, api=api) is None


def kind_with(api, path: str) -> tuple | None:
    r = route_request("POST", path, {}, api=api)
    return None if r is None else (r.family.name, r.endpoint, r.kind)


def test_an_unknown_reading_gives_way_to_a_known_one() -> None:
    assert kind("POST", "/v1/chat/completions#x", llm_host=True) == CHAT
    assert kind("POST", "/v1/nothing#x", llm_host=True) == ("openai", UNKNOWN, "unmetered")


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1beta/models/gemini-2.0-flash:generateContent"),  # a free read, unless ...
    ("GET", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/completion"),  # no route for GET at all; POST would be one
])
def test_a_method_override_header_on_an_llm_route_is_refused(method: str, path: str) -> None:
    for header in ("X-HTTP-Method-Override", "x-http-method", "X-Method-Override"):
        r = route_request(method, path, {header: "POST"}, llm_host=True)
        assert r is not None and (r.kind, r.endpoint) == ("refused", "method_override")
    assert route_request("GET", "/static/app.js", {"X-HTTP-Method-Override": "POST"}) is None


@pytest.mark.parametrize("path", ["/api/show", "/api/pull", "/api/tags", "/api/blobs/sha256:ab"])
def test_ollama_model_management_is_left_alone_not_unknown(path: str) -> None:
    assert kind("POST", path, llm_host=True) is None
