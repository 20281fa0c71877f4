"""How an LLM response body is cut into frames, and how an error inside one reads.

Pure functions (no I/O, no state beyond their arguments), shared by the scanner
(seatbelt/metering/scanner.py, which meters a copy of the stream incrementally) and the
content view (seatbelt/ui/contentview.py, which shows a whole body). One reading of each
format means the same upstream error reads the same in the audit log and in mitmweb.

Formats: SSE events (separated by a blank line, LF or CRLF; a stream whose lines end in a
lone CR is read through CR_TO_LF), NDJSON lines, a top-level JSON array streamed in pieces
(Gemini without alt=sse) and one whole JSON document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

ERROR_TEXT_MAX = 200  # an error description is cut to this many characters


# ------------------------------------------------------------------ frame boundaries

# The SSE spec ends a line with CRLF, LF or a lone CR, and the SDKs' decoders take all
# three. A stream in lone CRs is read with each CR as an LF: the same length, so every
# offset (the frames hidden or cut, seatbelt/metering/scanner.py) stays the stream's own.
CR_TO_LF = bytes.maketrans(b"\r", b"\n")


def sse_lone_cr(buf: bytes) -> bool | None:
    """Does an SSE stream end its lines with a lone CR? Judged by its first line end;
    None while buf has not shown one (a CR last in buf may be half of a CRLF)."""
    cr = buf.find(b"\r")
    lf = buf.find(b"\n", 0, cr if cr >= 0 else len(buf))
    if lf >= 0:
        return False
    if cr < 0 or cr + 1 == len(buf):
        return None
    return buf[cr + 1] != 10


def sse_first_end(buf: bytes, start: int) -> int:
    """Offset just past the first SSE event separator at or after start, or -1."""
    # Line by line: searching for each separator kind on its own scanned to the end
    # of the batch for the kind a stream does not use (quadratic over many frames).
    n = len(buf)
    j = buf.find(b"\n", start)
    while j >= 0:
        if j + 1 < n and buf[j + 1] == 10:  # \n\n
            return j + 2
        if j + 2 < n and buf[j + 1] == 13 and buf[j + 2] == 10:  # \n\r\n
            return j + 3
        j = buf.find(b"\n", j + 1)
    return -1


def sse_frame_start(buf: bytes, i: int) -> int:
    """Offset where the SSE event holding offset i starts."""
    j = buf.rfind(b"\n", 0, i)  # the last \n of a separator ending at or before i
    while j > 0:
        if buf[j - 1] == 10 or (j > 1 and buf[j - 1] == 13 and buf[j - 2] == 10):
            return j + 1
        j = buf.rfind(b"\n", 0, j)
    return 0


def sse_last_end(buf: bytes) -> int:
    """Offset just past the last SSE event separator in buf, or 0 if it has none."""
    a = buf.rfind(b"\n\n")
    b = buf.rfind(b"\n\r\n", max(a, 0))  # only one after `a` can end later
    return a + 2 if a > b else (b + 3 if b >= 0 else 0)


def line_first_end(buf: bytes, start: int) -> int:
    """Offset just past the first NDJSON line end at or after start, or -1."""
    i = buf.find(b"\n", start)
    return i + 1 if i >= 0 else -1


def line_frame_start(buf: bytes, i: int) -> int:
    return buf.rfind(b"\n", 0, i) + 1


def line_last_end(buf: bytes) -> int:
    return buf.rfind(b"\n") + 1


# ------------------------------------------------------------------ frame contents


def sse_payload(event: bytes) -> tuple[bytes | None, str | None]:
    """(the joined `data:` of one SSE event, or None when it has none or is [DONE];
    the value of a non-standard `error:` field (llama.cpp), or None)."""
    data: list[bytes] = []
    err = None
    for line in event.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line or line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"error":  # llama.cpp's non-standard error field
            err = value.decode("utf-8", "replace")[:ERROR_TEXT_MAX] or "error"
    joined = b"\n".join(data)
    if not joined.strip() or joined.strip() == b"[DONE]":
        return None, err
    return joined, err


def sse_events(body: bytes) -> list[bytes]:
    """A whole SSE body cut into its events (the last one may be unterminated); a body in
    lone CRs comes back with LFs (CR_TO_LF)."""
    if sse_lone_cr(body):
        body = body.translate(CR_TO_LF)
    out: list[bytes] = []
    at = 0
    while True:
        end = sse_first_end(body, at)
        if end < 0:
            break
        out.append(body[at:end])
        at = end
    if body[at:].strip():
        out.append(body[at:])
    return out


def ndjson_lines(body: bytes) -> list[bytes]:
    """The non-blank lines of a whole NDJSON body."""
    return [x for x in body.split(b"\n") if x.strip()]


_OUT = re.compile(rb'[{}\[\]"]')
_IN = re.compile(rb'["\\]')


class ArraySplitter:
    """Cuts a top-level JSON array delivered in pieces (Gemini without alt=sse) into its
    element objects, by tracking brace depth outside strings; incremental and pure.

    A top-level object that is not in an array counts as one element too.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.in_array = False
        self.in_str = False
        self.skip = 0  # an escape's second byte falls in the next piece
        self.open = False  # an element began in an earlier piece and has not ended

    def feed(self, data: bytes) -> tuple[list[tuple[int, int]], int | None]:
        """(spans of the elements that end in this piece: start 0 when the element began
        in an earlier one; start of an element still open at its end, or None)."""
        spans: list[tuple[int, int]] = []
        n = len(data)
        i = self.skip
        self.skip = 0
        start = 0 if self.open else -1
        while i < n:
            if self.in_str:
                m = _IN.search(data, i)
                if m is None:
                    break
                if data[m.start()] == 0x5C:  # backslash: skip the escaped byte
                    i = m.end() + 1
                    if i > n:
                        self.skip = i - n
                    continue
                self.in_str = False
                i = m.end()
                continue
            m = _OUT.search(data, i)
            if m is None:
                break
            j, i = m.start(), m.end()
            c = data[j]
            if c == 0x22:  # "
                self.in_str = True
            elif c in (0x7B, 0x5B):  # { [
                if self.depth == 0 and c == 0x5B:
                    self.in_array = True
                elif c == 0x7B and self.depth == (1 if self.in_array else 0):
                    start = j
                self.depth += 1
            else:
                self.depth = max(0, self.depth - 1)
                if start >= 0 and self.depth == (1 if self.in_array else 0):
                    spans.append((start, i))
                    start = -1
                if self.depth == 0:
                    self.in_array = False
        self.open = start >= 0
        return spans, (start if start >= 0 else None)


