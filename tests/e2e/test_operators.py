"""Operating budgets through a real mitmdump: live policy, shadow mode, budget headers, clamp,
virtual keys, allow-lists, max_concurrent, identity by proxy-auth (issue 7)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any, Iterator

import openai
import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    chat,
    http_module,
    openai_client,
    policy_text,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

REAL = "sk-real-provider-" + "7" * 24  # what the upstream must see for the virtual key
ENV = "SEATBELT_E2E_UPSTREAM_KEY"

BASIC = Key("op-basic", cap=100000, window="daily")
SHADOW = Key("op-shadow", cap=50)
CLAMP = Key("op-clamp", cap=400)
VIRTUAL = Key("op-virtual")
ELSEWHERE = Key("op-elsewhere")
PICKY = Key("op-picky")
FAN = Key("op-fan")
LATE = Key("op-late")  # only in the policy after the live reload
EXTRA = {
    SHADOW.id: "    enforce: false\n",
    CLAMP.id: "    over_cap: clamp\n    min_output: 20\n",
    VIRTUAL.id: f"    upstream_credential_env: {ENV}\n    upstream_hosts: [127.0.0.1]\n",
    ELSEWHERE.id: f"    upstream_credential_env: {ENV}\n    upstream_hosts: [api.openai.com]\n",
    PICKY.id: "    models: [gpt-4o-mini]\n",
    FAN.id: "    max_concurrent: 1\n",
}


def operators_policy(keys: list[Key]) -> str:
    """policy_text plus each key's operating fields, written under its own entry."""
    text = policy_text(keys)
    for key_id, extra in EXTRA.items():
        text = text.replace(f"  - id: {key_id}\n", f"  - id: {key_id}\n{extra}", 1)
    return text


KEYS = [BASIC, SHADOW, CLAMP, VIRTUAL, ELSEWHERE, PICKY, FAN]


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Iterator[Proxy]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, REAL)  # mitmdump inherits it; the policy reads it at load
        p = proxy_factory("operators", operators_policy(KEYS),
                          extra_args=["-w", "flows.mitm"])
        yield p


def test_budget_headers_on_buffered_and_streamed(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, BASIC)
    raw = client.chat.completions.with_raw_response.create(**chat(f"{t} #len:5", max_tokens=20))
    first = int(raw.headers["x-seatbelt-remaining-tokens"])
    assert 0 < first < 100000 and 1 <= int(raw.headers["x-seatbelt-reset"]) <= 86400
    with client.chat.completions.with_streaming_response.create(
            **chat(f"{t} #len:5", max_tokens=20), stream=True) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        remaining = int(s.headers["x-seatbelt-remaining-tokens"])
        list(s.iter_lines())
    spent_first = standin.received(t)[0].spend
    assert remaining < first and remaining <= 100000 - spent_first
    proxy.wait_audit(BASIC.id, 2)
    # An uncapped key: no budget headers.
    plain = openai_client(proxy, PICKY).chat.completions.with_raw_response.create(
        **chat(tag(), max_tokens=5))
    assert "x-seatbelt-remaining-tokens" not in plain.headers


def test_shadow_mode_forwards_meters_and_counts(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, SHADOW)
    for _ in range(2):  # each would need more than the whole 50-token cap
        client.chat.completions.create(**chat(f"{t} #len:30", max_tokens=100))
    assert len(standin.received(t)) == 2
    lines = proxy.wait_audit(SHADOW.id, 2)
    assert all(a["outcome"] == "served" for a in lines)
    assert all("shadow_refused:insufficient_quota" in a["edits"] for a in lines)
    row = proxy.row(SHADOW.id)
    assert row["spent"] == sum(r.spend for r in standin.received(t)) > 50
    assert proxy.metrics().value("seatbelt_shadow_refusals_total", key=SHADOW.id,
                                 outcome="refused_quota") == 2


