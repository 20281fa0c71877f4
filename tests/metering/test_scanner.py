"""The response scanner (and the decoding it relies on): every fixture, every split, every
content coding, hiding the injected usage frame, broken streams, absurd values, memory."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy.http import Headers

from seatbelt.apis import route_request
from seatbelt.apis.base import Framing, Route
from seatbelt.apis.openai import OpenAI
from seatbelt.metering.scanner import READ_WHOLE_LIMIT, Scanner, read_whole
from tests.codec.test_decoding import encode, header
from tests.wire import FIXTURES, Fixture

ALL = list(FIXTURES.values())
SSE = [f for f in ALL if f.content_type == "text/event-stream"]
INJECTED = [f for f in ALL if f.injected_frames]


def make(fx: Fixture, *, coding: str = "", hide: bool = False, clock=None, **kw) -> Scanner:
    r = route_request("POST", fx.path, {})
    assert r is not None
    facts = r.family.parse_request(r, dict(fx.request))
    extra = {"clock": clock} if clock else {}
    return Scanner(r.family, r, facts, content_type=fx.content_type,
                   content_encoding=header(coding), hide_injected_usage=hide, **extra, **kw)


def feed(sc: Scanner, body: bytes, cuts: list[int]) -> bytes:
    """Feed body cut at the given offsets; return what the client got. Checks the
    stream-callable contract on the way: bytes or a list, never b"" mid-stream."""
    out = bytearray()
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(body))), len(body)]
    for a, b in zip(edges, edges[1:]):
        if a == b:
            continue  # an empty body: only the end call
        got = sc(body[a:b])
        assert got != b"", "b'' mid-stream would end the client's body"
        out += got if isinstance(got, bytes) else b"".join(got)
    end = sc(b"")
    assert isinstance(end, bytes)
    out += end
    return bytes(out)


def result(sc: Scanner) -> tuple:
    return (dataclasses.asdict(sc.usage), sc.output_chars, sc.output_seen,
            sc.upstream_error is not None, sc.usage_invalid, sc.scan_error, sc.decode_error)


def test_usage_read_before_a_compressed_stream_was_cut_counts():
    """A gzip stream cut mid-way is judged like an uncompressed one cut at the same point:
    what was decoded stands (a client that closes right after [DONE] leaves the gzip
    trailer unread, and its usage must still count as reported)."""
    fx = FIXTURES["openai_chat_stream_vllm"]
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # a streaming server flushes every frame
    body = b"".join(c.compress(ev) + c.flush(zlib.Z_SYNC_FLUSH)
                    for ev in re.split(rb"(?<=\n\n)", fx.body)) + c.flush()
    sc = make(fx, coding="gzip")
    feed(sc, body[: len(body) * 2 // 3], [])  # the upstream went away mid-stream
    assert sc.usage.prompt_tokens == 12
    assert sc.usage_invalid is None and sc.decode_truncated


def expected(fx: Fixture) -> tuple:
    return (fx.usage, len(fx.output_text), bool(fx.output_text), fx.upstream_error,
            None, None, None)


# -- every fixture ---------------------------------------------------------------------


@pytest.mark.parametrize("fx", ALL, ids=lambda f: f.name)
def test_every_fixture_whole_and_byte_by_byte(fx):
    sc = make(fx)
    body = fx.body
    got = sc(body)
    assert got is body  # forwarded at once, unchanged: the same object
    assert sc(b"") == b""
    assert result(sc) == expected(fx)
    assert sc.ended and sc.bytes_in == len(body) and sc.kept_body == body
    sc = make(fx)
    assert feed(sc, body, list(range(len(body)))) == body
    assert result(sc) == expected(fx)


@pytest.mark.parametrize("fx", ALL, ids=lambda f: f.name)
def test_a_body_read_whole_reads_like_one_streamed(fx):
    sc = make(fx)
    sc.scan_whole(fx.body)
    assert result(sc) == expected(fx)
    assert sc.ended and sc.whole_seen and sc.bytes_in == len(fx.body)
    assert sc.kept_body == b""  # the flow holds the body itself: no second copy
    sc.scan_whole(fx.body)  # a second call (finish after an error) changes nothing
    assert sc.bytes_in == len(fx.body)


@pytest.mark.parametrize("framing,headers,streaming,whole", [
    ("json", {"content-length": "670"}, None, True),
    ("json", {"content-length": str(READ_WHOLE_LIMIT)}, None, True),
    ("json", {"content-length": str(READ_WHOLE_LIMIT + 1)}, None, False),  # big: streamed
    ("json", {}, None, False),  # no length: could be anything, streamed
    ("json", {"content-length": "670", "transfer-encoding": "chunked"}, None, False),
    ("json", {"content-length": " 670"}, None, False),  # not a plain number
    ("json", {"content-length": "-1"}, None, False),
    ("json", {"content-length": "9" * 40}, None, False),
    ("json", {"content-length": "670"}, True, False),  # another addon streams it
    ("sse", {"content-length": "670"}, None, False),  # streams are always streamed
    ("ndjson", {"content-length": "670"}, None, False),
    ("json-array", {"content-length": "670"}, None, False),
])
def test_only_small_json_documents_of_known_length_are_read_whole(framing, headers, streaming,
                                                                  whole):
    fields = [(k.encode(), v.encode()) for k, v in headers.items()]
    assert read_whole(framing, Headers(fields), streaming) is whole
    shouted = [(k.upper(), v) for k, v in fields]  # names in any case, as mitmproxy reads them
    assert read_whole(framing, Headers(shouted), streaming) is whole


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_split_gives_the_same_result(data):
    fx = data.draw(st.sampled_from(ALL))
    coding = data.draw(st.sampled_from(["", "gzip", "deflate", "deflate-raw", "br", "zstd",
                                        "gzip, br"]))
    body = encode(fx.body, coding)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    sc = make(fx, coding=coding)
    assert feed(sc, body, cuts) == body
    assert result(sc) == expected(fx)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate-raw", "br", "zstd", "gzip, br"])
@pytest.mark.parametrize("fx", ALL, ids=lambda f: f.name)
def test_compressed_one_byte_per_chunk(fx, coding):
    body = encode(fx.body, coding)
    sc = make(fx, coding=coding)
    assert feed(sc, body, list(range(len(body)))) == body
    assert result(sc) == expected(fx)


def test_split_inside_a_multibyte_character_and_inside_a_number():
    fx = FIXTURES["openai_chat_stream_unicode"]
    body = fx.body
    cuts = [body.index("世".encode()) + 1, body.index("🎉".encode()) + 2,
            body.index(b'"prompt_tokens":1130') + 18]
    sc = make(fx)
    assert feed(sc, body, cuts) == body
    assert result(sc) == expected(fx)


@pytest.mark.parametrize("fx", SSE, ids=lambda f: f.name)
def test_crlf_lf_and_cr_line_endings_read_the_same(fx):
    """The SSE spec ends a line with CRLF, LF or a lone CR (the SDKs' decoders take all
    three): a stream in any of them is framed, metered and passed through alike."""
    body = fx.body.replace(b"\r\n", b"\n")
    for variant in (body, body.replace(b"\n", b"\r\n"), body.replace(b"\n", b"\r")):
        sc = make(fx)
        assert feed(sc, variant, list(range(0, len(variant), 5))) == variant
        assert result(sc) == expected(fx)


# -- hiding the injected usage frame -------------------------------------------------------


def without_injected(fx: Fixture, body: bytes | None = None) -> bytes:
    """Reference: the body (fx's own by default) with the usage-only frames removed, all
    else byte-identical."""
    events = re.split(rb"(?<=\n\n)", fx.body if body is None else body)
    keep = []
    for ev in events:
        data = b"".join(line[5:] for line in ev.split(b"\n") if line.startswith(b"data:"))
        if data.strip() and data.strip() != b"[DONE]":
            obj = json.loads(data)
            if obj.get("usage") is not None and not obj.get("choices"):
                continue
        keep.append(ev)
    return b"".join(keep)


@pytest.mark.parametrize("fx", INJECTED, ids=lambda f: f.name)
def test_hiding_removes_exactly_the_injected_frame(fx):
    want = without_injected(fx)
    assert len(want) < len(fx.body)
    for cuts in ([], list(range(len(fx.body))), list(range(0, len(fx.body), 13))):
        sc = make(fx, hide=True)
        assert feed(sc, fx.body, cuts) == want
        assert result(sc) == expected(fx)  # the hidden frame was still metered
        assert sc.kept_body == want  # what the client got


@pytest.mark.parametrize("fx", INJECTED, ids=lambda f: f.name)
def test_hiding_in_a_stream_in_lone_crs_removes_exactly_the_injected_frame(fx):
    """Read with LFs for its CRs (the same length), the stream's own bytes are cut."""
    lf = fx.body.replace(b"\r\n", b"\n")
    cr = lf.replace(b"\n", b"\r")
    want = without_injected(fx, lf).replace(b"\n", b"\r")
    for cuts in ([], list(range(0, len(cr), 7))):
        sc = make(fx, hide=True)
        assert feed(sc, cr, cuts) == want
        assert result(sc) == expected(fx)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_hiding_with_any_split(data):
    fx = data.draw(st.sampled_from(INJECTED))
    cuts = data.draw(st.lists(st.integers(0, len(fx.body)), max_size=10))
    sc = make(fx, hide=True)
    assert feed(sc, fx.body, cuts) == without_injected(fx)
    assert result(sc) == expected(fx)


def test_hiding_holds_back_only_an_incomplete_frame():
    fx = FIXTURES["openai_chat_stream"]
    body = fx.body
    first_end = body.index(b"\n\n") + 2
    sc = make(fx, hide=True)
    assert sc(body[: first_end + 10]) == body[:first_end]  # the partial 2nd frame waits
    assert sc(body[first_end + 10 : first_end + 11]) == []  # nothing complete: emit nothing
    rest = sc(body[first_end + 11 :])
    assert body[:first_end] + rest + sc(b"") == without_injected(fx)


def test_frames_that_are_not_injected_pass_even_when_hiding():
    fx = FIXTURES["openai_chat_stream_no_usage"]
    sc = make(fx, hide=True)
    assert feed(sc, fx.body, [7, 300, 301]) == fx.body
    # Azure's first chunk has empty choices too, but no usage: it reaches the client
    fx = FIXTURES["openai_chat_stream_azure"]
    sc = make(fx, hide=True)
    got = feed(sc, fx.body, [7, 300, 301])
    assert got == without_injected(fx)
    assert got.startswith(b'data: {"choices":[],"created":0,') and b"prompt_filter_results" in got


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_a_compressed_stream_is_never_edited(coding):
    fx = FIXTURES["openai_chat_stream"]
    body = encode(fx.body, coding)
    sc = make(fx, hide=True, coding=coding)
    chunk = body[:20]
    assert sc(chunk) is chunk
    assert feed(sc, body[20:], [5]) == body[20:]
    assert result(sc) == expected(fx)


def test_a_long_frame_is_not_held_back_while_hiding():
    fx = FIXTURES["openai_chat_stream"]
    big = b'data: {"choices":[{"delta":{"content":"' + b"x" * 200_000 + b'"}}]}\n\n'
    sc = make(fx, hide=True)
    released = sc(big[:150_000])
    assert released == big[:150_000]  # too long to be a usage-only frame
    assert feed(sc, big[150_000:] + fx.body, [3]) == big[150_000:] + without_injected(fx)
    assert sc.output_chars == 200_000 + 2


def test_a_long_usage_only_frame_is_never_cut_once_partly_sent():
    fx = FIXTURES["openai_chat_stream"]
    odd = (b'data: {"choices":[],"pad":"' + b"p" * 100_000
           + b'","usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n')
    body = fx.body + odd
    sc = make(fx, hide=True)
    got = feed(sc, body, [len(fx.body) + 80_000])
    assert got == without_injected(fx) + odd
    assert (sc.usage.prompt_tokens, sc.usage.completion_tokens) == (1, 2)


# -- first output, errors, truncation ---------------------------------------------------


def test_first_output_time_is_the_first_frame_with_text():
    fx = FIXTURES["openai_chat_stream"]
    ticks = iter(range(100, 200))
    sc = make(fx, clock=lambda: next(ticks))
    body = fx.body
    first_end = body.index(b"\n\n") + 2  # role chunk with "content":"" is not output
    sc(body[:first_end])
    assert not sc.output_seen and sc.first_output_at is None
    sc(body[first_end:])
    assert sc.output_seen and sc.first_output_at == 100


def test_tool_call_arguments_are_output():
    fx = FIXTURES["openai_chat_stream_tools"]
    sc = make(fx)
    sc(fx.body)
    sc(b"")
    assert sc.output_seen and sc.output_chars == len('{"location":"Paris, France"}')


@pytest.mark.parametrize("name", ["openai_chat_stream_error", "anthropic_messages_stream_error"])
def test_mid_stream_error_is_reported(name):
    fx = FIXTURES[name]
    sc = make(fx)
    feed(sc, fx.body, [50])
    assert sc.upstream_error and ("server_error" in sc.upstream_error
                                  or "overloaded_error" in sc.upstream_error)
    assert sc.output_seen


def test_llama_cpp_error_field_and_ndjson_style_error():
    fx = FIXTURES["openai_chat_stream_no_usage"]
    body = fx.body + b'error: {"code":400,"message":"context too long","type":"x"}\n\n'
    sc = make(fx)
    feed(sc, body, [len(body) - 9])
    assert "context too long" in sc.upstream_error


def reference_usage(fx: Fixture, body: bytes) -> dict:
    """Usage a slow, independent parse of whatever whole events body holds gives."""
    r = route_request("POST", fx.path, {})
    reader = r.family.new_usage_reader(r)
    for event in re.split(rb"\r?\n\r?\n", body):
        data = b"\n".join(line[5:].lstrip(b" ") for line in re.split(rb"\r?\n", event)
                          if line.startswith(b"data:"))
        try:
            reader.feed(json.loads(data))
        except ValueError:
            pass
    return dataclasses.asdict(reader.usage)


@pytest.mark.parametrize("fx", SSE, ids=lambda f: f.name)
def test_truncated_stream_never_crashes(fx):
    body = fx.body
    for cut in range(0, len(body), max(1, len(body) // 23)):
        sc = make(fx)
        assert feed(sc, body[:cut], [cut // 2]) == body[:cut]
        assert sc.ended and sc.scan_error is None
        assert dataclasses.asdict(sc.usage) == reference_usage(fx, body[:cut])
        if fx.output_text and sc.output_seen:
            assert 0 < sc.output_chars <= len(fx.output_text)


def test_truncated_compressed_stream_is_noted_but_not_an_error():
    fx = FIXTURES["openai_chat_stream"]
    body = gzip.compress(fx.body)
    sc = make(fx, coding="gzip")
    assert feed(sc, body[:-12], []) == body[:-12]
    assert sc.decode_error is None and sc.decode_truncated


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "deflate", "compress"])
def test_corrupt_or_unknown_coding_is_flagged_and_forwarded(coding):
    fx = FIXTURES["openai_chat_stream"]
    junk = b"\x00\x01garbage that is not compressed at all" * 10
    sc = make(fx, coding=coding)
    assert feed(sc, junk, [3, 40]) == junk
    assert sc.decode_error is not None and sc.usage.prompt_tokens is None


def test_odd_sse_content_is_ignored():
    fx = FIXTURES["openai_chat_stream"]
    odd = (b": keep-alive comment\n\n"
           b"retry: 3000\nid: 7\nfoo: bar\n\n"
           b'data: {"usage": not json at all}\n\n'
           b"data: \xff\xfe\x00 binary\n\n"
           b'data: {"usage":{"prompt_tokens":\n\n'
           b"event: ping\n\n"
           b"data: [DONE]\n\n")
    sc = make(fx)
    body = odd + fx.body
    assert feed(sc, body, list(range(0, len(body), 3))) == body
    assert result(sc) == expected(fx)


def test_multiline_data_is_joined():
    fx = FIXTURES["openai_chat_stream"]
    body = b'data: {"choices":[],\ndata: "usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    sc = make(fx)
    feed(sc, body, [])
    assert (sc.usage.prompt_tokens, sc.usage.completion_tokens) == (3, 4)


@pytest.mark.parametrize("bad", [b"-5", b"1e30", b"12.5", b'"12"', b"true", b"9007199254740993",
                                 b"1" * 400, b"[1]"])
def test_absurd_usage_values_are_flagged_never_crash(bad):
    fx = FIXTURES["openai_chat_stream"]
    body = (b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":' + bad
            + b"}}\n\ndata: [DONE]\n\n")
    sc = make(fx)
    assert feed(sc, body, [40]) == body
    assert sc.usage.prompt_tokens == 7 and sc.usage.completion_tokens is None
    assert sc.usage_invalid and sc.scan_error is None


def test_deeply_nested_json_does_not_crash():
    fx = FIXTURES["openai_chat_stream"]
    body = b'data: {"usage":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n\n" + fx.body
    sc = make(fx)
    assert feed(sc, body, [10]) == body
    assert result(sc) == expected(fx)


def test_a_scanner_bug_never_touches_the_stream(monkeypatch):
    fx = FIXTURES["openai_chat_stream"]
    sc = make(fx)

    def boom(obj):
        raise RuntimeError("bug")

    monkeypatch.setattr(sc.reader, "feed", boom)
    assert feed(sc, fx.body, [10, 200]) == fx.body
    assert sc.scan_error and "bug" in sc.scan_error
    sc = make(fx, hide=True)
    monkeypatch.setattr(sc.reader, "feed", boom)
    assert feed(sc, fx.body, [10, 200]) == fx.body  # hiding stops, every byte goes out


def test_finish_is_idempotent_and_flushes():
    fx = FIXTURES["openai_chat_stream"]
    body = fx.body.rstrip(b"\n")  # no final blank line: the last frame ends at EOF
    body = body[: body.rindex(b"data: [DONE]")].rstrip(b"\n")
    sc = make(fx)
    sc(body)
    sc.finish()
    sc.finish()
    assert sc(b"") == b""
    assert dataclasses.asdict(sc.usage) == fx.usage


def test_kept_body_is_bounded():
    fx = FIXTURES["openai_chat_stream"]
    sc = make(fx, keep_limit=100)
    feed(sc, fx.body, [30, 60, 90, 120])
    assert sc.kept_body == fx.body[:100] and sc.kept_truncated
    sc = make(fx)
    feed(sc, fx.body, [30])
    assert sc.kept_body == fx.body and not sc.kept_truncated


# -- generic framings (future families) ------------------------------------------------


class FakeFamily(OpenAI):
    """A stand-in for Gemini / Ollama modules: only framing and markers differ."""

    def __init__(self, framing: Framing, markers: tuple[bytes, ...]) -> None:
        self._framing = framing
        self.usage_markers = markers

    def framing(self, route, facts, content_type):
        return self._framing


def fake_scanner(framing: Framing, markers=(b'"usage"',)) -> Scanner:
    fam = FakeFamily(framing, markers)
    r = Route(fam, "openai", "chat", "metered")
    return Scanner(fam, r, fam.parse_request(r, {}), content_type="application/json",
                   content_encoding="", hide_injected_usage=False)


ARRAY = (b'[{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}],'
         b'"usage":{"prompt_tokens":5,"completion_tokens":1}}\r\n,\r\n'
         b'{"candidates":[{"content":{"parts":[{"text":"lo \\"}{[ w\\\\"}],"role":"model"}}],'
         b'"usage":{"prompt_tokens":5,"completion_tokens":2}}\r\n]')


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, len(ARRAY)), max_size=10))
def test_json_array_framing(cuts):
    sc = fake_scanner("json-array")
    assert feed(sc, ARRAY, cuts) == ARRAY
    assert (sc.usage.prompt_tokens, sc.usage.completion_tokens) == (5, 2)
    assert sc.output_chars == len('Hello "}{[ w\\')


