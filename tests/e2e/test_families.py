"""Every API family end to end through a real mitmdump, against the stand-in speaking that
family's exact wire format: buffered, streamed (usage split across chunks), a refusal in
the family's own error shape, a client that leaves mid-stream (issue 3)."""

from __future__ import annotations

import gzip
import json
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
from tests.standin import Received, StandIn

pytestmark = pytest.mark.e2e

R_BUF, R_STREAM, R_CAP, R_BG, R_GONE = (Key("r-buf"), Key("r-stream"), Key("r-cap", cap=20),
                                        Key("r-bg"), Key("r-gone"))
G_BUF, G_SSE, G_ARR, G_CAP, G_GONE = (Key("g-buf"), Key("g-sse"), Key("g-arr"),
                                      Key("g-cap", cap=20), Key("g-gone"))
O_BUF, O_STREAM, O_CAP, O_GONE, O_GZ = (Key("o-buf"), Key("o-stream"), Key("o-cap", cap=20),
                                        Key("o-gone"), Key("o-gz"))
A_STREAM, A_BUF, A_CAP, A_OLD, A_GONE = (Key("a-stream"), Key("a-buf"), Key("a-cap", cap=20),
                                         Key("a-old"), Key("a-gone"))
COMPAT = Key("compat")
CR_OPENAI, CR_ANTHROPIC = Key("cr-openai"), Key("cr-anthropic")
KEYS = [R_BUF, R_STREAM, R_CAP, R_BG, R_GONE, G_BUF, G_SSE, G_ARR, G_CAP, G_GONE, O_BUF,
        O_STREAM, O_CAP, O_GONE, O_GZ, A_STREAM, A_BUF, A_CAP, A_OLD, A_GONE, COMPAT,
        CR_OPENAI, CR_ANTHROPIC]
FALLBACK = 300
ROUTES = """routes:
  - path: /openai/deployments/old-*
    stream_options: false
  - path: /not-llm/*
    api: none
"""
GEM = "/v1beta/models/gemini-2.5-flash"
DEPLOY = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    policy = policy_text(KEYS, fallback_max_output=FALLBACK) + ROUTES
    return proxy_factory("families", policy)


def post(proxy: Proxy, path: str, body: Any, **headers: str) -> Any:
    return http_module().post(proxy.url + path, json=body, headers=headers, timeout=30)


def exact(proxy: Proxy, key: Key, up: Received, stream: bool) -> dict[str, Any]:
    """One request, settled from reported usage, exactly what the upstream reported."""
    assert up.usage_reported and up.usage is not None
    (line,) = proxy.wait_audit(key.id, 1)
    assert (line["usage_source"], line["outcome"], line["stream"]) == (
        "reported", "served", stream), line
    assert line["prompt_tokens"] == up.usage["prompt_tokens"], (line, up.usage)
    assert line["completion_tokens"] == up.usage["completion_tokens"], (line, up.usage)
    assert "?" not in line["path"]
    row = proxy.row(key.id)
    assert (row["spent"], row["reserved"]) == (up.spend, 0)
    return line


def leave_mid_stream(proxy: Proxy, path: str, body: Any, lines: int, **headers: str) -> None:
    """Open a stream, read `lines` non-empty lines, then drop the connection."""
    httpx = http_module()
    with httpx.Client(timeout=30) as client, client.stream(
        "POST", proxy.url + path, json=body, headers=headers
    ) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            if line.strip():
                seen += 1
                if seen >= lines:
                    break


def assert_aborted(proxy: Proxy, standin: StandIn, key: Key, t: str) -> None:
    wait_for("the upstream to see the client leave",
             lambda: standin.received(t) and standin.received(t)[0].outcome == "client_gone")
    (line,) = proxy.wait_audit(key.id, 1)
    assert (line["usage_source"], line["outcome"]) == ("estimated", "aborted"), line
    row = proxy.row(key.id)
    assert row["reserved"] == 0 and 0 < row["spent"] <= line["reserved"], (row, line)


# -- OpenAI Responses ------------------------------------------------------------------