def test_clamp_lowers_max_tokens(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    raw = openai_client(proxy, CLAMP).chat.completions.with_raw_response.create(
        **chat(f"{t} #len:10", max_tokens=5000))
    (up,) = standin.received(t)
    new = up.json["max_tokens"]
    assert 20 <= new < 5000
    assert raw.headers["x-seatbelt-clamped"] == f"5000->{new}"
    (line,) = proxy.wait_audit(CLAMP.id, 1)
    assert "clamped" in line["edits"] and line["reserved"] <= 400


def test_virtual_key_is_swapped_only_on_its_hosts_and_never_kept(
        proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    openai_client(proxy, VIRTUAL).chat.completions.create(**chat(f"{t} #len:3", max_tokens=5))
    (up,) = standin.received(t)
    assert up.header("authorization") == f"Bearer {REAL}"
    (line,) = proxy.wait_audit(VIRTUAL.id, 1)
    assert "credential_swapped" in line["edits"]
    # A virtual key whose hosts do not include this upstream: 403, nothing sent.
    t2 = tag()
    with pytest.raises(openai.PermissionDeniedError) as e:
        openai_client(proxy, ELSEWHERE).chat.completions.create(**chat(t2, max_tokens=5))
    assert e.value.response.headers["x-seatbelt-refused"] == "host_not_allowed"
    assert standin.received(t2) == []
    proxy.stop()  # flush the saved flows; the next test starts it again
    try:
        saved = (proxy.workdir / "flows.mitm").read_bytes()
        assert VIRTUAL.credential.encode() not in saved and REAL.encode() not in saved
        assert t.encode() in saved  # the flow itself was saved
        for text in (proxy.log(), proxy.audit_path.read_text()):
            assert REAL not in text and VIRTUAL.credential not in text
    finally:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(ENV, REAL)
            proxy.start()


def test_model_allow_list(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, PICKY)
    client.chat.completions.create(**chat(t, max_tokens=5))
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(**dict(chat(t, max_tokens=5), model="gpt-4.1"))
    assert e.value.body["code"] == "model_not_allowed"
    assert len(standin.received(t)) == 1


def test_max_concurrent_refuses_the_second_in_flight(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, FAN)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lambda: list(client.chat.completions.create(
            **chat(f"{t} #len:20 #slow:150", max_tokens=30), stream=True)))
        wait_for("the slow stream upstream", lambda: standin.received(t))
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(**chat(f"{t} second", max_tokens=5))
        assert e.value.response.headers["retry-after"] == "1"
        assert "max_concurrent" in e.value.body["message"]
        slow.result(30)
    client.chat.completions.create(**chat(f"{t} third", max_tokens=5))  # the slot is free
    assert len(standin.received(t)) == 2


def test_live_policy_reload_from_the_file(proxy: Proxy, standin: StandIn) -> None:
    late = openai_client(proxy, LATE)
    with pytest.raises(openai.AuthenticationError):
        late.chat.completions.create(**chat(tag(), max_tokens=5))
    spent_before = proxy.row(BASIC.id)["spent"]
    good = operators_policy([*KEYS, LATE])
    broken = good.replace("version: 1", "version: 1\nbogus_field: 1")

    def save(text: str) -> None:
        tmp = proxy.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, proxy.policy_path)  # atomic, as docs/policy.md asks

    try:
        save(good)
        event = wait_for("a policy_reloaded audit line", lambda: [
            a for a in proxy.audit() if a["outcome"] == "policy_reloaded"])[-1]
        assert event["trigger"] == "file_changed" and event["policy_keys"] == len(KEYS) + 1
        late.chat.completions.create(**chat(tag(), max_tokens=5))  # admitted now
        save(broken)
        rejected = wait_for("a policy_rejected audit line", lambda: [
            a for a in proxy.audit() if a["outcome"] == "policy_rejected"])[-1]
        assert "bogus_field" in rejected["error"] and rejected["key"] is None
        time.sleep(1.5)  # further ticks: the same broken file is reported once
        assert len([a for a in proxy.audit() if a["outcome"] == "policy_rejected"]) == 1
        late.chat.completions.create(**chat(tag(), max_tokens=5))  # last good policy stays
    finally:
        save(operators_policy(KEYS))
    assert proxy.row(BASIC.id)["spent"] == spent_before  # reloads never reset the ledger


# --------------------------------------------------------------------------- identities


SHARED = "sk-shared-provider-" + "5" * 20  # one provider key every agent sends; not a policy key


@pytest.fixture(scope="module")
def authproxy(proxy_factory: Any) -> Proxy:
    policy = policy_text([BASIC]) + "  - id: op-alice\n    account: team\n" \
        "    proxy_auth_user: alice\n    cap: 100000\n"
    return proxy_factory("operators-auth", policy, mode="regular",
                         options={"proxyauth": "alice:s3cret"})


def test_identity_by_proxy_auth_user(authproxy: Proxy, standin: StandIn) -> None:
    t = tag()
    http = http_module()
    user_url = f"http://alice:s3cret@127.0.0.1:{authproxy.port}"
    client = openai_client(standin.url + "/v1", SHARED,
                           http_client=http.Client(proxy=user_url, timeout=30))
    client.chat.completions.create(**chat(f"{t} #len:4", max_tokens=6))
    (up,) = standin.received(t)
    assert up.header("authorization") == f"Bearer {SHARED}"  # passed as it was
    assert "proxy-authorization" not in up.header_names
    (line,) = authproxy.wait_audit("op-alice", 1)
    assert line["usage_source"] == "reported" and authproxy.row("op-alice")["spent"] == up.spend
    # The credential still wins over the proxy user.
    openai_client(standin.url + "/v1", BASIC, http_client=http.Client(
        proxy=user_url, timeout=30)).chat.completions.create(**chat(f"{t} b", max_tokens=5))
    authproxy.wait_audit(BASIC.id, 1)
    # Without proxy credentials mitmproxy itself answers 407; nothing reaches the API.
    bare = openai_client(standin.url + "/v1", SHARED, http_client=http.Client(
        proxy=f"http://127.0.0.1:{authproxy.port}", timeout=30))
    with pytest.raises(openai.APIStatusError) as e:
        bare.chat.completions.create(**chat(f"{t} c", max_tokens=5))
    assert e.value.status_code == 407
    assert len(standin.received(t)) == 2
