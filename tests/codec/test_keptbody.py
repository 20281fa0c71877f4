"""The body put back on a streamed flow (seatbelt/codec/keptbody.py): the kept copy, and a
marker where it was cut, readable even when the copy was compressed. How the content view
shows a cut copy is tests/ui/test_contentview.py."""

from __future__ import annotations

import gzip
import os
import zlib

from seatbelt.apis import route_request
from seatbelt.codec.keptbody import CUT_MARKER, cut_marker, shown_body
from seatbelt.metering.scanner import Scanner
from tests.wire import FIXTURES, Fixture


def scanner_for(fx: Fixture, *, keep_limit: int, coding: str = "") -> Scanner:
    route = route_request("POST", fx.path, {})
    assert route is not None
    facts = route.family.parse_request(route, dict(fx.request))
    return Scanner(route.family, route, facts, content_type=fx.content_type,
                   content_encoding=coding, hide_injected_usage=False, keep_limit=keep_limit)


def feed(sc: Scanner, body: bytes, step: int = 37) -> None:
    for i in range(0, len(body), step):
        assert sc(body[i:i + step]) == body[i:i + step]  # bytes pass through unchanged
    sc(b"")


def test_uncut_copy_is_returned_untouched() -> None:
    body = FIXTURES["openai_chat_stream"].body
    sc = scanner_for(FIXTURES["openai_chat_stream"], keep_limit=1 << 20)
    feed(sc, body)
    assert not sc.kept_truncated
    assert shown_body(sc.kept_body, truncated=False, received=sc.bytes_in,
                      content_encoding="") == body


def test_cut_gzip_copy_is_decoded_marked_and_encoded_again() -> None:
    fx = FIXTURES["openai_chat_stream_unicode"]
    wire = gzip.compress(fx.body)
    sc = scanner_for(fx, keep_limit=len(wire) // 2, coding="gzip")
    feed(sc, wire)
    assert sc.kept_truncated and sc.usage.prompt_tokens == 1130  # metering saw it all
    shown = shown_body(sc.kept_body, truncated=True, received=len(wire),
                       content_encoding="gzip")
    text = gzip.decompress(shown)  # the flow's Content-Encoding still holds
    assert text.split(CUT_MARKER)[0] and fx.body.startswith(text.split(CUT_MARKER)[0])
    assert CUT_MARKER in text and f"sent {len(wire)} bytes".encode() in text


def test_undecodable_cut_copy_is_kept_as_is() -> None:
    assert shown_body(b"not gzip at all", truncated=True, received=99,
                      content_encoding="gzip") == b"not gzip at all"


def test_a_cut_plain_copy_ends_with_the_marker_naming_both_sizes() -> None:
    shown = shown_body(b"data: {}\n\nda", truncated=True, received=5000,
                       content_encoding="identity")
    assert shown == b"data: {}\n\nda" + cut_marker(12, 5000)
    assert shown.endswith(b"the upstream sent 5000 bytes and the client got all of them]\n")
    assert cut_marker(1, 2).startswith(CUT_MARKER)


def test_a_cut_deflate_copy_keeps_its_encoding() -> None:
    text = b"data: " + os.urandom(4000).hex().encode() + b"\n\n"  # compresses ~2:1
    wire = zlib.compress(text)
    shown = shown_body(wire[: len(wire) // 2], truncated=True, received=len(wire),
                       content_encoding="deflate")
    plain = zlib.decompress(shown)
    kept, _, marker = plain.partition(CUT_MARKER)
    assert kept and text.startswith(kept) and b"the upstream sent" in marker


def test_a_compressed_copy_cut_before_any_text_shows_the_marker_alone() -> None:
    wire = gzip.compress(b"data: " + os.urandom(2000).hex().encode())
    shown = shown_body(wire[:10], truncated=True, received=len(wire), content_encoding="gzip")
    assert gzip.decompress(shown) == cut_marker(10, len(wire))
