"""Content-Encoding handling: bounded, incremental decoding of a body copy, and re-encoding.

The scanner reads usage from a *copy* of the response body while the original bytes go
to the client untouched, so decoding must never raise into the stream and never hold
much memory: every stage inflates at most `PIECE` bytes at a time and hands each piece
to a sink at once. A stream that inflates far beyond any plausible ratio (a
decompression bomb) is flagged and no longer decoded.
"""

from __future__ import annotations

import abc
import zlib
from typing import Callable

import brotli
import zstandard

from seatbelt.apis.base import BadRequestBody

PIECE = 256 * 1024  # the most any stage inflates in one step
# Past both of these, decoding stops (flagged): a legitimate 100 MB SSE stream compresses
# at well under 256:1, while a bomb can reach ~1000:1 (deflate) or far more (br, zstd).
CAP_FLOOR = 64 << 20
CAP_RATIO = 256
# RFC 9659: a zstd Content-Encoding uses a window of at most 8 MiB; larger windows would
# let an upstream make the decoder allocate up to 128 MiB per stream.
ZSTD_MAX_WINDOW = 8 << 20

Sink = Callable[[bytes], None]


class DecodeError(BadRequestBody):
    """A request body whose Content-Encoding is unknown or whose bytes do not decode (-> 400)."""


class BodyTooLarge(ValueError):
    """A request body that inflates past the size limit (-> 413)."""


class _Stop(Exception):
    """Raised by a sink to abort decoding (cap reached)."""


def parse_encodings(header: str) -> list[str]:
    """The codings applied, in the order they were applied; identity dropped."""
    out = []
    for part in header.split(","):
        name = part.strip().lower()
        if name in ("", "identity"):
            continue
        out.append("gzip" if name == "x-gzip" else name)
    return out


class _Stage(abc.ABC):
    """One coding's incremental decoder: feeds bounded pieces to a sink."""

    @abc.abstractmethod
    def feed(self, data: bytes, sink: Sink) -> None: ...

    def finish(self, sink: Sink) -> bool:
        """Flush; True when the stream ended cleanly (not truncated)."""
        return True


class _Zlib(_Stage):
    """gzip (all members) or deflate (zlib-wrapped, or raw as some servers send it)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.d: zlib._Decompress | None = None
        self.head = b""  # first bytes of a stream, until its header can be read
        self.ended = False  # one stream (gzip member) ended
        self.ignoring = False  # trailing bytes after the end: ignored, as clients do

    def _new(self, first: bytes) -> zlib._Decompress:
        if self.coding == "gzip":
            return zlib.decompressobj(31)
        # RFC 9110 "deflate" is zlib-wrapped; a raw stream has no valid zlib header.
        zlib_header = (first[0] & 0x0F) == 8 and ((first[0] << 8) | first[1]) % 31 == 0
        return zlib.decompressobj(15 if zlib_header else -15)

    def feed(self, data: bytes, sink: Sink) -> None:
        if self.ignoring:
            return
        data, self.head = self.head + data, b""
        while data:
            if self.d is None:
                if len(data) < 2:
                    self.head = data
                    return
                if self.ended and (self.coding != "gzip" or data[:2] != b"\x1f\x8b"):
                    self.ignoring = True
                    return
                self.d = self._new(data)
            data = self._inflate(self.d, data, sink)
            if self.d.eof:
                self.d, self.ended = None, True

    @staticmethod
    def _inflate(d: zlib._Decompress, buf: bytes, sink: Sink) -> bytes:
        """Inflate in PIECE-sized steps; return the bytes after the stream's end, if any."""
        while True:
            out = d.decompress(buf, PIECE)
            if out:
                sink(out)
            if d.eof:
                return d.unused_data
            buf = d.unconsumed_tail
            if not buf and len(out) < PIECE:
                return b""

    def finish(self, sink: Sink) -> bool:
        if self.d is not None:
            self._inflate(self.d, b"", sink)
            return self.d.eof
        return self.ended or not self.head


class _Brotli(_Stage):
    def __init__(self) -> None:
        self.d = brotli.Decompressor()
        self.limited = True  # brotli >= 1.2 can bound each output; older ones cannot

    def feed(self, data: bytes, sink: Sink) -> None:
        if self.limited:
            try:
                out = self.d.process(data, output_buffer_limit=PIECE)
            except TypeError:
                self.limited = False
            else:
                # The limit is approximate (the buffer stops growing past it) and output
                # can still be pending when more input would be accepted: drain it.
                while out:
                    _pieces(out, sink)
                    if self.d.is_finished():
                        break
                    out = self.d.process(b"", output_buffer_limit=PIECE)
                return
        # brotli < 1.2: feed small slices so one call's output stays modest.
        for i in range(0, len(data), 4096):
            _pieces(self.d.process(data[i : i + 4096]), sink)

    def finish(self, sink: Sink) -> bool:
        return bool(self.d.is_finished())


def _pieces(out: bytes, sink: Sink) -> None:
    for j in range(0, len(out), PIECE):
        sink(out[j : j + PIECE])


