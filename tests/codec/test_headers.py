"""The one-pass header readers give exactly what mitmproxy's Headers and Request give."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from mitmproxy.http import Headers
from mitmproxy.test import tflow

from seatbelt.codec.headers import header, header_lists, header_value, host_header

NAMES = [b"Host", b"HOST", b"host", b"content-type", b"Content-Encoding", b"upgrade",
         "\u212aey".encode(), b"x-a", b"transfer-encoding", b""]
VALUES = st.binary(max_size=12) | st.sampled_from([b"", b"gzip", b"\xff\xfe", b"a, b"])


@given(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8))
def test_a_header_reads_as_mitmproxy_reads_it(fields):
    headers = Headers(fields)
    for name in {n.lower() for n in NAMES} | {b"absent"}:
        assert header_value(headers, name) == headers.get(name.decode(errors="surrogateescape"))
        assert header(headers, name) == headers.get(name.decode(errors="surrogateescape"), "")


def test_repeats_are_folded_and_absence_is_none():
    headers = Headers([(b"X-A", b"1"), (b"x-a", b"2"), (b"Content-Type", b"")])
    assert header_value(headers, b"x-a") == "1, 2"
    assert header_value(headers, b"content-type") == ""  # present, empty
    assert header_value(headers, b"upgrade") is None and header(headers, b"upgrade") == ""


@given(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=6),
       st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/3"]),
       st.sampled_from(["", "api.openai.com", "[::1]:8080"]))
def test_the_host_header_is_mitmproxys_host_header(fields, version, authority):
    req = tflow.tflow().request
    req.headers = Headers(fields)
    req.data.http_version = version
    req.authority = authority
    assert host_header(req) == req.host_header


def test_header_lists_are_what_mitmproxy_gives_each_name():
    """The one-pass reading gives what Headers.get_all gives per name: any case, repeats in
    order, non-ASCII names and values that are not UTF-8."""
    headers = Headers(((b"AUTHORIZATION", b"Bearer a"), (b"x-other", b"1"),
                       (b"api-KEY", b"k\xff"), (b"Authorization", b"Bearer b"),
                       ("\u212aey".encode(), b"kelvin"), (b"x-api-key", b"z")))
    names = ("authorization", "api-key", "x-api-key", "key", "absent")
    got = header_lists(headers, names)
    for name in names:
        assert got.get(name, []) == headers.get_all(name), name
    assert got["authorization"] == ["Bearer a", "Bearer b"]
