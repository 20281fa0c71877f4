"""The LLM contentview and the kept body: what a developer reads in mitmweb's Response tab.

Parsing is checked on the exact wire fixtures (tests/wire) and on documented examples of
the APIs that have no fixture yet; the view is then driven through mitmproxy's own
contentview machinery, on whichever mitmproxy (11 or 12) runs the tests.
"""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import contentviews, http
from mitmproxy import io as mitmio
from mitmproxy.test import taddons, tflow

from seatbelt.ui import contentview as cv
from tests.codec.test_keptbody import feed, scanner_for
from tests.wire import FIXTURES, Fixture

ALL = list(FIXTURES.values())

# Documented examples for APIs without a wire fixture (shapes quoted from real captures).
GEMINI_SSE = (
    b'data: {"candidates":[{"content":{"parts":[{"text":"Certainly"}],"role":"model"}}],'
    b'"usageMetadata":{"promptTokenCount":399,"totalTokenCount":399},'
    b'"modelVersion":"gemini-1.5-pro-002"}\r\n\r\n'
    b'data: {"candidates":[{"content":{"parts":[{"text":"!"}],"role":"model"},'
    b'"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":399,'
    b'"candidatesTokenCount":191,"totalTokenCount":590},"modelVersion":"gemini-1.5-pro-002"}'
    b"\r\n\r\n"
)
GEMINI_ARRAY = (
    b'[{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}],'
    b'"usageMetadata":{"promptTokenCount":5,"totalTokenCount":5}}\r\n,\r\n'
    b'{"candidates":[{"content":{"parts":[{"text":"lo"},{"functionCall":{"name":"f",'
    b'"args":{"x":1}}}],"role":"model"},"finishReason":"STOP"}],'
    b'"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}}\r\n]'
)
OLLAMA = (
    b'{"model":"llama3.2","message":{"role":"assistant","content":"Hel"},"done":false}\n'
    b'{"model":"llama3.2","message":{"role":"assistant","content":"lo"},"done":false}\n'
    b'{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,'
    b'"done_reason":"stop","prompt_eval_count":11,"eval_count":18,"eval_duration":52479709}\n'
)
RESPONSES_SSE = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1",'
    b'"object":"response","status":"in_progress","model":"gpt-5.2-codex","output":[],'
    b'"usage":null},"sequence_number":0}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"item_id":"msg_1","delta":"Hi","sequence_number":4}\n\n'
    b'event: response.output_item.added\ndata: {"type":"response.output_item.added",'
    b'"item":{"id":"fc_1","type":"function_call","name":"lookup","call_id":"call_9",'
    b'"arguments":""},"output_index":1,"sequence_number":5}\n\n'
    b'event: response.function_call_arguments.delta\ndata: {"type":'
    b'"response.function_call_arguments.delta","item_id":"fc_1","delta":"{\\"q\\":2}",'
    b'"sequence_number":6}\n\n'
    b'event: response.incomplete\ndata: {"type":"response.incomplete","response":{"id":'
    b'"resp_1","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},'
    b'"usage":{"input_tokens":100,"output_tokens":4096,"total_tokens":4196}},'
    b'"sequence_number":57}\n\n'
)
RESPONSES_JSON = json.dumps({
    "id": "resp_2", "object": "response", "status": "completed", "model": "gpt-5",
    "output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Think."}]},
        {"type": "message", "content": [{"type": "output_text", "text": "Done."}]},
    ],
    "usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13},
}).encode()


@pytest.mark.parametrize("fx", ALL, ids=lambda f: f.name)
def test_every_fixture_assembles_to_its_generated_text(fx: Fixture) -> None:
    s = cv.summarize(fx.body, fx.content_type)
    assert s is not None
    assert s.output_text() == fx.output_text
    framing = {"text/event-stream": "sse", "application/x-ndjson": "ndjson"}
    assert s.framing == framing.get(fx.content_type, "json")
    assert s.unparsed == 0 and s.cut is None
    assert bool(s.errors) == fx.upstream_error
    text = cv.render(s)
    for part in (p for c in s.choices.values() for p in c.parts):
        if part.kind == "tool":  # arguments are shown pretty-printed
            assert json.dumps(json.loads(part.content), indent=2) in text
        else:
            assert part.content in text
    # Far fewer lines than frames are what makes a stream readable.
    assert s.frames >= 1 and f"{s.frames} frame" in text