class _WriterSink:
    """The file-like object zstandard's stream_writer writes its bounded pieces to."""

    def __init__(self) -> None:
        self.sink: Sink | None = None

    def write(self, data: bytes) -> int:
        if self.sink is not None:
            self.sink(bytes(data))
        return len(data)


class _Zstd(_Stage):
    def __init__(self) -> None:
        self.out = _WriterSink()
        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        # _WriterSink has the one method the writer calls (write), not all of IO[bytes].
        self.w = dctx.stream_writer(self.out, write_size=PIECE,  # type: ignore[arg-type]
                                    write_return_read=True)

    def feed(self, data: bytes, sink: Sink) -> None:
        self.out.sink = sink
        self.w.write(data)


def _stage(coding: str) -> _Stage:
    if coding in ("gzip", "deflate"):
        return _Zlib(coding)
    if coding == "br":
        return _Brotli()
    if coding == "zstd":
        return _Zstd()
    raise ValueError(f"unsupported content-encoding {coding!r}")


class _Chain:
    """Stages in decoding order (last applied coding first), each feeding the next."""

    def __init__(self, codings: list[str]) -> None:
        self.stages = [_stage(c) for c in reversed(codings)]

    def feed(self, data: bytes, sink: Sink, i: int = 0) -> None:
        if i == len(self.stages):
            sink(data)
            return
        self.stages[i].feed(data, lambda piece: self.feed(piece, sink, i + 1))

    def finish(self, sink: Sink) -> bool:
        clean = True
        for i, stage in enumerate(self.stages):
            def onward(piece: bytes, i: int = i) -> None:
                self.feed(piece, sink, i + 1)
            clean = stage.finish(onward) and clean
        return clean


class StreamDecoder:
    """Decodes a copy of a response body in bounded pieces; never raises.

    `sink` gets the decoded pieces (at most PIECE bytes each). On an unknown coding, a
    corrupt stream or a bomb, `error` is set and decoding stops; the caller keeps
    forwarding the original bytes regardless.
    """

    def __init__(self, content_encoding: str, sink: Sink) -> None:
        self.sink = sink
        self.error: str | None = None
        # Ended without the compressed end marker (client or upstream left): what was decoded
        # is as good as an uncompressed stream cut at the same point, so this is no error.
        self.truncated = False
        self.encoded = 0
        self.decoded = 0
        self.chain: _Chain | None = None
        codings = parse_encodings(content_encoding or "")
        self.identity = not codings
        if codings:
            try:
                self.chain = _Chain(codings)
            except ValueError as e:
                self.error = str(e)

    def _count(self, piece: bytes) -> None:
        self.decoded += len(piece)
        if self.decoded > CAP_FLOOR and self.decoded > CAP_RATIO * self.encoded:
            self.error = "decoded size cap exceeded (decompression bomb?)"
            raise _Stop
        self.sink(piece)

    def feed(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        self.encoded += len(data)
        if self.identity:
            self.decoded += len(data)
            self.sink(data)
            return
        self._run(lambda: self.chain.feed(data, self._count))  # type: ignore[union-attr]

    def finish(self) -> None:
        if self.error is not None or self.chain is None:
            return

        def flush() -> None:
            if not self.chain.finish(self._count):  # type: ignore[union-attr]
                self.truncated = True

        self._run(flush)

    def _run(self, step: Callable[[], None]) -> None:
        try:
            step()
        except _Stop:
            pass
        except Exception as e:  # zlib.error, brotli.error, ZstdError, ...
            self.error = self.error or f"corrupt compressed stream: {type(e).__name__}"


def decode_request_body(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Inflate a request body, refusing one that is corrupt or inflates past `limit` bytes."""
    codings = parse_encodings(content_encoding or "")
    if not codings:
        if len(body) > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        return body
    try:
        chain = _Chain(codings)
    except ValueError as e:
        raise DecodeError(str(e)) from None
    out = bytearray()

    def sink(piece: bytes) -> None:
        if len(out) + len(piece) > limit:
            raise BodyTooLarge(f"request body inflates past {limit} bytes")
        out.extend(piece)

    try:
        chain.feed(body, sink)
        clean = chain.finish(sink)
    except BodyTooLarge:
        raise
    except Exception as e:
        raise DecodeError(f"request body does not decode as {content_encoding}") from e
    if not clean:
        raise DecodeError(f"request body is a truncated {content_encoding} stream")
    return bytes(out)


def encode_body(data: bytes, content_encoding: str) -> bytes:
    """Re-apply a body's Content-Encoding after a rewrite, in the order listed."""
    for coding in parse_encodings(content_encoding or ""):
        if coding == "gzip":
            c = zlib.compressobj(6, zlib.DEFLATED, 31)
            data = c.compress(data) + c.flush()
        elif coding == "deflate":
            data = zlib.compress(data)
        elif coding == "br":
            data = brotli.compress(data)
        elif coding == "zstd":
            data = zstandard.ZstdCompressor().compress(data)
        else:
            raise DecodeError(f"unsupported content-encoding {coding!r}")
    return data
