"""Ending a stream that outran its hold (issue 13, item 6).

The scanner (seatbelt/metering/scanner.py) composes one OutputWatch per response that has a
hold. The watch decides, from two lower bounds on the output tokens generated so far, when
the stream has passed the output allowance its hold reserved:

- the upstream's own running count where the wire has one (Anthropic `message_delta`
  usage.output_tokens, Gemini `usageMetadata` candidates + thoughts: what the usage
  reader holds while the stream runs);
- the frames that carried output text: a server streams at most one frame per token
  (a token whose text is not complete yet is sent with the next one), so their number
  never exceeds the tokens generated.

Counting frames exactly costs a regex pass, so it is only done once a cheap upper bound
(the newlines seen: every SSE event ends with two, every NDJSON line with one) has passed
the allowance; a stream that obeys its limit never pays for it on most of its length.
"""

from __future__ import annotations

from collections.abc import Callable

from seatbelt.apis.base import ApiFamily, ErrorShape, Framing

# The shortest output string any family's output_text pattern counts, e.g. `"text":"x"`:
# a text frame is at least this long plus its framing, so that many bytes hold one more
# at most. SSE: `data:` and the blank line that ends the event; NDJSON: its newline; a JSON
# array: the comma between elements.
MIN_TEXT_BYTES = 10
FRAMING_BYTES = {"sse": 7, "ndjson": 1, "json-array": 1}
CUT_OFF = "cut_off"  # the audit edit of a stream ended here (docs/contract.md §7)


def stop_error(allowance: int) -> ErrorShape:
    """What the client's SDK raises when its stream is cut off."""
    return ErrorShape(
        400, "output_limit_exceeded",
        f"seatbelt: the upstream generated more than the {allowance} output tokens this "
        "request reserved; the stream was cut off and the tokens it generated were charged")


class OutputWatch:
    """Pure state: has the output passed `allowance` tokens, and what ends the stream."""

    def __init__(self, family: ApiFamily, framing: Framing, allowance: int,
                 on_cut: Callable[[], None] | None = None) -> None:
        self.allowance = allowance
        self.on_cut = on_cut
        self.family = family
        self.framing = framing
        self.per_frame = 2 if framing == "sse" else 1  # newlines a frame has at least
        self.min_frame = MIN_TEXT_BYTES + FRAMING_BYTES.get(framing, 0)
        self.frame_end = b"\n\n" if framing == "sse" else b"\n"
        self.array = framing == "json-array"
        self.newlines = 0  # upper bound on frames seen, times per_frame
        self.frames = 0  # frames that carried output text (exact, counted when needed)
        # Frames with text in what was scanned: the cheap bound (newlines // per_frame),
        # or, once that could have passed the allowance, the exact count. Kept up to date
        # by lines() and text_frames(): headroom() and room() read it per window.
        self.seen = 0
        self.passed = False  # the output passed the allowance: the stream must end
        self.ended = False  # the stop frame went out: nothing more is forwarded

    def lines(self, n: int) -> bool:
        """Take the newlines of a batch of complete frames: True when the exact frame
        count is needed (the cheap bound could have passed the allowance)."""
        self.newlines += n
        bound = self.newlines // self.per_frame
        exact = bound > self.allowance
        self.seen = self.frames if exact else bound
        return exact

    def headroom(self) -> int:
        """Bytes the scanner may forward unscanned before the frames that carried text
        could pass the allowance: each takes min_frame bytes at least, and no more of them
        went by than the cheap bound says (or, once it is counted, the exact number)."""
        return max((self.allowance + 1 - self.seen) * self.min_frame, 1)

    def room(self, unscanned_newlines: int) -> int:
        """Bytes that may go by unscanned after these, when `unscanned_newlines` newlines
        went by unscanned since the last scan: they end at most that many frames over
        per_frame (rounded up: the first may have begun its end before), one more may be
        under way, and each further frame takes min_frame bytes at least. 0: scan now.
        What the scanner checks when headroom() runs out, instead of scanning the batch:
        a count of newlines is a C pass, a scan is Python work per batch."""
        ended = -(-unscanned_newlines // self.per_frame)
        left = self.allowance - self.seen - ended  # allowance + 1, less the one under way
        return left * self.min_frame if left > 0 else 0

    def text_frames(self, n: int) -> None:
        self.frames += n
        if self.newlines // self.per_frame > self.allowance:
            self.seen = self.frames
        if self.frames > self.allowance:
            self.passed = True

    def reported(self, completion: int | None) -> None:
        """The upstream's running output count, read while the stream runs."""
        if completion is not None and completion > self.allowance:
            self.passed = True

    def end(self, elements: int) -> bytes:
        """The bytes that end the stream: the family's error frame (in a JSON array,
        after a comma when elements went before it). Tells on_cut to close the upstream."""
        self.ended = True
        if self.on_cut is not None:
            self.on_cut()
        return (b"," if self.array and elements else b"") + self.stop

    @property
    def stop(self) -> bytes:
        """The family's error frame (built only for a stream that needs it)."""
        return self.family.stream_error(self.framing, stop_error(self.allowance))