@pytest.mark.parametrize("fx", [f for f in ALL if f.usage["prompt_tokens"] is not None],
                         ids=lambda f: f.name)
def test_usage_shown_is_the_last_the_upstream_reported(fx: Fixture) -> None:
    s = cv.summarize(fx.body, fx.content_type)
    assert s is not None
    u = s.usage
    # Each API's own names, normalised here the way the contract counts them (§3).
    prompt_keys, completion_keys = {
        "anthropic": (("input_tokens", "cache_creation_input_tokens",
                       "cache_read_input_tokens"), ("output_tokens",)),
        "responses": (("input_tokens",), ("output_tokens",)),
        "gemini": (("promptTokenCount", "toolUsePromptTokenCount"),
                   ("candidatesTokenCount", "thoughtsTokenCount")),
        "ollama": (("prompt_eval_count",), ("eval_count",)),
    }.get(fx.family, (("prompt_tokens",), ("completion_tokens",)))
    assert sum(u.get(k) or 0 for k in prompt_keys) == fx.usage["prompt_tokens"]
    if fx.usage["completion_tokens"] is not None:
        assert sum(u.get(k) or 0 for k in completion_keys) == fx.usage["completion_tokens"]
    assert f"usage: {prompt_keys[0]}=" in cv.render(s) or f" {prompt_keys[0]}=" in cv.render(s)


def test_streamed_tool_call_is_assembled_with_name_id_and_arguments() -> None:
    s = cv.summarize(FIXTURES["openai_chat_stream_tools"].body, "text/event-stream")
    assert s is not None
    (part,) = s.choices[0].parts
    assert (part.kind, part.name, part.call_id) == ("tool", "get_weather", "call_x1")
    assert json.loads(part.content) == {"location": "Paris, France"}
    text = cv.render(s)
    assert "finish: tool_calls" in text
    assert "── tool call get_weather (call_x1) ──" in text
    assert '"location": "Paris, France"' in text  # pretty-printed arguments
    assert "data:" not in text and "chat.completion.chunk" not in text


def test_anthropic_thinking_tool_use_and_cumulative_usage() -> None:
    s = cv.summarize(FIXTURES["anthropic_messages_stream_cache"].body, "text/event-stream")
    assert s is not None
    kinds = [(p.kind, p.name) for p in s.choices[0].parts]
    assert kinds == [("reasoning", ""), ("tool", "get_weather")]
    assert s.choices[0].finish == "tool_use"
    assert s.usage["output_tokens"] == 89  # the last cumulative message_delta, not a sum
    assert s.usage["cache_read_input_tokens"] == 4096  # message_start's, kept
    text = cv.render(s)
    assert "── reasoning ──" in text and "cache_creation: ephemeral_5m_input_tokens=2048" in text


def test_errors_inside_a_200_stream_are_shown() -> None:
    s = cv.summarize(FIXTURES["anthropic_messages_stream_error"].body, "text/event-stream")
    assert s is not None and s.errors == ["overloaded_error: Overloaded"]
    assert "error: overloaded_error: Overloaded" in cv.render(s)


@pytest.mark.parametrize(
    ("body", "content_type", "api", "text", "finish", "usage"),
    [
        (GEMINI_SSE, "text/event-stream", "gemini", "Certainly!", "STOP",
         {"candidatesTokenCount": 191}),
        (GEMINI_ARRAY, "application/json", "gemini", 'Hello{"x": 1}', "STOP",
         {"candidatesTokenCount": 2}),
        (OLLAMA, "application/x-ndjson", "ollama", "Hello", "stop", {"eval_count": 18}),
        (OLLAMA, "application/json", "ollama", "Hello", "stop", {"prompt_eval_count": 11}),
        (RESPONSES_SSE, "text/event-stream", "openai responses", 'Hi{"q":2}',
         "incomplete: max_output_tokens", {"output_tokens": 4096}),
        (RESPONSES_JSON, "application/json", "openai responses", "Think.Done.", "completed",
         {"input_tokens": 9}),
    ],
    ids=["gemini-sse", "gemini-array", "ollama-ndjson", "ollama-as-json", "responses-sse",
         "responses-json"],
)
def test_other_apis(body, content_type, api, text, finish, usage) -> None:
    s = cv.summarize(body, content_type)
    assert s is not None
    assert s.api == api
    assert s.output_text() == text
    assert [c.finish for c in s.choices.values()] == [finish]
    assert usage.items() <= s.usage.items()
    assert s.unparsed == 0