def array_elements(body: bytes) -> list[bytes]:
    """The complete element objects of a whole (maybe cut) top-level JSON array."""
    spans, _ = ArraySplitter().feed(body)
    return [body[a:b] for a, b in spans]


# ------------------------------------------------------------------ errors


def error_of(obj: Any) -> str | None:
    """A short description of an error object sent inside a 2xx body, else None.

    Covers OpenAI-style `{"error": {...}}`, Anthropic `{"type": "error", ...}`,
    Ollama `{"error": "..."}`, Gemini array elements `{"error": {...}}` and the Responses
    API's `{"type": "error", "code", "message"}` and `response.failed` events.
    """
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if err in (None, False, "", {}):
        inner = obj.get("response")
        if obj.get("type") == "response.failed" and isinstance(inner, dict):
            err = inner.get("error") or "response.failed"
        elif obj.get("type") != "error":
            return None
        elif "message" in obj:
            err = {"code": obj.get("code"), "message": obj.get("message")}
        else:
            err = "error"
    return error_text(err)


def error_text(err: Any) -> str:
    """One line for an upstream error value, spelled the same wherever it is read (the
    scanner for the audit and logs, the content view): its string `code` (OpenAI,
    Responses: the most specific), else its `type` (Anthropic, OpenAI), else its `status`
    (Gemini), then the message; a non-object as its text."""
    if isinstance(err, dict):
        code = err.get("code")
        kind = (code if isinstance(code, str) and code else None) or err.get("type") \
            or err.get("status") or "error"
        text = f"{kind}: {err.get('message') or ''}".strip()
    else:
        text = str(err)
    return text[:ERROR_TEXT_MAX]


def events_of(body: bytes, framing: str) -> Iterator[tuple[bytes | None, str | None]]:
    """(payload, SSE error field) per frame of a whole SSE or NDJSON body."""
    if framing == "sse":
        for event in sse_events(body):
            yield sse_payload(event)
    else:
        for line in ndjson_lines(body):
            yield line.strip(), None