def test_responses_buffered(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    resp = openai_client(proxy, R_BUF).responses.create(
        model="gpt-5-mini", input=f"{t} #len:9 #cache-read:4 #reasoning:3")
    assert resp.output_text == "".join(f"w{i} " for i in range(9))
    (up,) = standin.received(t)
    assert up.json["max_output_tokens"] == FALLBACK  # no limit named: the reserved one written
    line = exact(proxy, R_BUF, up, stream=False)
    assert (line["cached_tokens"], line["reasoning_tokens"]) == (4, 3)
    assert "limit_written" in line["edits"] and line["provider"] == "openai"


def test_responses_streamed_with_usage_split_across_chunks(proxy: Proxy,
                                                           standin: StandIn) -> None:
    t = tag()
    events = list(openai_client(proxy, R_STREAM).responses.create(
        model="gpt-5-mini", input=f"{t} #len:12 #split-usage #reasoning:5",
        max_output_tokens=40, stream=True))
    assert events[-1].type == "response.completed"
    (up,) = standin.received(t)
    assert "stream_options" not in up.json  # a Responses stream always reports usage
    line = exact(proxy, R_STREAM, up, stream=True)
    assert line["reasoning_tokens"] == 5 and line["edits"] == []


def test_responses_refusals_in_openai_shape(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, "/v1/responses", {"model": "gpt-5", "input": t, "max_output_tokens": 500},
             authorization=f"Bearer {R_CAP.credential}")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "insufficient_quota"
    r = post(proxy, "/v1/responses", {"model": "o3", "input": t, "background": True},
             authorization=f"Bearer {R_BG.credential}")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "endpoint_not_metered"
    assert r.headers["x-seatbelt-refused"] == "endpoint_not_metered"
    assert standin.received(t) == []


def test_responses_client_leaves(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    leave_mid_stream(proxy, "/v1/responses",
                     {"model": "gpt-5", "input": f"{t} #slow:100 #len:60", "stream": True},
                     lines=8, authorization=f"Bearer {R_GONE.credential}")
    assert_aborted(proxy, standin, R_GONE, t)


# -- Gemini ----------------------------------------------------------------------------


def gem_body(text: str, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        body["generationConfig"] = config
    return body


def test_gemini_buffered_with_header_key(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, GEM + ":generateContent", gem_body(f"{t} #len:6 #reasoning:2"),
             **{"x-goog-api-key": G_BUF.credential})
    assert r.status_code == 200
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "w0 w1 w2 w3 w4 w5 "
    (up,) = standin.received(t)
    assert up.json["generationConfig"] == {"maxOutputTokens": FALLBACK}
    line = exact(proxy, G_BUF, up, stream=False)
    assert (line["provider"], line["model"], line["reasoning_tokens"]) == (
        "gemini", "gemini-2.5-flash", 2)


def test_gemini_sse_with_query_key_split_usage(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    path = f"{GEM}:streamGenerateContent?alt=sse&key={G_SSE.credential}"
    r = post(proxy, path, gem_body(f"{t} #len:8 #split-usage", maxOutputTokens=50,
                                   candidateCount=2))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.count("data: ") == 8
    (up,) = standin.received(t)
    line = exact(proxy, G_SSE, up, stream=True)
    assert line["reserved"] >= 100  # maxOutputTokens x candidateCount
    assert G_SSE.credential not in proxy.audit_path.read_text()
    assert G_SSE.credential not in proxy.log()


def test_gemini_streamed_json_array(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, f"{GEM}:streamGenerateContent", gem_body(f"{t} #len:5 #split-usage"),
             **{"x-goog-api-key": G_ARR.credential})
    assert r.status_code == 200
    assert len(r.json()) == 5  # the client got the whole array, untouched
    (up,) = standin.received(t)
    exact(proxy, G_ARR, up, stream=True)


def test_gemini_refusals_in_google_shape(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, GEM + ":generateContent", gem_body(t, maxOutputTokens=500),
             **{"x-goog-api-key": G_CAP.credential})
    assert r.status_code == 429
    err = r.json()["error"]
    assert (err["code"], err["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert err["details"][0]["reason"] == "INSUFFICIENT_QUOTA"
    r = post(proxy, f"{GEM}:generateContent?key=sk-unknown-gemini-key", gem_body(t))
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = post(proxy, f"{GEM}:generateContent?key={G_CAP.credential}", gem_body(t),
             **{"x-goog-api-key": G_BUF.credential})
    assert r.status_code == 401  # two different credentials: never "anonymous"
    assert standin.received(t) == []


def test_gemini_client_leaves(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    leave_mid_stream(proxy, f"{GEM}:streamGenerateContent?alt=sse",
                     gem_body(f"{t} #slow:100 #len:60"), lines=3,
                     **{"x-goog-api-key": G_GONE.credential})
    assert_aborted(proxy, standin, G_GONE, t)


# -- Ollama ----------------------------------------------------------------------------


def ollama_body(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": [{"role": "user", "content": text}], **kw}


def test_ollama_buffered(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, "/api/chat", ollama_body(f"{t} #len:4", stream=False,
                                             options={"num_predict": 10}),
             authorization=f"Bearer {O_BUF.credential}")
    assert r.status_code == 200 and r.json()["done"] is True
    (up,) = standin.received(t)
    line = exact(proxy, O_BUF, up, stream=False)
    assert line["provider"] == "ollama" and line["edits"] == []


def test_ollama_streams_by_default_limit_written_split_usage(proxy: Proxy,
                                                             standin: StandIn) -> None:
    t = tag()
    r = post(proxy, "/api/generate", {"model": "llama3.2", "prompt": f"{t} #len:6 #split-usage",
                                      "options": {"num_predict": -1}},
             authorization=f"Bearer {O_STREAM.credential}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(x)["done"] for x in r.text.splitlines()] == [False] * 6 + [True]
    (up,) = standin.received(t)
    assert up.json["options"] == {"num_predict": FALLBACK}  # -1 = no limit: ours written in
    line = exact(proxy, O_STREAM, up, stream=True)
    assert line["edits"] == ["limit_written"]


def test_ollama_missing_prompt_count_is_estimated_not_zero(proxy: Proxy,
                                                           standin: StandIn) -> None:
    t = tag()
    key = O_GZ
    raw = json.dumps(ollama_body(f"{t} #len:5 #no-prompt-count")).encode()
    r = http_module().post(proxy.url + "/api/chat", content=gzip.compress(raw), timeout=30,
                           headers={"authorization": f"Bearer {key.credential}",
                                    "content-encoding": "gzip",
                                    "content-type": "application/json"})
    assert r.status_code == 200
    (up,) = standin.received(t)
    # a compressed request body was read, rewritten and re-encoded the same way
    assert up.header("content-encoding") == "gzip"
    assert up.json["options"] == {"num_predict": FALLBACK}
    (line,) = proxy.wait_audit(key.id, 1)
    assert line["usage_source"] == "estimated"
    assert line["completion_tokens"] == 5  # the count that was reported is kept
    assert line["prompt_tokens"] > 0


def test_ollama_refusals_in_ollama_shape(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, "/api/chat", ollama_body(t, options={"num_predict": 500}),
             authorization=f"Bearer {O_CAP.credential}")
    assert r.status_code == 429 and set(r.json()) == {"error"}
    assert "cap" in r.json()["error"]
    r = post(proxy, "/api/chat", ollama_body(t))  # Ollama clients send no key by default
    assert r.status_code == 401 and set(r.json()) == {"error"}
    assert r.headers["x-seatbelt-refused"] == "invalid_api_key"
    assert standin.received(t) == []


def test_ollama_client_leaves(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    leave_mid_stream(proxy, "/api/chat", ollama_body(f"{t} #slow:100 #len:60"), lines=3,
                     authorization=f"Bearer {O_GONE.credential}")
    assert_aborted(proxy, standin, O_GONE, t)


def test_ollama_without_credential_is_anonymous_when_auth_is_optional(
        proxy_factory: Any, standin: StandIn) -> None:
    anon = proxy_factory("families-anon", policy_text([Key("someone")], require_auth=False))
    t = tag()
    r = post(anon, "/api/chat", ollama_body(f"{t} #len:3"))
    assert r.status_code == 200
    (up,) = standin.received(t)
    (line,) = anon.wait_audit("anonymous", 1)
    assert (line["account"], line["usage_source"], line["provider"]) == (
        "anonymous", "reported", "ollama")
    assert line["prompt_tokens"] + line["completion_tokens"] == up.spend


# -- Azure OpenAI and compatible servers ------------------------------------------------


def test_azure_stream_first_chunk_passes_usage_hidden(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, DEPLOY, {"messages": [{"role": "user", "content": f"{t} #len:4 #split-usage"}],
                             "stream": True, "max_tokens": 20}, **{"api-key": A_STREAM.credential})
    assert r.status_code == 200
    frames = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
    assert "prompt_filter_results" in frames[0] and frames[0]["choices"] == []
    assert all(f.get("usage") is None for f in frames), "the injected usage frame leaked"
    (up,) = standin.received(t)
    assert up.json["stream_options"] == {"include_usage": True}
    line = exact(proxy, A_STREAM, up, stream=True)
    assert (line["provider"], line["model"]) == ("azure", "gpt4o-prod")


def test_azure_buffered_and_refusal(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    r = post(proxy, DEPLOY, {"messages": [{"role": "user", "content": f"{t} #len:3"}]},
             **{"api-key": A_BUF.credential})
    assert r.status_code == 200
    (up,) = standin.received(t)
    exact(proxy, A_BUF, up, stream=False)
    r = post(proxy, DEPLOY, {"messages": [{"role": "user", "content": t}], "max_tokens": 500},
             **{"api-key": A_CAP.credential})
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert len(standin.received(t)) == 1


def test_old_azure_stream_options_opt_out_and_hint(proxy: Proxy, standin: StandIn) -> None:
    old = "/chat/completions?api-version=2024-02-01"
    t = tag()
    body = {"messages": [{"role": "user", "content": f"{t} #len:4"}], "stream": True,
            "max_tokens": 10}
    # a route the policy opted out: no stream_options sent, streamed, metered by estimate
    r = post(proxy, "/openai/deployments/old-gpt4" + old, body, **{"api-key": A_OLD.credential})
    assert r.status_code == 200
    (up,) = standin.received(t)
    assert "stream_options" not in up.json
    (line,) = proxy.wait_audit(A_OLD.id, 1)
    assert line["usage_source"] == "estimated" and line["completion_tokens"] > 0
    # a route not opted out: the old API version answers 400, and the log says what to do
    t2 = tag()
    body["messages"][0]["content"] = t2
    r = post(proxy, "/openai/deployments/gpt4-legacy" + old, body,
             **{"api-key": A_OLD.credential})
    assert r.status_code == 400
    wait_for("the stream_options hint in the log",
             lambda: "stream_options: false" in proxy.log())
    assert proxy.row(A_OLD.id)["reserved"] == 0


def test_azure_client_leaves(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    leave_mid_stream(proxy, DEPLOY, {"messages": [{"role": "user",
                                                   "content": f"{t} #slow:100 #len:60"}],
                                     "stream": True}, lines=4, **{"api-key": A_GONE.credential})
    assert_aborted(proxy, standin, A_GONE, t)


def test_compatible_server_that_never_streams_usage_is_estimated(proxy: Proxy,
                                                                 standin: StandIn) -> None:
    t = tag()
    chunks = list(openai_client(proxy, COMPAT).chat.completions.create(
        **chat(f"{t} #len:8 #no-usage", model="llama-3.1-8b", max_tokens=30), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"w{i} " for i in range(8))
    (line,) = proxy.wait_audit(COMPAT.id, 1)
    assert (line["usage_source"], line["outcome"]) == ("estimated", "served")
    assert line["completion_tokens"] >= 1 and proxy.row(COMPAT.id)["reserved"] == 0


def test_policy_route_can_take_a_path_off_the_llm_routes(proxy: Proxy,
                                                         standin: StandIn) -> None:
    t = tag()
    r = post(proxy, "/not-llm/v1/chat/completions", chat(t),
             authorization="Bearer sk-not-in-the-policy")
    assert r.status_code == 200  # not an LLM route here: passed untouched, no 401
    assert len(standin.received(t)) == 1


# -- SSE in lone CRs -------------------------------------------------------------------


def test_a_stream_whose_lines_end_in_lone_crs_settles_its_reported_usage(
        proxy: Proxy, standin: StandIn) -> None:
    """The SSE spec's third line ending, which both SDKs read: the usage frame (hidden
    reasoning included, in the usage only) is read and settled exactly, not estimated."""
    t = tag()
    stream = openai_client(proxy, CR_OPENAI).chat.completions.create(
        **chat(f"{t} #cr-lines #len:7 #hidden-reasoning:40"), max_tokens=100, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"w{i} " for i in range(7))
    assert all(c.usage is None for c in chunks)  # the usage frame it did not ask for: hidden
    (up,) = standin.received(t)
    line = exact(proxy, CR_OPENAI, up, stream=True)
    assert line["completion_tokens"] == 47 and "usage_requested" in line["edits"]

    t = tag()
    with anthropic_client(proxy, CR_ANTHROPIC).messages.stream(
            model="claude-sonnet-4-5", max_tokens=100,
            messages=[{"role": "user", "content": f"{t} #cr-lines #len:5"}]) as s:
        assert s.get_final_text() == "".join(f"w{i} " for i in range(5))
    (up,) = standin.received(t)
    exact(proxy, CR_ANTHROPIC, up, stream=True)