def test_responses_tool_call_keeps_its_name_and_call_id() -> None:
    s = cv.summarize(RESPONSES_SSE, "text/event-stream")
    assert s is not None and s.model == "gpt-5.2-codex"
    tool = next(p for p in s.choices[0].parts if p.kind == "tool")
    assert (tool.name, tool.call_id, tool.content) == ("lookup", "call_9", '{"q":2}')


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b'{"hello": "world"}', "application/json"),
        (b"<html><body>hi</body></html>", "text/html"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
         "application/json"),  # an LLM *request* body
        (b"data: not json\n\n", "text/event-stream"),
        (b'[1, 2, {"a": 3}]', "application/json"),
        (b"\xff\xfe binary", ""),
    ],
)
def test_other_bodies_are_not_claimed(body: bytes, content_type: str) -> None:
    assert cv.summarize(body, content_type) is None
    assert cv.priority(body, content_type, None) < 0


_KEYS = st.sampled_from(["type", "choices", "delta", "message", "content", "index", "id",
                         "tool_calls", "function", "arguments", "name", "usage", "candidates",
                         "parts", "done", "response", "item", "item_id", "output", "object",
                         "error", "text", "content_block", "finish_reason", "model"])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.sampled_from(["message_start", "content_block_start", "content_block_delta",
                       "message_delta", "response.output_item.added", "tool_use",
                       "response.function_call_arguments.delta", "response.completed",
                       "input_json_delta", "text_delta", "function_call", "response", "list"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_VALUES, max_size=6), sse=st.booleans())
def test_any_json_frames_never_break_the_view(frames: list, sse: bool) -> None:
    """Whatever shape an upstream (or a client faking one) sends, the view answers or
    declines; it never raises into mitmweb."""
    if sse:
        body = b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames)
    else:
        body = json.dumps(frames[0] if len(frames) == 1 else frames).encode()
    s = cv.summarize(body, "text/event-stream" if sse else "application/json")
    if s is not None:
        assert cv.render(s).startswith(s.api)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_never_break_the_view(body: bytes) -> None:
    for ct in ("text/event-stream", "application/json", "application/x-ndjson", ""):
        s = cv.summarize(body + cv.CUT_MARKER, ct)
        if s is not None:
            cv.render(s)


def test_priority_beats_json_for_llm_responses_and_never_claims_requests() -> None:
    body = FIXTURES["openai_chat"].body
    assert cv.priority(body, "application/json", None) == cv.PRIORITY > 1  # JSON view: 1
    req = http.Request.make("POST", "http://x/v1/chat/completions", body)
    assert cv.priority(body, "application/json", req) < 0


def test_a_bare_error_body_is_claimed_only_on_seatbelt_flows() -> None:
    body = b'{"error": {"message": "no", "type": "insufficient_quota"}}'
    f = tflow.tflow(resp=True)
    assert cv.priority(body, "application/json", f.response, f) < 0  # any API's error
    f.comment = "seatbelt: refused insufficient_quota key=k account=a reserved=9"
    assert cv.priority(body, "application/json", f.response, f) == cv.PRIORITY
    s = cv.summarize(body, "application/json")
    assert s is not None and "error: insufficient_quota: no" in cv.render(s)


# ----------------------------------------------------------------- the kept (cut) copy


def test_cut_copy_carries_a_marker_and_still_renders() -> None:
    fx = FIXTURES["openai_chat_stream_tools"]
    sc = scanner_for(fx, keep_limit=1000)
    feed(sc, fx.body)
    assert sc.kept_truncated
    shown = cv.shown_body(sc.kept_body, truncated=True, received=sc.bytes_in,
                          content_encoding="")
    assert shown.startswith(fx.body[:1000])
    marker = f"first 1000 bytes of a streamed body; the upstream sent {len(fx.body)} bytes"
    assert marker.encode() in shown
    s = cv.summarize(shown, "text/event-stream")
    assert s is not None and s.cut is not None and marker in s.cut
    assert s.unparsed == 0  # the frame the cut went through is expected to be partial
    assert fx.output_text.startswith(s.output_text()) and s.output_text()
    assert marker in cv.render(s)


