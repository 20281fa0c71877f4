"""The response scanner: mitmproxy's stream callable for one LLM response.

It forwards every chunk at once and unchanged while it reads, from a decoded *copy*,
the token usage the upstream reports, how much output text went by (for an estimate
when no usage comes) and when the first output arrived. Family modules say what a
usage frame looks like; everything here is generic: content decoding, frame cutting
(SSE, NDJSON, one JSON document, a JSON array streamed in pieces; the boundaries, SSE
payloads and error reading are seatbelt/codec/framing.py's, shared with the content view)
and bounded memory. Hiding the injected usage frame is FrameHider's, composed here.

Speed: frames are not JSON-parsed one by one. Each batch of complete frames is searched
in C (regex / bytes.find) for the output text and for the few markers a usage or error
frame must contain; only the frames holding a marker are cut out and parsed.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable

from mitmproxy.http import Headers

from seatbelt.apis.base import ApiFamily, RequestFacts, Route, Usage
from seatbelt.codec import framing as frames
from seatbelt.codec.decoding import StreamDecoder
from seatbelt.codec.headers import header, header_value
from seatbelt.metering.cutoff import OutputWatch

MAX_FRAME = 1 << 20  # an SSE/NDJSON frame longer than this is scanned through windows
DOC_HEAD = 1 << 20  # a JSON document up to this size is parsed whole
DOC_TAIL = 256 << 10  # beyond it, usage is looked for in this last window
TEXT_CARRY = 64 << 10  # output text of a big document: the most kept for a straddling match
HOLD_LIMIT = 64 << 10  # hiding: the most held back for an incomplete frame
BATCH = 32 << 10  # after the first output: scan chunks once this many bytes are waiting
ERROR_KEY = b'"error"'

_ERROR_FIELD = re.compile(rb"(?:^|(?<=\n))error:")  # llama.cpp's SSE `error:` field
_JSON_KEY = re.compile(rb'^"[^"\\]+"$')


_MARKER_RX: dict[bytes, re.Pattern[bytes]] = {}


def _marker_rx(marker: bytes) -> re.Pattern[bytes]:
    """A marker that is a JSON key only counts when its value is not null: OpenAI-style
    streams send `"usage":null` in every chunk, which is never worth parsing.
    (Remembered per marker: a scanner is made per response.)"""
    rx = _MARKER_RX.get(marker)
    if rx is None:
        if _JSON_KEY.match(marker):
            rx = re.compile(re.escape(marker) + rb"\s*:\s*(?!null)")
        else:
            rx = re.compile(re.escape(marker))
        if len(_MARKER_RX) < 256:
            _MARKER_RX[marker] = rx
    return rx


def _decoded(raw: bytes) -> str:
    """The concatenated bodies of JSON strings, escapes decoded."""
    if b"\\" not in raw:
        return raw.decode("utf-8", "replace")
    try:
        text = json.loads(b'"' + raw + b'"', strict=False)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")
    return text if isinstance(text, str) else raw.decode("utf-8", "replace")


class _Doc:
    """One JSON document (or an oversized frame) seen through bounded windows.

    Up to `head` bytes it is kept whole and parsed at its end. Past that, only the last
    DOC_TAIL bytes are kept and usage is found there; output text is then counted as
    the bytes go by.
    """

    def __init__(
        self, sc: Scanner, head: int = DOC_HEAD, rx: re.Pattern[bytes] | None = None
    ) -> None:
        self.sc = sc
        self.rx = rx or sc.out_rx
        self.room = head
        self.buf = bytearray()
        self.text: _TextCarry | None = None
        self.tail = bytearray()

    def feed(self, data: bytes) -> None:
        if self.text is None:
            if len(data) <= self.room - len(self.buf):
                self.buf += data
                return
            self.text = _TextCarry(self.sc, self.rx)
            self.text.feed(bytes(self.buf))
            self.tail, self.buf = self.buf, bytearray()
        self.text.feed(data)
        self.tail += data
        if len(self.tail) > 2 * DOC_TAIL:
            del self.tail[:-DOC_TAIL]

    def end(self) -> None:
        if self.text is None:
            whole = bytes(self.buf)
            self.sc._text(whole, self.rx)
            if self.sc._has_marker(whole):
                self.sc._parse(whole)
        else:
            self.sc._tail_usage(bytes(self.tail[-DOC_TAIL:]))


class _TextCarry:
    """Output text counted incrementally over a body with no frame boundaries."""

    def __init__(self, sc: Scanner, rx: re.Pattern[bytes]) -> None:
        self.sc = sc
        self.rx = rx
        self.carry = b""

    def feed(self, data: bytes) -> None:
        buf = self.carry + data if self.carry else data
        last = 0
        pieces = []
        for m in self.rx.finditer(buf):
            pieces.append(m.group(1))
            last = m.end()
        self.sc._take(pieces)
        # No match can end inside the carry (finditer would have found it); a string
        # longer than TEXT_CARRY that straddles pieces goes uncounted.
        self.carry = buf[max(last, len(buf) - TEXT_CARRY) :]


class _Framer:
    """Cuts a decoded stream into frames and hands complete batches to the scanner."""

    newline = b"\n"  # the byte that ends the stream's lines (counted by Scanner._stretch)

    def feed(self, data: bytes, newlines: int | None = None) -> None:
        """`newlines`: the count of b"\\n" in `data` when the caller has it already
        (Scanner._catch_up: the held stream's fast path counted them), so that a framer
        that needs it does not count the same bytes again."""
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


class _LineFramer(_Framer):
    """SSE events (separated by a blank line: LF, CRLF or lone CR) or NDJSON lines."""

    def __init__(self, sc: Scanner, sse: bool) -> None:
        self.sc = sc
        self.sse = sse
        # SSE in lone CRs (frames.sse_lone_cr): None until the first line end shows it.
        self.lone_cr: bool | None = None if sse else False
        self.pending = b""
        self.pos = 0  # stream offset of `pending`
        self.big: _Doc | None = None
        self.big_tail = b""  # last bytes of a big frame: its end may straddle pieces
        # Frame boundaries (seatbelt/codec/framing.py), bound once per response.
        self._first_end = frames.sse_first_end if sse else frames.line_first_end
        self._frame_start = frames.sse_frame_start if sse else frames.line_frame_start
        self._last_end = frames.sse_last_end if sse else frames.line_last_end

    def feed(self, data: bytes, newlines: int | None = None) -> None:
        if self.lone_cr is not False:
            data = self._as_lf(data)
            newlines = None  # counted in the raw bytes: not those of the translated ones
        if self.big is not None:
            data = self._feed_big(data)
            if self.big is None and data:
                self.feed(data)
            return
        buf = self.pending + data if self.pending else data
        cut = self._last_end(buf)  # past the last separator
        if cut:
            # The region's newlines from the count of data's, when given: the region is
            # pending + data less what follows the cut (at most a frame), so only the
            # small ends are counted (Scanner._region would count the whole region).
            if newlines is not None:
                newlines += self.pending.count(b"\n") - buf.count(b"\n", cut)
            self.sc._region(buf if cut == len(buf) else buf[:cut], self.pos, self, newlines)
            self.pos += cut
            self.sc._safe = self.pos
            buf = buf[cut:] if cut < len(buf) else b""
        if len(buf) > MAX_FRAME:
            self.pending = b""
            self.big = _Doc(self.sc, head=0)
            self._feed_big(buf)
        else:
            self.pending = buf

    def _as_lf(self, data: bytes) -> bytes:
        """The data of an SSE stream in lone CRs with LFs for them (the same length)."""
        if self.lone_cr is None:
            self.lone_cr = frames.sse_lone_cr(self.pending + data)
            if not self.lone_cr:
                return data
            self.newline = b"\r"
            self.pending = self.pending.translate(frames.CR_TO_LF)
        return data.translate(frames.CR_TO_LF)

    def _feed_big(self, data: bytes) -> bytes:
        """Feed an oversized frame until it ends; return what follows it."""
        assert self.big is not None
        probe = self.big_tail + data
        end = self._first_end(probe, 0)
        if end < 0:
            self.big.feed(data)
            self.pos += len(data)
            self.big_tail = probe[-3:]
            return b""
        end -= len(self.big_tail)  # offset in data
        self.big.feed(data[:end])
        self.pos += end
        self.sc._safe = self.pos
        big, self.big, self.big_tail = self.big, None, b""
        big.end()
        return data[end:]

    def end(self) -> None:
        if self.big is not None:
            big, self.big = self.big, None
            big.end()
        elif self.pending.strip():
            # An unterminated last frame (a server that ends with one newline, or a
            # cut stream): scan it too; invalid JSON is simply ignored.
            frame, self.pending = self.pending, b""
            self.sc._region(frame, self.pos, self, last=True)
            self.pos += len(frame)
            self.sc._safe = self.pos

    def payload(self, frame: bytes) -> tuple[bytes | None, str | None]:
        """(JSON data of the frame or None, value of an SSE `error:` field or None)."""
        if not self.sse:
            line = frame.strip()
            return (line or None), None
        return frames.sse_payload(frame)


class _JsonFramer(_Framer):
    """The whole body is one JSON document (a buffered response: its own text pattern)."""

    def __init__(self, sc: Scanner) -> None:
        self.doc = _Doc(sc, rx=sc.doc_rx)

    def feed(self, data: bytes, newlines: int | None = None) -> None:
        self.doc.feed(data)

    def end(self) -> None:
        self.doc.end()


class _ArrayFramer(_Framer):
    """A top-level JSON array delivered in pieces (Gemini without alt=sse): each element
    object (cut out by seatbelt/codec/framing.py's ArraySplitter) is scanned as a document."""

    def __init__(self, sc: Scanner) -> None:
        self.sc = sc
        self.split = frames.ArraySplitter()
        self.doc: _Doc | None = None
        self.pos = 0  # stream offset of the next piece

    def feed(self, data: bytes, newlines: int | None = None) -> None:
        spans, open_at = self.split.feed(data)
        for start, end in spans:
            doc = self.doc or _Doc(self.sc)  # an element begun in an earlier piece goes on
            self.doc = None
            doc.feed(data[start:end])
            doc.end()
            self.sc._elements += 1
            self.sc._safe = self.pos + end  # a cut-off's error element may follow here
        self.pos += len(data)
        if open_at is not None:
            if self.doc is None:
                self.doc = _Doc(self.sc)
            self.doc.feed(data[open_at:])

    def end(self) -> None:
        if self.doc is not None:
            doc, self.doc = self.doc, None
            doc.end()


# A JSON response up to this size, with a Content-Length, is read whole by mitmproxy and
# scanned at the end instead of streamed through the callable (see read_whole).
READ_WHOLE_LIMIT = 1 << 20


def read_whole(framing: str, headers: Headers, streaming: object) -> bool:
    """Should mitmproxy read this response whole rather than stream it through the scanner?

    Only a single JSON document (a non-streamed completion) that announces a small
    Content-Length, and only when nothing else asked for streaming. Its client cannot use
    a partial JSON document anyway, so holding it costs no latency and at most
    READ_WHOLE_LIMIT bytes; in exchange mitmproxy sends it with its buffered path, which
    costs ~0.14 ms less per response than one stream-callable round (bench/), and keeps
    the exact body for mitmweb. Anything that streams (SSE, NDJSON, a JSON array, no
    length, chunked) is streamed: never delay a chunk on its way to the client.
    """
    if framing != "json" or streaming or header_value(headers, b"transfer-encoding") is not None:
        return False
    length = header(headers, b"content-length")
    return length.isdigit() and len(length) <= 8 and int(length) <= READ_WHOLE_LIMIT


class FrameHider:
    """Hides the injected usage frame from a client that did not ask for it.

    It holds the bytes of an uncompressed SSE stream until the scanner has seen their
    frames complete (`safe`), and returns them minus the frames marked with `cut`. Only
    an incomplete trailing frame is held back, and at most HOLD_LIMIT bytes of it: a
    longer frame cannot be a usage-only frame and is let through. It does no scanning:
    the Scanner composes it and tells it where frames end and which are injected.
    """

    def __init__(self) -> None:
        self.held = bytearray()  # bytes received, not yet returned
        self.held_at = 0  # stream offset of held[0]
        self.cuts: list[tuple[int, int]] = []  # injected frames, stream offsets

    @property
    def end(self) -> int:
        """Stream offset just past the last byte received."""
        return self.held_at + len(self.held)

    def hold(self, chunk: bytes) -> None:
        self.held += chunk

    def holds(self, start: int) -> bool:
        """Is a frame starting at this stream offset still wholly held back?"""
        return start >= self.held_at

    def cut(self, start: int, end: int) -> None:
        self.cuts.append((start, end))

    def release(self, safe: int) -> bytes:
        """What may go to the client now that frames are complete up to offset `safe`."""
        if self.end - safe > HOLD_LIMIT:
            safe = self.end  # too long to be a usage-only frame: let it through
        return self._release(safe)

    def release_all(self) -> bytes:
        return self._release(self.end)

    def _release(self, upto: int) -> bytes:
        """Return held bytes up to stream offset `upto`, minus the injected frames."""
        n = upto - self.held_at
        if n <= 0:
            return b""
        out = bytearray()
        at = self.held_at
        for start, end in self.cuts:
            out += self.held[at - self.held_at : start - self.held_at]
            at = end
        out += self.held[at - self.held_at : n]
        self.cuts = []
        del self.held[:n]
        self.held_at = upto
        return bytes(out)


class Scanner:
    """mitmproxy stream callable for one LLM response: forward, and meter a copy.

    Bytes are returned at once and unchanged (the same object), except when
    `hide_injected_usage` is set on an uncompressed SSE body: then the usage-only
    frame(s) seatbelt asked for are cut out, and only an incomplete trailing frame is
    held back until it ends. A compressed stream is never edited: cutting a frame out
    would mean decoding and re-encoding the whole stream on the event loop (and
    re-buffering what the upstream's encoder flushed per frame), so the client then
    sees the one extra usage-only chunk, a shape the OpenAI SDKs already accept.
    """

    def __init__(
        self,
        family: ApiFamily,
        route: Route,
        facts: RequestFacts,
        *,
        content_type: str,
        content_encoding: str,
        hide_injected_usage: bool,
        keep_limit: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
        allowance: int | None = None,
        on_cut: Callable[[], None] | None = None,
    ) -> None:
        self.family = family
        self.route = route
        self.clock = clock
        self.keep_limit = keep_limit
        self.reader = family.new_usage_reader(route)
        self.framing = family.framing(route, facts, content_type or "")
        self.out_rx = family.output_text
        # A family whose stream repeats its output in summary events (Responses) counts
        # only deltas in streams, and the whole text of a buffered body with this pattern.
        self.doc_rx: re.Pattern[bytes] = family.document_text or self.out_rx
        self.output_seen = False
        self._chars = 0  # output characters counted so far (see output_chars)
        self._bytes = 0  # their UTF-8 bytes
        self.first_output_at: float | None = None
        self.bytes_in = 0
        self.ended = False
        self.whole_seen = False  # scan_whole() had the body (a response read whole)
        self.upstream_error: str | None = None
        self.scan_error: str | None = None  # our own failure: scanning stopped
        self._kept = bytearray()
        self.kept_truncated = False
        self._findall = self.out_rx.findall
        self._error_rx = _marker_rx(ERROR_KEY)
        self._markers = [(m, _marker_rx(m)) for m in family.usage_markers]
        self._dense: set[int] = set()  # markers seen in earlier batches
        self._key_markers = [m for m in family.usage_markers if _JSON_KEY.match(m)]
        self._setup_framing(content_encoding, hide_injected_usage)
        # A stream that outruns its hold's output allowance is ended (cutoff.py); a
        # buffered document cannot be cut mid-way and is settled as it is.
        self.watch: OutputWatch | None = None
        if allowance is not None and facts.produces_output and self.framing != "json":
            self.watch = OutputWatch(family, self.framing, allowance, on_cut)

    def _setup_framing(self, content_encoding: str, hide_injected_usage: bool) -> None:
        """Decoding, frame cutting, usage-frame hiding and the fast path's state."""
        self._decoder = StreamDecoder(content_encoding or "", self._decoded)
        self._identity = self._decoder.identity and self._decoder.error is None
        self._framer: _Framer
        if self.framing == "sse" or self.framing == "ndjson":
            self._framer = _LineFramer(self, sse=self.framing == "sse")
        elif self.framing == "json-array":
            self._framer = _ArrayFramer(self)
        else:
            self._framer = _JsonFramer(self)
        hide = (
            hide_injected_usage
            and self.framing == "sse"
            and self._decoder.identity
            and self._decoder.error is None
        )
        # Fast path (__call__): kept-copy offset from which bytes are not scanned yet, and
        # the kept length up to which chunks may join unscanned; -1: off.
        self._mark = -1
        self._fast_limit = -1
        # Held streams (cutoff.py): the kept offset up to which the fast path counted the
        # newlines that went by unscanned since _mark, and their number (_stretch).
        self._looked = -1
        self._unscanned_newlines = 0
        self._batch: list[bytes] = []  # chunks received after the first output, not scanned
        self._batched = 0  # their length
        # Text counting of SSE/NDJSON regions that are wholly in the kept copy is deferred
        # until output_chars is read: with reported usage nobody reads it on the hot path.
        # Edges (stream offsets) of those regions, contiguous; only for unedited raw bytes.
        self._deferred: list[int] = []
        self._hider = FrameHider() if hide else None
        self._defer_text = self._identity and not hide
        self._safe = 0  # stream offset up to which frames are complete
        self._elements = 0  # JSON-array elements complete so far

    # -- results -------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        return self.reader.usage

    @property
    def cut_off(self) -> bool:
        """The output passed the hold's allowance: the stream was (or is being) ended."""
        return self.watch is not None and self.watch.passed

    @property
    def output_bytes(self) -> int:
        """UTF-8 bytes of the output text seen: each token covers at least one byte, so
        this bounds the visible output's tokens from above (docs/metering.md)."""
        self._count_deferred()
        return self._bytes

    @property
    def output_chars(self) -> int:
        """Characters of output text. Regions whose counting was deferred (see _region)
        are counted now, from the kept copy, on the first read."""
        self._count_deferred()
        return self._chars

    def _count_deferred(self) -> None:
        edges = self._deferred
        if len(edges) > 1:
            self._deferred = []
            kept = self._kept
            for a, b in zip(edges, edges[1:]):
                self._take(self._findall(kept, a, b))

    @property
    def usage_invalid(self) -> str | None:
        """Why the usage read cannot be trusted as final: an absurd value, or scanning /
        decoding that stopped part-way (a cumulative snapshot read before the stop,
        e.g. vLLM's continuous usage, would undercharge if settled as reported)."""
        return self.reader.invalid or self.scan_error or self._decoder.error

    @property
    def decode_error(self) -> str | None:
        return self._decoder.error

    @property
    def decode_truncated(self) -> bool:
        """The compressed body ended without its end marker (the stream was cut)."""
        return self._decoder.truncated

    @property
    def kept_body(self) -> bytes:
        return bytes(self._kept)

    # -- the stream callable ---------------------------------------------------------

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        # The fast path, once the first output's time is taken (one call per token with
        # most servers): the chunk joins the kept copy and is scanned from there later,
        # BATCH bytes at a time (_catch_up). ~0.3 us instead of ~1 us per call.
        n = len(chunk)
        kept = self._kept
        if n and len(kept) + n <= self._fast_limit:
            kept += chunk
            self.bytes_in += n
            return chunk
        return self._call(chunk)

    def _call(self, chunk: bytes) -> bytes | list[bytes]:
        watch = self.watch
        if watch is None:
            return self._forward(chunk)
        if watch.ended:
            return [] if chunk else b""  # the stream was cut off: nothing more goes out
        if self._mark >= 0 and self._stretch(watch, chunk):
            return chunk
        start = self.bytes_in
        out = self._forward(chunk)
        return self._cut(watch, chunk, start, out) if watch.passed else out

    def _stretch(self, watch: OutputWatch, chunk: bytes) -> bool:
        """The fast path's window ran out on a held stream (_batch_limit shrinks it as the
        stream nears its allowance): count the newlines that went by unscanned (no copy)
        and, while the frames they could have ended leave room under the allowance
        (OutputWatch.room), take the chunk unscanned with a new window. True: taken."""
        n = len(chunk)
        kept = self._kept
        end = len(kept) + n
        if not n or not self._identity or end > min(self._mark + BATCH, self.keep_limit):
            return False  # a compressed stream's bytes have no newlines to count
        newline = self._framer.newline
        self._unscanned_newlines += kept.count(newline, self._looked) + chunk.count(newline)
        self._looked = end
        room = watch.room(self._unscanned_newlines)
        if not room:
            return False  # _forward scans the batch with this chunk (_catch_up)
        kept += chunk
        self.bytes_in += n
        self._fast_limit = min(end + room, self._mark + BATCH, self.keep_limit)
        return True

    def _cut(self, watch: OutputWatch, chunk: bytes, start: int,
             out: bytes | list[bytes]) -> list[bytes]:
        """End the stream after its last complete frame with the family's error frame
        (cutoff.py). `chunk`, at stream offset `start`, has not gone out yet."""
        self._mark = self._fast_limit = -1
        if not self._identity:  # compressed: no frame can be added; only stop forwarding
            watch.end(self._elements)
            return []
        if self._hider is not None:  # it released the complete frames only
            pieces = [out] if isinstance(out, bytes) and out else []
        else:
            keep = self._safe - start
            pieces = [chunk[:keep]] if keep > 0 else []
            if keep < 0:  # part of a frame went out already: end it
                pieces.append(watch.frame_end)
        stop = watch.end(self._elements)
        self._keep(stop)
        # An empty chunk ends the client's body (HTTP/1 chunked: the last chunk), so it
        # reads a whole response that ends in the error, before the upstream's close
        # reaches it.
        return [*pieces, stop, b""]

    def _forward(self, chunk: bytes) -> bytes | list[bytes]:
        self._catch_up()
        if not chunk:
            out = self._finish()
            return out or b""
        self.bytes_in += len(chunk)
        if self._hider is not None:
            out = self._hide_feed(self._hider, chunk)
            self._keep(out)
            return out if out else []  # never b"" mid-stream: it would end the body
        kept = self._kept
        whole = len(kept) + len(chunk) <= self.keep_limit
        if whole:
            kept += chunk
        elif len(kept) < self.keep_limit:
            self._keep(chunk)
        else:
            self.kept_truncated = True
        if self.scan_error is None:
            data = chunk
            if self.output_seen and whole and not self._batch:
                # Left in the kept copy for _catch_up; the fast path takes the next ones.
                self._mark = self._looked = len(kept) - len(chunk)
                self._unscanned_newlines = 0
                self._fast_limit = min(self._mark + self._batch_limit(), self.keep_limit)
                return chunk
            if self.output_seen:
                # The first output's time is taken: from here on, chunks (one per token
                # with most servers) are scanned in batches, which costs a fraction of
                # scanning each on its own. Nothing reads the results before finish().
                self._batch.append(chunk)
                self._batched += len(chunk)
                if self._batched < self._batch_limit():
                    return chunk
                data = b"".join(self._batch)
                self._batch.clear()
                self._batched = 0
            self._scan(data)
        return chunk

    def _batch_limit(self) -> int:
        """Bytes forwarded before they are scanned: BATCH, or less while a stream that
        may outrun its hold nears its allowance (cutoff.OutputWatch.headroom)."""
        if self.watch is None:
            return BATCH
        return min(BATCH, self.watch.headroom())

    def _scan(self, data: bytes, newlines: int | None = None) -> None:
        try:
            if self._identity:
                self._framer.feed(data, newlines)
            else:
                self._decoder.feed(data)
        except Exception as e:  # never let a scanning bug touch the stream
            self._fail(e)

    def finish(self) -> None:
        """Flush decoding and the last frame; idempotent. Also called on flow errors."""
        self._finish()

    def scan_whole(self, body: bytes) -> None:
        """A body mitmproxy read whole (read_whole): scan it at once and finish. No copy is
        kept: the flow holds the body itself."""
        if self.ended:
            return
        self.whole_seen = True
        self.bytes_in += len(body)
        if body:
            self._scan(body)
        self._finish()

    def _catch_up(self) -> None:
        """Scan what the fast path left in the kept copy, and leave the fast path."""
        mark = self._mark
        if mark < 0:
            return
        self._mark = self._fast_limit = -1
        kept = self._kept
        if mark < len(kept) and self.scan_error is None:
            newlines = None
            if self.watch is not None and self._framer.newline == b"\n" and self._looked >= mark:
                # _stretch counted kept[mark:_looked]: count only what came after.
                newlines = self._unscanned_newlines + kept.count(b"\n", self._looked)
            # One copy: kept[mark:] would copy into a bytearray first, then bytes() again.
            self._scan(bytes(memoryview(kept)[mark:]), newlines)

    def _finish(self) -> bytes:
        self._catch_up()
        if self.ended:
            return b""
        self.ended = True
        if self._batch and self.scan_error is None:
            self._scan(b"".join(self._batch))
            self._batch.clear()
        try:
            if self.scan_error is None:
                self._decoder.finish()
                self._framer.end()
        except Exception as e:
            self._fail(e)
        if self._hider is None:
            return b""
        out = self._hider.release_all()
        self._keep(out)
        return out

    def _fail(self, e: Exception) -> None:
        self.scan_error = f"{type(e).__name__}: {str(e)[:120]}"

    def _keep(self, data: bytes) -> None:
        room = self.keep_limit - len(self._kept)
        if len(data) > room:
            self.kept_truncated = True
            data = data[: max(room, 0)]
        if data:
            self._kept += data

    # -- hiding the injected usage frame -------------------------------------------

    def _hide_feed(self, hider: FrameHider, chunk: bytes) -> bytes:
        hider.hold(chunk)
        try:
            if self.scan_error is None:
                self._decoder.feed(chunk)
        except Exception as e:
            self._fail(e)
        if self.scan_error is not None:  # scanning broke: stop editing, forward all
            self._hider = None
            return hider.release_all()
        return hider.release(self._safe)

    # -- scanning ------------------------------------------------------------------

    def _decoded(self, piece: bytes) -> None:
        self._framer.feed(piece)

    def _count(self, raw: bytes) -> None:
        """Take the joined raw bodies of output strings seen in one batch."""
        if not raw:
            return
        if not self.output_seen:
            self.output_seen = True
            self.first_output_at = self.clock()
        if raw.isascii() and b"\\" not in raw:
            self._chars += len(raw)
            self._bytes += len(raw)
        else:
            text = _decoded(raw)
            self._chars += len(text)
            self._bytes += len(text.encode("utf-8", "surrogatepass"))

    def _take(self, found: list[bytes]) -> None:
        """The raw bodies of the output strings of one batch of frames."""
        if not found:
            return
        if self.watch is not None:  # each non-empty one came with a token at least
            self.watch.text_frames(len(found) - found.count(b""))
        self._count(found[0] if len(found) == 1 else b"".join(found))

    def _text(self, data: bytes, rx: re.Pattern[bytes] | None = None) -> None:
        self._take(rx.findall(data) if rx is not None else self._findall(data))

    def _has_marker(self, data: bytes) -> bool:
        markers = [*self._markers, (ERROR_KEY, self._error_rx)]
        return any(lit in data and rx.search(data) for lit, rx in markers)

    def _region(self, region: bytes, base: int, framer: _LineFramer,
                newlines: int | None = None, last: bool = False) -> None:
        """A batch of complete SSE events / NDJSON lines starting at stream offset base;
        `newlines`: its count of b"\\n" when the caller has it (_LineFramer.feed)."""
        deferred = self._deferred
        end = base + len(region)
        # A stream that may outrun its hold is counted exactly once it nears it (cutoff.py).
        exact = self.watch is not None and self.watch.lines(
            region.count(b"\n") if newlines is None else newlines)
        if exact and deferred:
            self._count_deferred()  # their frames first
        if (not exact and self._defer_text and self.output_seen and end <= len(self._kept)
                and (not deferred or deferred[-1] == base)):
            # The first output's time is taken; counting the rest can wait (output_chars).
            if not deferred:
                deferred.append(base)
            deferred.append(end)
        else:
            self._take(self._findall(region))
        hits: list[int] | None = None
        for k, (lit, rx) in enumerate(self._markers):
            # `in` runs at memory speed, the regex (which skips `"usage":null`) at half
            # that: run it only where the marker occurs, or straight away once the
            # stream has shown that it carries the key in every frame.
            if k in self._dense or lit in region:
                self._dense.add(k)
                m = rx.search(region)
                if m is not None:
                    hits = hits or []
                    hits.extend(x.start() for x in rx.finditer(region, m.start()))
        if b"error" in region:  # one pass for both `"error"` and an SSE `error:` field
            if b'"error"' in region:
                for m in self._error_rx.finditer(region):
                    hits = hits or []
                    hits.append(m.start())
            if framer.sse and b"error:" in region:
                for m in _ERROR_FIELD.finditer(region):
                    hits = hits or []
                    hits.append(m.start())
        if not hits:
            return
        hits.sort()
        done = -1
        for i in hits:
            if i < done:
                continue
            start = framer._frame_start(region, i)
            end = len(region) if last else framer._first_end(region, i)
            if end < 0:
                end = len(region)
            done = end
            self._frame(region[start:end], base + start, base + end, framer)

    def _frame(self, frame: bytes, start: int, end: int, framer: _LineFramer) -> None:
        data, err = framer.payload(frame)
        if err is not None:
            self.upstream_error = self.upstream_error or err
        if data is None:
            return
        obj = self._parse(data)
        # Only a frame still wholly held back can be cut out; one already partly let
        # through (it was too long to be a usage-only frame) is left alone.
        hider = self._hider
        if hider is not None and hider.holds(start) and self.family.is_injected_usage_frame(obj):
            hider.cut(start, end)

    def _parse(self, data: bytes) -> Any:
        """Parse one frame or document and feed it to the usage reader and error check."""
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            if len(data) > DOC_TAIL:
                self._tail_usage(data[-DOC_TAIL:])
            return None
        self.reader.feed(obj)
        if self.watch is not None:  # the upstream's running count, where it sends one
            self.watch.reported(self.reader.usage.completion_tokens)
        err = self.family.read_error(obj)
        if err is not None:
            self.upstream_error = self.upstream_error or err
        return obj

    def _tail_usage(self, tail: bytes) -> None:
        """Usage of a document too big to keep: the last value of each usage key found
        in its tail window, decoded with raw_decode and fed as one object."""
        text = tail.decode("utf-8", "replace")
        found: dict[str, Any] = {}
        decoder = json.JSONDecoder()
        for marker in self._key_markers:
            key = marker.decode("utf-8", "replace")
            at = len(text)
            for _ in range(8):  # the last non-null occurrence, looking back a little
                at = text.rfind(key, 0, at)
                if at < 0:
                    break
                i = at + len(key)
                while i < len(text) and text[i] in " \t\r\n":
                    i += 1
                if i >= len(text) or text[i] != ":":
                    continue
                i += 1
                while i < len(text) and text[i] in " \t\r\n":
                    i += 1
                try:
                    value, _ = decoder.raw_decode(text, i)
                except (ValueError, RecursionError):
                    continue
                if value is not None:
                    found[key[1:-1]] = value
                    break
        if found:
            self.reader.feed(found)
