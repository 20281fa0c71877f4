"""Seatbelt's refusals as the real SDKs take them, with their default retry settings.

The openai and anthropic SDKs retry a 429 twice on their own and sleep what Retry-After
says (anthropic >= 1: however long; see seatbelt/admission/refusals.py SDK_SLEEP_MAX). A
refusal that retrying cannot fix must say `x-should-retry: false`, or a call blocks for the
whole window and then asks again. Requests reaching the proxy are counted from the audit
log: one line per request, refused or served.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import Key, Proxy, chat, policy_text, refusal, tag, wait_for
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

FEW_SECONDS = 5.0  # what "does not block" means here (the SDKs' own backoff is 0.5-8 s)
CAP = 240  # one request (a ~190-215-token hold, ~70 spent) fits, the next cannot
ROLLING_OAI = Key("sdk-rolling-oai", cap=CAP, window={"rolling": 3600})
ROLLING_ANT = Key("sdk-rolling-ant", cap=CAP, window={"rolling": 3600})
QUOTA_OAI = Key("sdk-quota-oai", cap=CAP)
QUOTA_ANT = Key("sdk-quota-ant", cap=CAP)
WHOLE_OAI = Key("sdk-whole-oai", cap=CAP, window={"rolling": 60})
WHOLE_ANT = Key("sdk-whole-ant", cap=CAP, window={"rolling": 60})
HELD = Key("sdk-held", cap=500)
DEFAULT = Key("sdk-default", cap=1500)
TINY = Key("sdk-tiny", cap=60)
KEYS = [ROLLING_OAI, ROLLING_ANT, QUOTA_OAI, QUOTA_ANT, WHOLE_OAI, WHOLE_ANT, HELD, DEFAULT,
        TINY]
BIG_DEFAULT = 16384
MODEL_ANT = "claude-sonnet-4-0"


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("sdk-refusals", policy_text(
        KEYS, models={"gpt-4o-mini": BIG_DEFAULT, MODEL_ANT: BIG_DEFAULT}))


def oai(proxy: Proxy, key: Key) -> openai.OpenAI:
    """An OpenAI client as an app builds it: default max_retries (2)."""
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key.credential, timeout=30.0)


def ant(proxy: Proxy, key: Key) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=key.credential, timeout=30.0)


def ant_message(client: anthropic.Anthropic, text: str, max_tokens: int) -> Any:
    return client.messages.create(model=MODEL_ANT, max_tokens=max_tokens,
                                  messages=[{"role": "user", "content": text}])


def timed_refusal(call: Any, error: type[Exception]) -> tuple[float, Any]:
    """(seconds the call blocked, the SDK's exception)."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        call()
    return time.monotonic() - start, info.value


def outcomes(proxy: Proxy, key: Key, count: int) -> list[str]:
    """The outcome of each request of `key` that reached the proxy. A refusal's line is
    written before it is answered, so once the SDK gave up every retry is in the log."""
    return [a["outcome"] for a in proxy.wait_audit(key.id, count)]


def test_openai_rolling_refusal_is_not_retried(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = oai(proxy, ROLLING_OAI)
    client.chat.completions.create(**chat(f"{t} #len:60", max_tokens=60))
    took, err = timed_refusal(
        lambda: client.chat.completions.create(**chat(f"{t} again", max_tokens=60)),
        openai.RateLimitError)
    status, headers, body = refusal(err)
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    assert 1 <= int(headers["retry-after"]) <= 3600  # never longer than the window
    assert headers["x-should-retry"] == "false"
    assert took < FEW_SECONDS, took
    assert outcomes(proxy, ROLLING_OAI, 2) == ["served", "refused_rate"]
    assert len(standin.received(t)) == 1


def test_anthropic_rolling_refusal_does_not_sleep_the_window(proxy: Proxy,
                                                             standin: StandIn) -> None:
    """anthropic >= 1 sleeps whatever Retry-After says (3,012 s were seen), then retries."""
    t = tag()
    client = ant(proxy, ROLLING_ANT)
    ant_message(client, f"{t} #len:60", 60)
    took, err = timed_refusal(lambda: ant_message(client, f"{t} again", 60),
                              anthropic.RateLimitError)
    status, headers, body = refusal(err)
    assert (status, body["error"]["type"]) == (429, "rate_limit_error")
    assert 1 <= int(headers["retry-after"]) <= 3600
    assert headers["x-should-retry"] == "false"
    assert took < FEW_SECONDS, took
    assert outcomes(proxy, ROLLING_ANT, 2) == ["served", "refused_rate"]
    assert len(standin.received(t)) == 1


def test_an_exhausted_balance_is_told_apart_and_not_retried(proxy: Proxy,
                                                            standin: StandIn) -> None:
    t = tag()
    oai_client, ant_client = oai(proxy, QUOTA_OAI), ant(proxy, QUOTA_ANT)
    oai_client.chat.completions.create(**chat(f"{t} #len:60", max_tokens=60))
    ant_message(ant_client, f"{t} #len:60", 60)
    took_oai, err_oai = timed_refusal(
        lambda: oai_client.chat.completions.create(**chat(f"{t} more", max_tokens=60)),
        openai.RateLimitError)
    took_ant, err_ant = timed_refusal(lambda: ant_message(ant_client, f"{t} more", 60),
                                      anthropic.RateLimitError)
    _, headers_oai, body_oai = refusal(err_oai)
    status, headers_ant, body_ant = refusal(err_ant)
    assert body_oai["error"]["code"] == body_oai["error"]["type"] == "insufficient_quota"
    assert status == 429 and body_ant["error"]["type"] == "billing_error"
    for headers in (headers_oai, headers_ant):
        assert headers["x-should-retry"] == "false" and "retry-after" not in headers
    assert max(took_oai, took_ant) < FEW_SECONDS, (took_oai, took_ant)
    assert outcomes(proxy, QUOTA_OAI, 2) == ["served", "refused_quota"]
    assert outcomes(proxy, QUOTA_ANT, 2) == ["served", "refused_quota"]


def test_a_request_larger_than_the_whole_cap_is_not_retried(proxy: Proxy) -> None:
    t = tag()
    took_oai, err_oai = timed_refusal(
        lambda: oai(proxy, WHOLE_OAI).chat.completions.create(**chat(t, max_tokens=500)),
        openai.RateLimitError)
    took_ant, err_ant = timed_refusal(lambda: ant_message(ant(proxy, WHOLE_ANT), t, 500),
                                      anthropic.RateLimitError)
    for err in (err_oai, err_ant):
        _, headers, body = refusal(err)
        assert headers["retry-after"] == "60" and headers["x-should-retry"] == "false"
        assert "more than the whole" in str(body)
    assert max(took_oai, took_ant) < FEW_SECONDS, (took_oai, took_ant)
    assert outcomes(proxy, WHOLE_OAI, 1) == ["refused_rate"]
    assert outcomes(proxy, WHOLE_ANT, 1) == ["refused_rate"]


def test_a_cap_held_by_requests_in_flight_is_retried_and_served(proxy: Proxy,
                                                                standin: StandIn) -> None:
    """Retry-After 1: here retrying helps, so the SDK's own retry is left alone."""
    t = tag()
    client = oai(proxy, HELD)
    slow_done = threading.Event()

    def slow() -> None:
        stream = client.chat.completions.create(
            **chat(f"{t} slow #slow:100 #len:8", max_tokens=250), stream=True)
        for _ in stream:
            pass
        slow_done.set()

    runner = threading.Thread(target=slow)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not standin.received(f"{t} slow") and time.monotonic() < deadline:
            time.sleep(0.02)
        raw = client.chat.completions.with_raw_response.create(
            **chat(f"{t} second #len:5", max_tokens=250))
    finally:
        runner.join(30)
    assert slow_done.is_set()
    assert raw.status_code == 200
    # The slow stream, then the second request: refused while held, retried, served. A
    # served line follows its settle (written once the ledger took it): wait for both.
    lines = wait_for("both served lines", lambda: (
        found if (found := outcomes(proxy, HELD, 3)).count("served") == 2 else None))
    assert lines.count("refused_rate") >= 1 and lines.count("served") == 2, lines


def test_no_limit_named_writes_the_largest_that_fits(proxy: Proxy, standin: StandIn) -> None:
    """Issue: the model's 16,384 was reserved, and insufficient_quota came back with 1,410
    tokens left. Now the largest limit that fits is written, and said so."""
    t = tag()
    client = oai(proxy, DEFAULT)
    client.chat.completions.create(**chat(f"{t} #len:20", max_tokens=20))
    raw = client.chat.completions.with_raw_response.create(**chat(f"{t} no limit #len:30"))
    assert raw.status_code == 200
    (_, second) = standin.received(t)
    first_spend = standin.received(t)[0].spend
    written = second.json["max_tokens"]
    assert 64 <= written < BIG_DEFAULT
    header = raw.headers["x-seatbelt-clamped"]
    assert header == f"{BIG_DEFAULT}->{written}"
    line = proxy.wait_audit(DEFAULT.id, 2)[-1]
    assert line["outcome"] == "served"
    # (`prompt_counted` may come between: the exact count runs before the clamp when the
    # byte bound does not fit, seatbelt/admission/steps.py reserve_tokens)
    edits = [e for e in line["edits"] if e != "prompt_counted"]
    assert edits[:2] == ["limit_written", "clamped"]
    # The hold was a real bound: reserved what is left, no more.
    assert first_spend + line["reserved"] <= DEFAULT.cap
    remaining = int(raw.headers["x-seatbelt-remaining-tokens"])
    assert remaining == DEFAULT.cap - first_spend - line["reserved"]


def test_no_limit_named_and_less_than_min_output_left_is_refused(proxy: Proxy) -> None:
    """Below the key's min_output (64) nothing useful fits: the usual refusal."""
    t = tag()
    took, err = timed_refusal(lambda: oai(proxy, TINY).chat.completions.create(**chat(t)),
                              openai.RateLimitError)
    _, headers, body = refusal(err)
    assert body["error"]["code"] == "insufficient_quota"
    assert headers["x-should-retry"] == "false" and took < FEW_SECONDS
    assert outcomes(proxy, TINY, 1) == ["refused_quota"]