# ----------------------------------------------------------------- through mitmproxy itself


def llm_flow(fx: Fixture, body: bytes | None = None) -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request.method = "POST"
    f.request.path = fx.path
    f.response.headers["content-type"] = fx.content_type
    f.response.raw_content = fx.body if body is None else body
    f.comment = "seatbelt: key=alice account=team reserved=4120 spent=19+238 (reported)"
    return f


def shown(f: http.HTTPFlow, message: http.Message) -> tuple[str, str]:
    """(what mitmproxy calls the chosen view, its text) on mitmproxy 12 or 11."""
    cv.register()
    if hasattr(contentviews, "prettify_message"):  # mitmproxy 12
        with taddons.context():
            result = contentviews.prettify_message(message, f)
        return result.view_name or "", result.text
    desc, lines, _ = contentviews.get_message_content_view("auto", message, f)
    return desc, "\n".join("".join(text for _, text in line) for line in lines)


@pytest.mark.parametrize("fx", [FIXTURES["openai_chat_stream_tools"],
                                FIXTURES["anthropic_messages"]], ids=lambda f: f.name)
def test_mitmproxy_auto_selects_the_view_for_llm_responses(fx: Fixture) -> None:
    f = llm_flow(fx)
    name, text = shown(f, f.response)
    assert name == cv.VIEW_NAME or name.startswith(cv.headline(cv.summarize(fx.body,
                                                                             fx.content_type)))
    assert "seatbelt: key=alice account=team" in text  # the flow's budget, on top
    assert ("get_weather" if "tools" in fx.name else "Hi!") in text
    assert '"choices"' not in text and "content_block" not in text


def test_mitmproxy_keeps_its_own_views_for_other_bodies() -> None:
    f = llm_flow(FIXTURES["openai_chat"], body=b'{"hello": "world"}')
    name, text = shown(f, f.response)
    assert name != cv.VIEW_NAME and "hello" in text
    name, _ = shown(f, f.request)  # the request body of an LLM call is plain JSON
    assert name != cv.VIEW_NAME


def test_register_is_idempotent_across_script_reloads() -> None:
    cv.register()
    cv.register()  # mitmproxy 11 raises on a duplicate name: must not be reached
    if hasattr(contentviews, "registry"):
        assert contentviews.registry[cv.VIEW_NAME] is cv.VIEW
    else:
        assert [v for v in contentviews.views if v.name == cv.VIEW_NAME] == [cv.VIEW]


# ----------------------------------------------------------------- the flow as mitmweb keeps it

POLICY = """\
version: 1
keys:
  - id: alice
    account: team
    credential_sha256: {alice}
    cap: 100000
  - id: poor
    account: team
    credential_sha256: {poor}
    cap: 10
"""


def save_and_reload(flows: list[http.HTTPFlow]) -> list[http.HTTPFlow]:
    """What `mitmdump -w FILE` writes and mitmweb / FlowReader read back."""
    buf = io.BytesIO()
    writer = mitmio.FlowWriter(buf)
    for f in flows:
        writer.add(f)
    buf.seek(0)
    return list(mitmio.FlowReader(buf).stream())


