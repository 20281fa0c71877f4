"""Identity through a real mitmdump: unknown credentials, spoofing, secrecy (§3, §4.1, §5)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    anthropic_client,
    chat,
    http_module,
    openai_client,
    policy_text,
    refusal,
    tag,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

ALICE = Key("alice", cap=1_000_000)
BOB = Key("bob", cap=1_000_000)
CAROL = Key("carol", cap=1_000_000)
UNKNOWN = "sk-unknown-" + "7" * 24


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("auth", policy_text([ALICE, BOB, CAROL]))


def assert_unauthorized(exc: Any, shape: str) -> None:
    status, headers, body = refusal(exc)
    assert status == 401
    assert headers.get("x-should-retry") == "false"
    assert headers.get("x-seatbelt-refused") == "invalid_api_key"
    if shape == "openai":
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "invalid_api_key"
        assert body["error"]["param"] is None
        message = body["error"]["message"]
    else:
        assert body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"
        message = body["error"]["message"]
    assert UNKNOWN not in message


def test_unknown_credential_openai_401(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    with pytest.raises(openai.AuthenticationError) as info:
        openai_client(proxy, UNKNOWN, max_retries=2).chat.completions.create(
            **chat(f"{t}", max_tokens=5))
    assert_unauthorized(info.value, "openai")
    assert standin.received(t) == []


def test_unknown_credential_anthropic_401(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    with pytest.raises(anthropic.AuthenticationError) as info:
        anthropic_client(proxy, UNKNOWN).messages.create(
            model="claude-sonnet-4-0", max_tokens=5, messages=[{"role": "user", "content": t}])
    assert_unauthorized(info.value, "anthropic")
    assert standin.received(t) == []


def test_missing_credential_401(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    httpx = http_module()
    r = httpx.post(proxy.url + "/v1/chat/completions", json=chat(t, max_tokens=5))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert standin.received(t) == []


def test_two_different_credentials_401(proxy: Proxy, standin: StandIn) -> None:
    """Both are valid keys, but a request may carry one identity only (never 'anonymous')."""
    t = tag()
    httpx = http_module()
    r = httpx.post(
        proxy.url + "/v1/messages",
        headers={"x-api-key": ALICE.credential, "authorization": f"Bearer {BOB.credential}",
                 "anthropic-version": "2023-06-01"},
        json={"model": "claude-sonnet-4-0", "max_tokens": 5,
              "messages": [{"role": "user", "content": t}]},
    )
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert standin.received(t) == []


def test_client_headers_cannot_set_identity(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    spoof = {"x-seatbelt-key": BOB.id, "x-seatbelt-account": "team",
             "X-Seatbelt-Refused": "nope"}
    client = openai_client(proxy, CAROL, default_headers=spoof)
    client.chat.completions.create(**chat(t, max_tokens=5))
    (up,) = standin.received(t)
    assert not [h for h in up.header_names if h.startswith("x-seatbelt")], up.headers
    assert up.header("authorization") == f"Bearer {CAROL.credential}"
    (line,) = proxy.wait_audit(CAROL.id, 1)
    assert line["key"] == CAROL.id
    assert proxy.audit_for(BOB.id) == []
    assert proxy.row(BOB.id)["spent"] == 0


def test_non_llm_traffic_passes_untouched(proxy: Proxy, standin: StandIn) -> None:
    before = len(proxy.audit())
    r = http_module().get(proxy.url + "/plain")
    assert r.status_code == 200 and r.text == "hello"
    assert "x-seatbelt-refused" not in r.headers
    assert len(proxy.audit()) == before


def test_no_seatbelt_header_ever_reaches_upstream(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    openai_client(proxy, BOB).chat.completions.create(**chat(t, max_tokens=5))
    for _ in openai_client(proxy, BOB).chat.completions.create(**chat(t, max_tokens=5),
                                                               stream=True):
        pass
    assert len(standin.received(t)) == 2
    leaked = [(r.path, h) for r in standin.received() for h in r.header_names
              if h.startswith("x-seatbelt")]
    assert leaked == []


def test_raw_credentials_never_written(proxy: Proxy, standin: StandIn) -> None:
    """After served, refused and unauthorized traffic: log, metrics, audit hold no secret."""
    t = tag()
    openai_client(proxy, ALICE).chat.completions.create(**chat(t, max_tokens=5))
    with pytest.raises(openai.AuthenticationError):
        openai_client(proxy, UNKNOWN).chat.completions.create(**chat(t, max_tokens=5))
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(proxy, UNKNOWN).messages.create(
            model="claude-sonnet-4-0", max_tokens=5, messages=[{"role": "user", "content": t}])
    proxy.wait_audit(ALICE.id, 1)
    audit_text = proxy.audit_path.read_text()
    assert audit_text.strip(), "no audit lines were written"
    places = {"audit": audit_text, "metrics": proxy.metrics_text(), "log": proxy.log()}
    for name, text in places.items():
        for secret in (ALICE.credential, BOB.credential, UNKNOWN):
            assert secret not in text, f"a raw credential appears in the {name}"