def test_json_array_error_element():
    sc = fake_scanner("json-array")
    body = b'[{\n  "error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}\n}]'
    feed(sc, body, [5])
    assert "RESOURCE_EXHAUSTED" in sc.upstream_error


NDJSON = (b'{"message":{"role":"assistant","content":"Hel"},"done":false}\n'
          b'{"message":{"role":"assistant","content":"lo"},"done":false}\n'
          b'{"message":{"content":""},"done":true,"usage":{"prompt_tokens":11,'
          b'"completion_tokens":18}}\n')


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, len(NDJSON)), max_size=8))
def test_ndjson_framing(cuts):
    sc = fake_scanner("ndjson")
    assert feed(sc, NDJSON, cuts) == NDJSON
    assert (sc.usage.prompt_tokens, sc.usage.completion_tokens, sc.output_chars) == (11, 18, 5)
    sc = fake_scanner("ndjson")
    feed(sc, NDJSON[:-1] + b'\n{"error":"model crashed"}', cuts)
    assert sc.upstream_error == "model crashed"


# -- bounded memory ----------------------------------------------------------------------


def frames(n_bytes: int, frame: bytes):
    block = frame * max(1, (64 << 10) // len(frame))
    for _ in range(n_bytes // len(block)):
        yield block


def test_memory_stays_bounded_on_a_100mb_stream():
    fx = FIXTURES["openai_chat_stream"]
    frame = (b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
             b'"delta":{"content":"filler text "}}],"usage":null}\n\n')
    sc = make(fx, hide=True)
    tracemalloc.start()
    try:
        n = 0
        for block in frames(100 << 20, frame):
            # split each block off-frame so the held-back tail is exercised too
            for part in (block[:1000], block[1000:]):
                out = sc(part)
                n += len(out) if isinstance(out, bytes) else sum(map(len, out))
        n += len(feed(sc, fx.body, [7]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, peak
    assert sc.usage.prompt_tokens == 19 and sc.output_chars > 8_000_000
    assert n > 100_000_000 and len(sc.kept_body) == 1 << 20 and sc.kept_truncated


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_memory_stays_bounded_on_a_huge_document_and_usage_is_found_in_its_tail(framing):
    fx = FIXTURES["openai_chat" if framing == "json" else "openai_chat_stream"]
    head = b'{"data":[' if framing == "json" else b'data: {"data":['
    item = b'{"embedding":[0.0023,-0.0091,0.5],"text":"abc"},' * 1000
    tail = (b'{"x":1}],"usage":{"prompt_tokens":123,"completion_tokens":4}}'
            + (b"\n\n" if framing == "sse" else b""))
    sc = make(fx)
    tracemalloc.start()
    try:
        sc(head)
        n_items = (12 << 20) // len(item)
        for _ in range(n_items):
            sc(item)
        sc(tail)
        sc(b"")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, peak
    assert (sc.usage.prompt_tokens, sc.usage.completion_tokens) == (123, 4)
    assert sc.output_chars == n_items * 1000 * len("abc")  # every "text" counted once


def test_gzip_bomb_is_stopped_in_bounded_memory():
    fx = FIXTURES["openai_chat"]
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = c.compress(b"") + b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(400))
    bomb += c.flush()  # 400 MiB of zeros in ~400 KB
    sc = make(fx, coding="gzip")
    tracemalloc.start()
    try:
        for i in range(0, len(bomb), 65536):
            sc(bomb[i : i + 65536])
        sc(b"")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert sc.decode_error and "cap" in sc.decode_error


def test_frame_hider_returns_complete_frames_minus_the_cut_ones_on_its_own():
    """The hiding half of the scanner, apart from scanning: told where frames are complete
    and which are injected, it holds only the incomplete tail and drops the cut frames."""
    from seatbelt.metering.scanner import HOLD_LIMIT, FrameHider

    h = FrameHider()
    h.hold(b"data: a\n\ndata: usage\n\ndata: b")
    assert h.holds(9)
    h.cut(9, 22)
    assert h.release(22) == b"data: a\n\n"  # the tail waits until its frame ends
    h.hold(b"\n\n")
    assert h.release(h.end) == b"data: b\n\n"
    h.hold(b"x" * (HOLD_LIMIT + 1))  # too long to be a usage-only frame: let through
    assert h.release(h.held_at) == b"x" * (HOLD_LIMIT + 1)
    assert h.release_all() == b""
