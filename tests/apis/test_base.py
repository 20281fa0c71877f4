"""The family interface's shared parts (seatbelt/apis/base.py): the upstream error reader."""

from __future__ import annotations

import pytest

from seatbelt.apis import FAMILIES, read_error, route_request
from seatbelt.apis.anthropic import Anthropic
from seatbelt.apis.gemini import Gemini
from seatbelt.apis.ollama import Ollama
from seatbelt.apis.openai import OpenAI
from seatbelt.apis.responses import Responses
from seatbelt.metering.scanner import Scanner
from seatbelt.ui.contentview import summarize
from tests.wire import FIXTURES

ERRORS = [
    # OpenAI names both a type and a code: the code is the specific one. Before, the scanner
    # said "invalid_request_error: ..." and the content view "context_length_exceeded: ...".
    (OpenAI(), {"error": {"message": "too long", "type": "invalid_request_error",
                          "param": None, "code": "context_length_exceeded"}},
     "context_length_exceeded: too long"),
    (OpenAI(), {"error": {"message": "boom", "type": "server_error", "code": None}},
     "server_error: boom"),
    (Anthropic(), {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
     "overloaded_error: busy"),
    (Gemini(), {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}},
     "RESOURCE_EXHAUSTED: quota"),
    (Ollama(), {"error": "model 'x' not found"}, "model 'x' not found"),
    (Responses(), {"type": "error", "code": "server_error", "message": "m", "param": None},
     "server_error: m"),
    (Responses(), {"type": "response.failed", "response": {
        "error": {"code": "rate_limit_exceeded", "message": "slow down"}}},
     "rate_limit_exceeded: slow down"),
]


@pytest.mark.parametrize("family, obj, text", ERRORS)
def test_each_family_reads_its_error_shape(family, obj, text):
    assert family.read_error(obj) == text
    assert read_error(obj) == text  # what the content view uses, not knowing the route


def test_no_error_is_none():
    for family in FAMILIES:
        for obj in ({"error": None}, {"choices": []}, [], "x", {"type": "message"}):
            assert family.read_error(obj) is None


@pytest.mark.parametrize("name", sorted(n for n, fx in FIXTURES.items() if fx.upstream_error))
def test_scanner_and_content_view_read_an_upstream_error_alike(name):
    """The same upstream error reads the same in the scanner (logs, audit) and in mitmweb."""
    fx = FIXTURES[name]
    route = route_request("POST", fx.path, {})
    assert route is not None
    facts = route.family.parse_request(route, dict(fx.request))
    sc = Scanner(route.family, route, facts, content_type=fx.content_type, content_encoding="",
                 hide_injected_usage=False)
    sc(fx.body)
    sc(b"")
    summary = summarize(fx.body, fx.content_type)
    assert summary is not None and sc.upstream_error is not None
    assert summary.errors[0] == sc.upstream_error
