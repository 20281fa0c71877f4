"""Content-Encoding (seatbelt/codec/decoding.py): a response copy decoded in bounded pieces
that never raises, a request body inflated under a limit, and re-encoding after a rewrite."""

from __future__ import annotations

import gzip
import json
import zlib

import brotli
import pytest
import zstandard

from seatbelt.codec import decoding


def encode(data: bytes, coding: str) -> bytes:
    """Independent encoders (not decoding.encode_body), incl. raw deflate."""
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "deflate-raw":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if coding == "br":
        return brotli.compress(data)
    if coding == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if coding == "gzip, br":
        return brotli.compress(gzip.compress(data))
    return data


def header(coding: str) -> str:
    return "deflate" if coding == "deflate-raw" else coding


def test_parse_encodings():
    assert decoding.parse_encodings("gzip, br") == ["gzip", "br"]
    assert decoding.parse_encodings(" Identity , X-GZIP ") == ["gzip"]
    assert decoding.parse_encodings("") == []


@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate-raw", "br", "zstd", "gzip, br"])
def test_stream_decoder_pieces_are_bounded(coding):
    data = json.dumps({"x": "y" * 3_000_000}).encode()
    pieces: list[bytes] = []
    dec = decoding.StreamDecoder(header(coding), pieces.append)
    enc = encode(data, coding)
    for i in range(0, len(enc), 7777):
        dec.feed(enc[i : i + 7777])
    dec.finish()
    assert dec.error is None and b"".join(pieces) == data
    assert max(map(len, pieces)) <= decoding.PIECE


def test_gzip_with_several_members():
    data = gzip.compress(b"hello ") + gzip.compress(b"world")
    pieces: list[bytes] = []
    dec = decoding.StreamDecoder("gzip", pieces.append)
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
    dec.finish()
    assert b"".join(pieces) == b"hello world" and dec.error is None


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "gzip, br", "identity", ""])
def test_request_body_round_trip(coding):
    data = json.dumps({"model": "m", "messages": [{"content": "é" * 1000}]}).encode()
    enc = decoding.encode_body(data, coding)
    assert decoding.decode_request_body(enc, coding, 1 << 20) == data


def test_request_body_limits_and_errors():
    data = b"{" + b" " * 5_000_000 + b"}"
    for coding in ("gzip", "br", "zstd", "deflate"):
        with pytest.raises(decoding.BodyTooLarge):
            decoding.decode_request_body(decoding.encode_body(data, coding), coding, 1 << 20)
    with pytest.raises(decoding.BodyTooLarge):
        decoding.decode_request_body(data, "", 1000)
    with pytest.raises(decoding.DecodeError):
        decoding.decode_request_body(b"not gzip", "gzip", 1000)
    with pytest.raises(decoding.DecodeError):
        decoding.decode_request_body(gzip.compress(b"{}" * 100)[:-10], "gzip", 1000)
    with pytest.raises(decoding.DecodeError, match="compress"):
        decoding.decode_request_body(b"x", "compress", 1000)
    with pytest.raises(decoding.DecodeError):
        decoding.encode_body(b"x", "compress")


@pytest.mark.parametrize("content_encoding,error", [
    ("compress", "compress"),  # unknown: flagged at once
    ("gzip", "corrupt compressed stream"),
])
def test_a_copy_that_does_not_decode_is_flagged_and_never_raises(
    content_encoding: str, error: str
) -> None:
    pieces: list[bytes] = []
    dec = decoding.StreamDecoder(content_encoding, pieces.append)
    dec.feed(b"this is not compressed at all")
    dec.feed(b"more")  # after an error: ignored
    dec.finish()
    assert dec.error is not None and error in dec.error and pieces == []


def test_a_cut_compressed_copy_is_truncated_not_an_error() -> None:
    wire = gzip.compress(b"data: " + b"y" * 100_000)
    pieces: list[bytes] = []
    dec = decoding.StreamDecoder("gzip", pieces.append)
    dec.feed(wire[: len(wire) - 20])
    dec.finish()
    assert dec.error is None and dec.truncated
    assert (b"data: " + b"y" * 100_000).startswith(b"".join(pieces)) and pieces


def test_identity_passes_the_bytes_and_counts_them() -> None:
    pieces: list[bytes] = []
    dec = decoding.StreamDecoder(" identity ", pieces.append)
    dec.feed(b"ab")
    dec.feed(b"")
    dec.feed(b"c")
    dec.finish()
    assert pieces == [b"ab", b"c"] and (dec.encoded, dec.decoded) == (3, 3)
    assert dec.identity and dec.error is None


def test_a_bomb_stops_decoding_past_the_cap() -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = c.compress(b"\0" * (decoding.CAP_FLOOR + (4 << 20))) + c.flush()
    decoded = 0

    def sink(piece: bytes) -> None:
        nonlocal decoded
        decoded += len(piece)

    dec = decoding.StreamDecoder("gzip", sink)
    dec.feed(bomb)
    dec.finish()
    assert dec.error == "decoded size cap exceeded (decompression bomb?)"
    assert decoded <= decoding.CAP_FLOOR
