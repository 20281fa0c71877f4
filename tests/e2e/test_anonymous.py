"""`require_auth: false`: unknown callers pass uncapped as "anonymous", keys stay metered (§3)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    anthropic_client,
    chat,
    http_module,
    openai_client,
    policy_text,
    tag,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

KNOWN = Key("known", cap=200)  # holds one ~124-token request
STRANGER = "sk-stranger-" + "5" * 20


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("anonymous", policy_text([KNOWN], require_auth=False))


def test_anonymous_requests_touch_no_key(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    # Far above KNOWN's cap: anonymous traffic is not capped.
    openai_client(proxy, STRANGER).chat.completions.create(**chat(f"{t} #len:80",
                                                                  max_tokens=100))
    anthropic_client(proxy, STRANGER).messages.create(
        model="claude-sonnet-4-0", max_tokens=100,
        messages=[{"role": "user", "content": f"{t} #len:80"}])
    r = http_module().post(proxy.url + "/v1/chat/completions", json=chat(t, max_tokens=5))
    assert r.status_code == 200
    assert len(standin.received(t)) == 3
    lines = proxy.wait_audit("anonymous", 3)
    assert {(a["account"], a["key"]) for a in lines} == {("anonymous", "anonymous")}
    assert {a["outcome"] for a in lines} == {"served"}
    rows = proxy.report()
    assert [(r["key"], r["spent"], r["reserved"]) for r in rows] == [(KNOWN.id, 0, 0)]
    m = proxy.metrics()
    assert m.total("seatbelt_requests_total", key="anonymous", outcome="served") == 3
    assert m.value("seatbelt_spend_tokens_total", account=KNOWN.account, key=KNOWN.id) in (0, None)
    assert STRANGER not in proxy.audit_path.read_text()


def test_known_key_still_capped(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, KNOWN)
    client.chat.completions.create(**chat(t, max_tokens=5))
    (up,) = standin.received(t)
    proxy.wait_audit(KNOWN.id, 1)
    assert proxy.row(KNOWN.id)["spent"] == up.spend
    r = http_module().post(proxy.url + "/v1/chat/completions", json=chat(t, max_tokens=100),
                           headers={"authorization": f"Bearer {KNOWN.credential}"})
    assert r.status_code == 429
    assert len(standin.received(t)) == 1
