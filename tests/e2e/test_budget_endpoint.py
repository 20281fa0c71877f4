"""`GET /seatbelt/budget` through a real mitmdump: a client asks what it has left with its own
credential; the proxy answers itself (seatbelt/admission/budgetquery.py), never upstream.
Key expiry (`expires:`) is refused the same way on LLM routes and here.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    chat,
    http_module,
    openai_client,
    refusal,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

ASKER = Key("asker", cap=5000, window={"rolling": 3600}, account="budgeted")
MONEY = Key("money", account="budgeted")
EXPIRED = Key("expired")
LATER = Key("later")
STRANGER = Key("stranger")  # not in the policy
OUTPUT = 2000  # micro-dollars per output token, as in tests/e2e/test_money.py


def policy() -> str:
    return "\n".join([
        "version: 1",
        "prices:",
        f"  gpt-4o-mini: {{input: 1000, cached_input: 250, output: {OUTPUT}}}",
        "accounts:",
        "  budgeted: {cap: 100000, window: daily}",
        "  team: {}",
        "keys:",
        f"  - {{id: {ASKER.id}, account: budgeted, credential_sha256: {ASKER.fp}, cap: 5000,",
        "     window: {rolling: 3600}}",
        f"  - {{id: {MONEY.id}, account: budgeted, credential_sha256: {MONEY.fp}, cap_usd: 5}}",
        f"  - {{id: {EXPIRED.id}, account: team, credential_sha256: {EXPIRED.fp},",
        "     expires: 2020-01-01}",
        f"  - {{id: {LATER.id}, account: team, credential_sha256: {LATER.fp},",
        "     expires: '2999-12-31T18:00:00+01:00'}",
    ]) + "\n"


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("budget-endpoint", policy())


def ask(proxy: Proxy, path: str, headers: dict[str, str], host: str | None = None) -> Any:
    """GET the endpoint through the proxy (explicit Host: any host gets the same answer)."""
    httpx = http_module()
    with httpx.Client(base_url=proxy.url, timeout=10.0) as client:
        return client.get(path, headers={**headers, **({"host": host} if host else {})})


def test_the_budget_is_what_the_headers_say(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    raw = openai_client(proxy, ASKER).chat.completions.with_raw_response.create(
        **chat(f"{t} #len:30", max_tokens=30))
    spent = standin.received(t)[0].spend
    proxy.wait_audit(ASKER.id, 1)
    r = ask(proxy, "/seatbelt/budget", {"authorization": f"Bearer {ASKER.credential}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["key"], body["account"]) == (ASKER.id, "budgeted")
    assert body["remaining_tokens"] == ASKER.cap - spent  # the key's cap binds
    assert body["reset_s"] == 3600 and body["remaining_usd"] is None
    key_cap, account_cap = body["caps"]
    assert key_cap == {"subject": f"key:{ASKER.id}", "unit": "tokens", "cap": 5000,
                       "window": "rolling:3600", "spent": spent, "reserved": 0,
                       "remaining": 5000 - spent, "reset_s": 3600}
    assert account_cap["subject"] == "account:budgeted" and account_cap["window"] == "daily"
    assert 1 <= account_cap["reset_s"] <= 86400
    # The same figures as the response headers (those counted this request's own hold).
    assert r.headers["x-seatbelt-remaining-tokens"] == str(ASKER.cap - spent)
    assert int(raw.headers["x-seatbelt-remaining-tokens"]) <= ASKER.cap - spent
    assert not standin.received("/seatbelt/budget")


def test_any_host_any_credential_header_and_the_v1_path(proxy: Proxy,
                                                       standin: StandIn) -> None:
    before = len(standin.requests)
    for path, headers, host in [
        ("/v1/seatbelt/budget", {"x-api-key": ASKER.credential}, "api.anthropic.com"),
        ("/seatbelt/budget?x=1", {"api-key": ASKER.credential}, "example.invalid"),
    ]:
        r = ask(proxy, path, headers, host)
        assert r.status_code == 200 and r.json()["key"] == ASKER.id, r.text
    assert len(standin.requests) == before  # never forwarded


def test_usd_budget(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    openai_client(proxy, MONEY).chat.completions.create(**chat(f"{t} #len:10", max_tokens=10))
    (up,) = standin.received(t)
    proxy.wait_audit(MONEY.id, 1)
    body = ask(proxy, "/seatbelt/budget", {"authorization": f"Bearer {MONEY.credential}"}).json()
    usd = [c for c in body["caps"] if c["unit"] == "usd"]
    assert [c["subject"] for c in usd] == [f"key:{MONEY.id}", "account:budgeted"]
    cost = (up.usage["prompt_tokens"] * 1000 + up.usage["completion_tokens"] * OUTPUT) / 1e6
    assert usd[0]["cap"] == 5.0 and usd[0]["spent"] == pytest.approx(cost)
    assert body["remaining_usd"] == pytest.approx(5.0 - cost)
    assert body["remaining_tokens"] is not None  # the account's daily token cap
    # The same figures as the USD budget gauges the dashboard and the alerts read.
    gauge = wait_for("the USD gauges", lambda: proxy.metrics().value(
        "seatbelt_remaining_usd", account="budgeted", key=MONEY.id) if proxy.metrics().value(
        "seatbelt_window_spend_usd", account="budgeted", key=MONEY.id) else None)
    assert gauge == pytest.approx(body["remaining_usd"])
    assert proxy.metrics().value("seatbelt_cap_usd", account="budgeted", key=MONEY.id) == 5.0


def test_unknown_missing_and_expired_credentials_get_401(proxy: Proxy) -> None:
    for headers, code in [
        ({"authorization": f"Bearer {STRANGER.credential}"}, "invalid_api_key"),
        ({}, "invalid_api_key"),
        ({"authorization": f"Bearer {EXPIRED.credential}"}, "key_expired"),
    ]:
        r = ask(proxy, "/seatbelt/budget", headers)
        assert r.status_code == 401, r.text
        assert r.headers["x-seatbelt-refused"] == code
        assert r.headers["x-should-retry"] == "false"
        assert STRANGER.credential not in r.text and "remaining" not in r.text


def test_an_expired_key_is_refused_401_with_a_clear_message(proxy: Proxy,
                                                            standin: StandIn) -> None:
    t = tag()
    with pytest.raises(openai.AuthenticationError) as info:
        openai_client(proxy, EXPIRED).chat.completions.create(**chat(t, max_tokens=5))
    status, headers, body = refusal(info.value)
    assert status == 401 and headers["x-seatbelt-refused"] == "key_expired"
    message = body["error"]["message"]
    assert f"key '{EXPIRED.id}' expired at 2020-01-01T00:00:00Z" in message, message
    ant = anthropic.Anthropic(base_url=proxy.url, api_key=EXPIRED.credential)  # default retries
    with pytest.raises(anthropic.AuthenticationError) as info2:
        ant.messages.create(model="claude-sonnet-4-0", max_tokens=5,
                            messages=[{"role": "user", "content": t}])
    assert refusal(info2.value)[2]["error"]["type"] == "authentication_error"
    assert not standin.received(t)
    assert [a["outcome"] for a in proxy.wait_audit(EXPIRED.id, 2)] == ["unauthorized"] * 2
    assert "expires: 2020-01-01T00:00:00Z is in the past" in proxy.log()
    # A key whose expiry is still ahead is served.
    openai_client(proxy, LATER).chat.completions.create(**chat(f"{t} later", max_tokens=5))
    assert len(standin.received(f"{t} later")) == 1
