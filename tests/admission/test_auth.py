import pytest
from mitmproxy.test import tflow

from seatbelt.admission.auth import find_credential
from seatbelt.apis.anthropic import Anthropic as AnthropicFamily
from seatbelt.apis.openai import OpenAI as OpenAIFamily


def request(headers=(), path="/v1/chat/completions"):
    f = tflow.tflow()
    f.request.path = path
    for name in list(f.request.headers.keys()):
        del f.request.headers[name]
    for k, v in headers:
        f.request.headers.add(k, v)
    return f.request


@pytest.mark.parametrize("value", ["Bearer sk-1", "bearer sk-1", "BEARER   sk-1  "])
def test_bearer_is_case_insensitive_and_trimmed(value):
    c = find_credential(OpenAIFamily(), request([("Authorization", value)]))
    assert c.value == "sk-1" and c.error is None


def test_azure_api_key_header():
    assert find_credential(OpenAIFamily(), request([("api-key", " az-1 ")])).value == "az-1"


def test_same_credential_in_two_places_is_fine():
    headers = [("x-api-key", "k"), ("authorization", "Bearer k")]
    c = find_credential(AnthropicFamily(), request(headers))
    assert c.value == "k"


@pytest.mark.parametrize(
    "headers",
    [
        [("x-api-key", "a"), ("authorization", "Bearer b")],  # two different credentials
        [("x-api-key", "a"), ("x-api-key", "a")],  # duplicate header
        [("x-api-key", "a, b")],  # folded duplicate
        [("authorization", "Basic Zm9vOmJhcg==")],  # unparseable
        [("authorization", "Bearer a, Bearer b")],
        [("x-api-key", "")],
    ],
)
def test_ambiguous_credentials_are_errors_not_anonymous(headers):
    c = find_credential(AnthropicFamily(), request(headers))
    assert c.error and c.value is None
    for _, v in headers:
        for token in ("a", "b", "Zm9vOmJhcg=="):
            if token in v and len(token) > 1:
                assert token not in c.error


def test_no_credential_is_none():
    c = find_credential(OpenAIFamily(), request([]))
    assert c.value is None and c.error is None


@pytest.mark.parametrize("name", ["key", "access_token"])
def test_gemini_query_credentials_are_found(name):
    from seatbelt.apis.gemini import Gemini
    path = f"/v1beta/models/m:generateContent?alt=sse&{name}=tok-1"
    c = find_credential(Gemini(), request([], path=path))
    assert c.value == "tok-1" and c.places == [f"{name}="]


def test_a_gemini_key_and_a_different_access_token_are_ambiguous():
    from seatbelt.apis.gemini import Gemini
    path = "/v1beta/models/m:generateContent?key=a1&access_token=b2"
    c = find_credential(Gemini(), request([], path=path))
    assert c.error and c.value is None and "b2" not in c.error


def test_a_query_credential_is_read_only_from_a_request_target_with_a_query():
    from seatbelt.apis.gemini import Gemini
    path = "/v1beta/models/gemini-2.0-flash:generateContent"
    assert find_credential(Gemini(), request(path=path + "?key=g-1")).value == "g-1"
    assert find_credential(Gemini(), request(path=path)).value is None