def test_flows_carry_budget_comment_mark_and_kept_body_through_save(monkeypatch, tmp_path):
    import seatbelt.addon as entry
    from seatbelt.config.policy import fingerprint
    from seatbelt.runtime import Runtime

    monkeypatch.setattr(entry, "RUNTIME", Runtime())
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(alice=fingerprint("sk-alice"), poor=fingerprint("sk-poor")))
    fx = FIXTURES["openai_chat_stream_tools"]

    def request(key: str) -> http.HTTPFlow:
        f = tflow.tflow()
        f.request.method, f.request.path = "POST", fx.path
        f.request.headers["authorization"] = f"Bearer {key}"
        f.request.set_content(json.dumps({**fx.request, "max_tokens": 50}).encode())
        f.response = None
        return f

    sent: list[bytes | list] = []  # what the stream callable passed on to the client

    async def go() -> list[http.HTTPFlow]:
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            tctx.configure(sb, seatbelt_policy=str(policy), seatbelt_ledger="memory://",
                           seatbelt_metrics="", seatbelt_audit="")
            while not entry.RUNTIME.ready():
                await asyncio.sleep(0.01)
            served = request("sk-alice")
            await sb.request(served)
            served.response = tflow.tresp(headers=http.Headers(
                content_type="text/event-stream"), content=None)
            sb.responseheaders(served)
            stream = served.response.stream
            for i in range(0, len(fx.body), 100):
                sent.append(stream(fx.body[i:i + 100]))
            sent.append(stream(b""))
            await sb.response(served)
            refused = request("sk-poor")
            await sb.request(refused)
            await sb.response(refused)
            return [served, refused]

    served, refused = save_and_reload(asyncio.run(go()))
    assert served.comment.startswith("alice 81+17 · seatbelt: key=alice account=team reserved=")
    assert served.comment.endswith(" spent=81+17 (reported) edits=usage_requested")
    assert not served.marked
    client_got = b"".join(x for x in sent if isinstance(x, bytes))
    assert served.response.raw_content == client_got  # the kept copy
    assert b'"usage":{' not in client_got  # the usage frame seatbelt asked for was hidden
    assert refused.comment == "insufficient_quota poor · seatbelt: refused insufficient_quota "\
        f"key=poor account=team reserved={refused.comment.split('reserved=')[1]}"
    assert int(refused.comment.split("reserved=")[1]) > 10
    assert refused.marked == ":no_entry:" and refused.response.status_code == 429
    for f in (served, refused):  # no credential survives in the saved file
        assert "sk-" not in f.request.headers.get("authorization", "")
    name, text = shown(served, served.response)
    assert "── tool call get_weather (call_x1) ──" in text


def test_long_lines_wrap_in_the_views_and_lose_no_word() -> None:
    words = [f"w{i}" for i in range(200)] + ["x" * 250]
    body = json.dumps({"id": "c", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "  " + " ".join(words)},
         "finish_reason": "stop"}]}).encode()
    s = cv.summarize(body, "application/json")
    assert s is not None
    assert max(len(t) for _, t in cv.render_lines(s)) > cv.WRAP_WIDTH  # render() as it was
    lines = [t for _, t in cv.render_lines(s, width=cv.WRAP_WIDTH)]
    assert max(len(t) for t in lines) <= cv.WRAP_WIDTH
    start = next(i for i, t in enumerate(lines) if t.startswith("  w0 "))
    assert all(t.startswith("    ") for t in lines[start + 1:])
    assert "".join(" ".join(lines[start:]).split()) == "".join(words)
    shown = cv.VIEW.prettify(body, contentviews.Metadata(content_type="application/json")) \
        if hasattr(contentviews, "Contentview") else None
    if shown is not None:
        assert max(len(t) for t in shown.splitlines()) <= cv.WRAP_WIDTH


def test_the_view_reads_a_frame_through_its_family_assemble(monkeypatch) -> None:
    """Assembly is behind the family interface: a family the view has never heard of brings
    its own reading (seatbelt/apis/base.py `assemble`)."""
    from seatbelt import apis
    from seatbelt.apis.assembly import Assembly
    from seatbelt.apis.openai import OpenAI

    class Toy(OpenAI):
        def assemble(self, a: Assembly, obj: dict) -> bool:
            if "toy_text" not in obj:
                return False
            a.api("toy")
            a.s.choice(0).add("text", obj["toy_text"])
            return True

    monkeypatch.setattr(apis, "FAMILIES", (Toy(), *apis.FAMILIES))
    s = cv.summarize(b'{"toy_text": "hello from a toy"}', "application/json")
    assert s is not None and (s.api, s.output_text()) == ("toy", "hello from a toy")


def test_usage_lines_of_a_deeply_nested_object_are_iterative():
    from seatbelt.ui.contentview import _flat

    assert _flat({"a": 1, "b": {"c": 2, "d": {"e": 3}}, "f": [1], "g": 4}) == [
        "a=1", "b.c=2", "b.d.e=3", "g=4"]
    deep: dict = {"x": 1}
    for _ in range(50_000):
        deep = {"k": deep}
    assert _flat(deep) == ["k." * 50_000 + "x=1"]
