"""No stream outruns its hold; leaving early does not lower the bill (issue 13, items 6-7).

A stand-in that ignores the output limit and keeps generating (`#endless`) is cut off in each
family's own error shape, its upstream connection closed, the request charged no more than its
hold. A real openai SDK client that closes its stream after the last content frame, before the
usage frame (`#usage-after`), is charged at least what the stand-in bills, hidden reasoning
(`#hidden-reasoning`) included. See docs/metering.md.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
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
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

CAP = 2000
OA = Key("cut-openai", cap=CAP)
OA_ASKED = Key("cut-openai-asked", cap=CAP)
ANT = Key("cut-anthropic", cap=CAP)
GEM_SSE = Key("cut-gemini-sse", cap=CAP)
GEM_ARRAY = Key("cut-gemini-array", cap=CAP)
FAN = Key("cut-fanout", cap=900)
LEFT_REASONING = Key("left-reasoning", cap=20000)
LEFT_PLAIN = Key("left-plain", cap=20000)
KEYS = [OA, OA_ASKED, ANT, GEM_SSE, GEM_ARRAY, FAN, LEFT_REASONING, LEFT_PLAIN]
LIMIT = 20  # the output limit each cut-off request names
GEM = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("stream-limits", policy_text(KEYS))


def cut_off(proxy: Proxy, key: Key, standin: StandIn, t: str) -> dict[str, Any]:
    """The one request of `key` was cut off: audited, charged within its hold, the
    upstream left generating (its connection closed), the hold released."""
    (line,) = proxy.wait_audit(key.id, 1)
    assert "cut_off" in line["edits"], line
    assert line["outcome"] == "aborted" and line["overrun"] is False, line
    charged = line["prompt_tokens"] + line["completion_tokens"]
    assert charged <= line["reserved"] <= CAP, line
    assert line["completion_tokens"] >= LIMIT, line  # it did generate past the allowance
    # seatbelt closed the upstream; the stand-in sees that on its next write, a moment later
    up = wait_for("the stand-in to see its client gone",
                  lambda: next((r for r in standin.received(t) if r.outcome != "pending"), None))
    assert up.outcome == "client_gone", up.outcome
    assert len(standin.received(t)) == 1
    assert up.frames_sent < 10_000, up.frames_sent  # it stopped long before its million
    row = proxy.row(key.id)
    assert row["spent"] == charged <= CAP and row["reserved"] == 0, row
    return line


def test_openai_stream_past_its_hold_is_cut_off_and_the_sdk_raises(
        proxy: Proxy, standin: StandIn) -> None:
    import openai

    t = tag()
    client = openai_client(proxy, OA)
    texts: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        stream = client.chat.completions.create(**chat(f"{t} #endless", max_tokens=LIMIT),
                                                stream=True)
        for chunk in stream:
            texts.extend(c.delta.content or "" for c in chunk.choices)
    assert "output_limit_exceeded" in str(raised.value.body), raised.value.body
    assert LIMIT < len([x for x in texts if x]) < 400, len(texts)  # content up to the cut
    cut_off(proxy, OA, standin, t)
    assert proxy.metrics().value("seatbelt_cut_off_total", provider="openai") is not None


def test_openai_stream_that_asked_for_usage_is_cut_off_too(
        proxy: Proxy, standin: StandIn) -> None:
    import openai

    t = tag()
    client = openai_client(proxy, OA_ASKED)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
                **chat(f"{t} #endless", max_completion_tokens=LIMIT), stream=True,
                stream_options={"include_usage": True}):
            pass
    cut_off(proxy, OA_ASKED, standin, t)


def test_anthropic_stream_past_its_hold_is_cut_off_and_the_sdk_raises(
        proxy: Proxy, standin: StandIn) -> None:
    import anthropic

    t = tag()
    client = anthropic_client(proxy, ANT)
    with pytest.raises(anthropic.APIStatusError) as raised, client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=LIMIT,
            messages=[{"role": "user", "content": f"{t} #endless"}]) as stream:
        for _ in stream.text_stream:
            pass
    assert raised.value.body["type"] == "error", raised.value.body
    assert "reserved" in raised.value.body["error"]["message"], raised.value.body
    cut_off(proxy, ANT, standin, t)


def gemini_body(t: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": f"{t} #endless #running-usage"}]}],
            "generationConfig": {"maxOutputTokens": LIMIT}}


def test_gemini_sse_stream_is_cut_off_on_its_running_count(
        proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = http_module().post(proxy.url + GEM + "?alt=sse", json=gemini_body(t), timeout=30,
                           headers={"x-goog-api-key": GEM_SSE.credential})
    assert r.status_code == 200
    events = [e for e in re.split(rb"\r?\n\r?\n", r.content) if e.strip()]
    last = json.loads(events[-1].split(b"data: ", 1)[1])
    assert last["error"]["status"] == "INVALID_ARGUMENT", last
    line = cut_off(proxy, GEM_SSE, standin, t)
    assert line["usage_source"] == "reported"  # the upstream's own running count


def test_gemini_array_stream_ends_with_an_error_element(
        proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = http_module().post(proxy.url + GEM, json=gemini_body(t), timeout=30,
                           headers={"x-goog-api-key": GEM_ARRAY.credential})
    assert r.status_code == 200
    elements = json.loads(r.content)  # still one JSON array: the error closes it
    assert "error" in elements[-1] and "candidates" in elements[-2], elements[-2:]
    cut_off(proxy, GEM_ARRAY, standin, t)


def test_fan_out_of_endless_streams_on_a_small_cap_stays_within_it(
        proxy: Proxy, standin: StandIn) -> None:
    import openai

    t = tag()
    clients = [openai_client(proxy, FAN) for _ in range(20)]
    start = threading.Barrier(len(clients))

    def one(i: int) -> str:
        start.wait()
        try:
            for _ in clients[i].chat.completions.create(
                    **chat(f"{t} {i} #endless", max_tokens=10), stream=True):
                pass
            return "served"
        except openai.RateLimitError:
            return "refused"
        except openai.APIError as e:
            return "cut_off" if "output_limit_exceeded" in str(e.body) else repr(e)

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(one, range(len(clients))))
    admitted = results.count("cut_off")
    assert admitted >= 1 and admitted + results.count("refused") == 20, results
    lines = proxy.wait_audit(FAN.id, 20)
    assert len([a for a in lines if "cut_off" in a["edits"]]) == admitted, lines
    row = proxy.row(FAN.id)
    assert row["spent"] <= FAN.cap and row["reserved"] == 0, (row, results)
    assert all(r.outcome == "client_gone" for r in standin.received(t)), \
        [r.outcome for r in standin.received(t)]


def leave_after_last_content(client: Any, model: str, text: str, **kw: Any) -> int:
    """Stream with the openai SDK and close it at the finish frame, before usage: the
    number of content chunks read."""
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True,
        stream_options={"include_usage": True}, **kw)
    n = 0
    for chunk in stream:
        assert chunk.usage is None  # the usage frame never arrives
        n += sum(1 for c in chunk.choices if c.delta.content)
        if any(c.finish_reason for c in chunk.choices):
            stream.close()
            break
    return n


@pytest.mark.parametrize("key,model,path", [
    (LEFT_REASONING, "o3-mini", "charged_hold"),
    (LEFT_PLAIN, "gpt-4o-mini", "charged_output_bound"),
])
def test_client_leaving_before_usage_is_charged_what_the_upstream_bills(
        proxy: Proxy, standin: StandIn, key: Key, model: str, path: str) -> None:
    t = tag()
    hidden = 5000 if path == "charged_hold" else 0
    before = proxy.metrics().value("seatbelt_early_close_total", path=path) or 0
    read = leave_after_last_content(
        openai_client(proxy, key), model, f"{t} #len:12 #hidden-reasoning:{hidden} "
        "#usage-after:400", max_completion_tokens=6000)
    assert read == 12
    (up,) = standin.received(t)
    wait_for("the stand-in to see the client leave",
             lambda: up.outcome if up.outcome != "pending" else None)
    # The upstream wrote its usage frame into a closed connection: nobody read it.
    assert up.outcome == "client_gone" and up.usage is not None
    billed = up.usage["prompt_tokens"] + up.usage["completion_tokens"]
    assert up.usage["completion_tokens"] == 12 + hidden
    (line,) = proxy.wait_audit(key.id, 1)
    charged = line["prompt_tokens"] + line["completion_tokens"]
    assert charged >= billed, (line, up.usage)
    assert line["usage_source"] == "estimated" and line["outcome"] == "aborted", line
    assert charged <= line["reserved"], line
    assert proxy.row(key.id)["spent"] == charged
    assert proxy.metrics().value("seatbelt_early_close_total", path=path) == before + 1
