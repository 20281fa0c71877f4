"""Caps through a real mitmdump: admitted, refused before dispatch, settled exactly (§3-§5)."""

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
    fan_out_streams,
    openai_client,
    policy_text,
    refusal,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

WITHIN = Key("within", cap=100_000)
# Each cap admits one ~70-token request (its hold, a byte bound on the prompt + 60, is
# ~190: seatbelt/admission/estimate.py) and refuses the next, which asks for 400 more.
QUOTA = Key("quota", cap=300)
QUOTA_ANT = Key("quota-ant", cap=300)
ROLLING = Key("rolling", cap=300, window={"rolling": 3600})
FANOUT = Key("fanout", cap=1200)
SUM = Key("sum")  # metered, not capped
SHARED_1 = Key("shared-1", account="shared")
SHARED_2 = Key("shared-2", account="shared")
KEYS = [WITHIN, QUOTA, QUOTA_ANT, ROLLING, FANOUT, SUM, SHARED_1, SHARED_2]
ACCOUNTS = {"shared": {"cap": 300, "window": "balance"}}


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("budget", policy_text(KEYS, accounts=ACCOUNTS))


def assert_settled(proxy: Proxy, key: Key, spent: int) -> dict[str, Any]:
    """The report agrees with `spent`, and nothing is left reserved."""
    row = proxy.row(key.id)
    assert row["spent"] == spent, row
    assert row["reserved"] == 0, row
    if key.cap is not None:
        assert row["cap"] == key.cap, row
        assert row["remaining"] == key.cap - spent, row
    return row


def test_within_cap_is_served_and_settled(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, WITHIN)
    resp = client.chat.completions.create(**chat(f"hello {t}", max_tokens=10))
    assert resp.usage is not None
    (up,) = standin.received(t)
    assert resp.usage.prompt_tokens == up.usage["prompt_tokens"]
    assert resp.usage.completion_tokens == up.usage["completion_tokens"]
    (line,) = proxy.wait_audit(WITHIN.id, 1)
    assert line["outcome"] == "served"
    assert line["usage_source"] == "reported"
    assert line["prompt_tokens"] + line["completion_tokens"] == up.spend
    assert_settled(proxy, WITHIN, up.spend)


def _spend_70(client: Any, t: str) -> None:
    """One served request of 5 + len(text)//4 + 60 tokens (the stand-in's formula)."""
    client.chat.completions.create(**chat(f"{t} #len:60", max_tokens=60))


def test_balance_cap_refuses_with_insufficient_quota(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    _spend_70(openai_client(proxy, QUOTA), t)
    # Default retries on: x-should-retry: false must stop the SDK from asking again.
    client = openai_client(proxy, QUOTA, max_retries=2)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**chat(f"{t} again", max_tokens=400))
    status, headers, body = refusal(info.value)
    assert status == 429
    assert "retry-after" not in headers
    assert headers.get("x-should-retry") == "false"
    assert headers.get("x-seatbelt-refused") == "insufficient_quota"
    err = body["error"]
    assert err["type"] == "insufficient_quota"
    assert err["code"] == "insufficient_quota"
    assert err["param"] is None
    assert QUOTA.id in err["message"] and QUOTA.credential not in err["message"]
    assert len(standin.received(t)) == 1, "the refused request reached the upstream"
    lines = proxy.wait_audit(QUOTA.id, 2)
    assert [a["outcome"] for a in lines] == ["served", "refused_quota"], "SDK retried a refusal"
    assert_settled(proxy, QUOTA, standin.received(t)[0].spend)


def test_balance_cap_refusal_in_anthropic_shape(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = anthropic_client(proxy, QUOTA_ANT, max_retries=2)
    msg = [{"role": "user", "content": f"{t} #len:60"}]
    client.messages.create(model="claude-sonnet-4-0", max_tokens=60, messages=msg)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-sonnet-4-0", max_tokens=400, messages=msg)
    status, headers, body = refusal(info.value)
    assert status == 429
    assert "retry-after" not in headers
    assert headers.get("x-should-retry") == "false"
    assert headers.get("x-seatbelt-refused") == "insufficient_quota"
    assert body["type"] == "error"
    assert body["error"]["type"] == "billing_error"  # an exhausted balance, not a rate limit
    assert QUOTA_ANT.id in body["error"]["message"]
    assert len(standin.received(t)) == 1
    lines = proxy.wait_audit(QUOTA_ANT.id, 2)
    assert [a["outcome"] for a in lines] == ["served", "refused_quota"]
    assert_settled(proxy, QUOTA_ANT, standin.received(t)[0].spend)


def test_rolling_cap_refuses_with_retry_after(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, ROLLING)
    _spend_70(client, t)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**chat(f"{t} again", max_tokens=400))
    status, headers, body = refusal(info.value)
    assert status == 429
    retry_after = headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit(), headers
    # Never longer than the window (seatbelt/ledger/windows.py seconds_until_room); far
    # longer than an SDK should sleep, so it is told not to retry.
    assert 1 <= int(retry_after) <= 3600
    assert headers.get("x-seatbelt-refused") == "rate_limit_exceeded"
    assert headers.get("x-should-retry") == "false"
    assert body["error"]["type"] == "tokens"
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["param"] is None
    assert len(standin.received(t)) == 1
    lines = proxy.wait_audit(ROLLING.id, 2)
    assert [a["outcome"] for a in lines] == ["served", "refused_rate"]
    row = assert_settled(proxy, ROLLING, standin.received(t)[0].spend)
    assert row["window"] == "rolling:3600"


