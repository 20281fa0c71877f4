"""The body put back on a streamed flow: mitmproxy keeps no streamed body, the scanner keeps
a bounded copy, and a marker says where that copy was cut (the content view,
seatbelt/ui/contentview.py, recognises the marker)."""

from __future__ import annotations

from seatbelt.codec.decoding import StreamDecoder, encode_body

CUT_MARKER = b"\n\n[seatbelt: body cut here"


def cut_marker(kept: int, received: int) -> bytes:
    return (
        CUT_MARKER
        + f": seatbelt keeps the first {kept} bytes of a streamed body; the upstream sent "
        f"{received} bytes and the client got all of them]\n".encode()
    )


def shown_body(kept: bytes, *, truncated: bool, received: int, content_encoding: str) -> bytes:
    """The body to put on a streamed flow: the kept copy, plus a marker where it was cut.

    A cut compressed copy does not decode, so its decodable part is decoded, marked and
    encoded again with the same Content-Encoding: mitmweb then shows readable text.
    """
    if not truncated:
        return kept
    if not content_encoding.strip() or content_encoding.strip().lower() == "identity":
        return kept + cut_marker(len(kept), received)
    pieces: list[bytes] = []
    size = 0

    def sink(piece: bytes) -> None:
        nonlocal size
        if size < len(kept) * 4 + (1 << 20):  # bounded, whatever the compression ratio
            pieces.append(piece)
            size += len(piece)

    decoder = StreamDecoder(content_encoding, sink)
    decoder.feed(kept)  # no finish(): the copy is cut, its end is missing by design
    if decoder.error is not None and not pieces:
        return kept
    try:
        return encode_body(b"".join(pieces) + cut_marker(len(kept), received), content_encoding)
    except ValueError:
        return kept
