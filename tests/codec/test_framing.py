"""The one framing module (seatbelt/codec/framing.py): frame cutting, SSE payloads and the
error reading shared by the scanner (audit log) and the content view (mitmweb)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seatbelt.apis import route_request
from seatbelt.codec import framing
from seatbelt.metering.scanner import Scanner
from seatbelt.ui import contentview as cv
from tests.wire import FIXTURES


def test_sse_events_cut_on_lf_and_crlf_blank_lines_and_keep_an_unterminated_tail() -> None:
    body = b"data: 1\n\ndata: 2\r\n\r\n: ping\n\ndata: 3"
    assert framing.sse_events(body) == [b"data: 1\n\n", b"data: 2\r\n\r\n", b": ping\n\n",
                                         b"data: 3"]
    assert framing.sse_last_end(body) == len(body) - len(b"data: 3")
    assert framing.sse_frame_start(body, body.index(b"2")) == body.index(b"data: 2")


@pytest.mark.parametrize("buf,lone_cr", [
    (b"data: 1\r\rdata: 2", True), (b"data: 1\r\n\r\n", False), (b"data: 1\n\n", False),
    (b"data: 1\n\r", False), (b"data: 1\r", None), (b"data: 1", None), (b"", None)])
def test_a_stream_in_lone_crs_is_told_by_its_first_line_end(
        buf: bytes, lone_cr: bool | None) -> None:
    assert framing.sse_lone_cr(buf) is lone_cr


def test_sse_events_of_a_body_in_lone_crs_are_its_events_with_lfs() -> None:
    body = b"data: 1\r\r: ping\r\revent: x\rdata: 2\r\rdata: 3"
    assert framing.sse_events(body) == [b"data: 1\n\n", b": ping\n\n", b"event: x\ndata: 2\n\n",
                                         b"data: 3"]
    assert [framing.sse_payload(e) for e in framing.sse_events(body)][2] == (b"2", None)


def test_sse_payload_joins_data_lines_and_reads_the_error_field() -> None:
    assert framing.sse_payload(b"event: x\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n") == (
        b'{"a":\n1}', None)
    assert framing.sse_payload(b"data: [DONE]\n\n") == (None, None)
    assert framing.sse_payload(b"error: boom\n\n") == (None, "boom")
    assert framing.sse_payload(b": comment\n\n") == (None, None)


def test_array_elements_keeps_only_complete_elements() -> None:
    body = b'[{"a": "}\\"}"}, {"b": [2]}, {"c": '
    assert framing.array_elements(body) == [b'{"a": "}\\"}"}', b'{"b": [2]}']


@given(st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
                max_size=4), st.lists(st.integers(1, 40), max_size=8))
def test_the_array_splitter_cuts_pieces_as_it_cuts_the_whole(
    elements: list[dict[str, str]], cuts: list[int]
) -> None:
    """Incremental: fed in any pieces, the same elements come out (the scanner feeds pieces,
    the content view a whole body)."""
    body = json.dumps(elements).encode()
    split, got, buf, at = framing.ArraySplitter(), [], b"", 0
    for size in [*cuts, len(body)]:
        piece, at = body[at:at + size], at + size
        spans, open_at = split.feed(piece)
        for a, b in spans:
            got.append(buf + piece[a:b])
            buf = b""
        buf = buf + piece[open_at:] if open_at is not None else b""
    assert [json.loads(e) for e in got] == elements
    assert framing.array_elements(body) == [json.dumps(e).encode() for e in elements]


def test_error_text_is_kind_then_message_and_bounded() -> None:
    # the string code is the most specific (context_length_exceeded beside a generic type)
    assert framing.error_of({"error": {"type": "t", "code": "c", "message": "m"}}) == "c: m"
    assert framing.error_of({"error": {"type": "t", "code": 429, "message": "m"}}) == "t: m"
    assert framing.error_of({"error": {"status": "s", "message": "m"}}) == "s: m"
    assert framing.error_of({"type": "error", "code": "c", "message": "m"}) == "c: m"
    assert framing.error_of({"error": "x" * 500}) == "x" * framing.ERROR_TEXT_MAX
    assert framing.error_of({"error": None, "choices": []}) is None


# Error bodies whose reading drifted between the audit log and mitmweb before the two
# shared this module: (path, content type, body).
ERROR_BODIES = [
    # OpenAI-style with both `type` and `code`: the view used to show the code.
    ("/v1/chat/completions", "text/event-stream",
     b'data: {"error": {"message": "Rate limited", "type": "requests", "code": "429"}}\n\n'),
    # llama.cpp's SSE `error:` field: the view used to show it uncut.
    ("/v1/chat/completions", "text/event-stream",
     b"data: {\"choices\": [{\"delta\": {\"content\": \"Hi\"}}]}\n\nerror: " + b"e" * 300
     + b"\n\n"),
    ("/api/chat", "application/x-ndjson", b'{"error": "model requires more memory"}\n'),
    ("/v1/responses", "text/event-stream",
     b'data: {"type": "error", "code": "server_error", "message": "down"}\n\n'
     b'data: {"type": "response.failed", "response": {"error": '
     b'{"code": "server_error", "message": "down"}}}\n\n'),
]
ERROR_BODIES += [(fx.path, fx.content_type, fx.body) for fx in FIXTURES.values()
                 if fx.upstream_error]


@pytest.mark.parametrize("path,content_type,body", ERROR_BODIES)
def test_an_upstream_error_reads_the_same_in_the_audit_log_and_in_the_content_view(
    path: str, content_type: str, body: bytes
) -> None:
    route = route_request("POST", path, {})
    assert route is not None
    facts = route.family.parse_request(route, {"model": "m", "stream": True})
    sc = Scanner(route.family, route, facts, content_type=content_type, content_encoding="",
                 hide_injected_usage=False)
    for i in range(0, len(body), 7):
        sc(body[i:i + 7])
    sc(b"")
    s = cv.summarize(body, content_type)
    assert sc.upstream_error is not None and s is not None
    assert s.errors[0] == sc.upstream_error
    assert f"error: {sc.upstream_error}" in cv.render(s)