def test_account_cap_is_shared_by_its_keys(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    _spend_70(openai_client(proxy, SHARED_1), t)
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(proxy, SHARED_2).chat.completions.create(**chat(f"{t} b", max_tokens=400))
    _, headers, body = refusal(info.value)
    assert body["error"]["code"] == "insufficient_quota"
    assert SHARED_1.credential not in body["error"]["message"]
    assert SHARED_2.credential not in body["error"]["message"]
    assert len(standin.received(t)) == 1
    proxy.wait_audit(SHARED_2.id, 1)
    assert proxy.row(SHARED_2.id)["spent"] == 0


def test_fan_out_never_overshoots(proxy: Proxy, standin: StandIn) -> None:
    """40 concurrent streams on a cap that holds ~9: the rest are refused, never sent."""
    t = tag()
    results = fan_out_streams([openai_client(proxy, FANOUT) for _ in range(40)], t)
    served = results.count("served")
    refused = [r for r in results if r != "served"]
    assert served >= 1 and refused, results
    assert set(refused) <= {"insufficient_quota", "rate_limit_exceeded"}, results
    upstream = standin.received(t)
    assert len(upstream) == served, "a refused request was dispatched"
    lines = proxy.wait_audit(FANOUT.id, 40)
    odd = [a for a in lines if a["outcome"] not in ("served", "refused_quota", "refused_rate")]
    assert not odd, odd
    assert sum(a["outcome"] == "served" for a in lines) == served
    spent = sum(r.spend for r in upstream)
    assert all(r.usage_reported for r in upstream)
    assert spent <= FANOUT.cap
    assert_settled(proxy, FANOUT, spent)


def test_spend_equals_sum_of_reported_usage(proxy: Proxy, standin: StandIn) -> None:
    """Every API shape, buffered and streamed: the ledger holds exactly what upstream said."""
    t = tag()
    oa, an = openai_client(proxy, SUM), anthropic_client(proxy, SUM)
    oa.chat.completions.create(**chat(f"{t} #cache-read:3 #reasoning:2", max_tokens=9))
    for _ in oa.chat.completions.create(**chat(f"{t} s1", max_tokens=8), stream=True,
                                        stream_options={"include_usage": True}):
        pass
    for _ in oa.chat.completions.create(**chat(f"{t} s2", max_tokens=8), stream=True):
        pass
    oa.completions.create(model="gpt-4o-mini", prompt=f"{t} legacy", max_tokens=4, n=2, best_of=3)
    for _ in oa.completions.create(model="gpt-4o-mini", prompt=f"{t} ls", max_tokens=5,
                                   stream=True):
        pass
    oa.embeddings.create(model="text-embedding-3-small", input=[f"{t} e1", "e2 words here"])
    msgs = [{"role": "user", "content": f"{t} #cache-read:7 #cache-write:11"}]
    an.messages.create(model="claude-sonnet-4-0", max_tokens=20, messages=msgs)
    with an.messages.stream(model="claude-sonnet-4-0", max_tokens=12, messages=[
            {"role": "user", "content": f"{t} #cache-write:5 #multi-delta #len:12"}]) as s:
        s.get_final_message()
    with an.messages.stream(model="claude-sonnet-4-0", max_tokens=12, messages=[
            {"role": "user", "content": f"{t} #delta-usage #cache-read:4"}]) as s:
        s.get_final_message()
    upstream = standin.received(t)
    assert len(upstream) == 9
    assert all(r.usage_reported for r in upstream), [r.path for r in upstream
                                                     if not r.usage_reported]
    lines = proxy.wait_audit(SUM.id, 9)
    assert {a["usage_source"] for a in lines} == {"reported"}
    expected = sum(r.spend for r in upstream)
    assert sum(a["prompt_tokens"] + a["completion_tokens"] for a in lines) == expected
    row = assert_settled(proxy, SUM, expected)
    assert row["cap"] is None and row["remaining"] is None
    m = proxy.metrics()
    labels = {"account": SUM.account, "key": SUM.id}
    assert m.value("seatbelt_spend_tokens_total", **labels) == expected
    assert m.value("seatbelt_spend_prompt_tokens_total", **labels) == sum(
        r.usage["prompt_tokens"] for r in upstream)
    assert m.value("seatbelt_spend_completion_tokens_total", **labels) == sum(
        r.usage["completion_tokens"] for r in upstream)


def test_nothing_stays_reserved(proxy: Proxy) -> None:
    rows = proxy.report()
    assert {r["key"] for r in rows} >= {k.id for k in KEYS}
    assert all(r["reserved"] == 0 for r in rows), rows
    wait_for("every reserved gauge at 0", lambda: (g := proxy.metrics().find(
        "seatbelt_reserved_tokens")) and all(v == 0 for _, v in g), timeout=20)
