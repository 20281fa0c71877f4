"""Scanner throughput in-process: MB/s of response bytes through `Scanner.__call__`.

Bodies are built from the exact wire captures in tests/wire: the first content frame of
each family's stream is repeated until the stream has FRAMES content frames, the rest of
the capture (start frames, finish, usage, [DONE]) stays as it was. Two feeds:

- `frame`: one call per frame, what mitmproxy does with a server that flushes per token
  (one HTTP chunk per frame): per-call cost dominates;
- `64k`: 64 KiB pieces of a FRAMES_64K-frame stream, what it does when frames arrive
  faster than it reads.

Each stream is finished and its results read the way settlement reads them (output
text only when no usage came), so deferred work is paid for.

gzip JSON: a buffered chat completion with a long answer, gzip-compressed, fed in 16 KiB
pieces; its MB/s counts the decoded body (the work is inflate + one parse).
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass

from seatbelt.apis import route_request
from seatbelt.metering.scanner import Scanner
from tests.wire import FIXTURES

FRAMES = 200
FRAMES_64K = 2000  # a longer stream for 64 KiB reads: several reads per stream
HELD_ALLOWANCE = 4096

# family label -> fixture name (its request gives the route and the facts)
STREAMS = {
    "openai-sse": "openai_chat_stream",
    "anthropic-sse": "anthropic_messages_stream",
    "responses-sse": "responses_stream",
    "gemini-sse": "gemini_stream",
    "ollama-ndjson": "ollama_chat_stream",
    # no usage frame: the output text must be counted for the estimate
    "openai-sse-no-usage": "openai_chat_stream_no_usage",
}


@dataclass
class Case:
    name: str
    path: str
    request: dict
    content_type: str
    content_encoding: str
    pieces: list[bytes]
    decoded_size: int  # bytes of the decoded body, for MB/s
    allowance: int | None = None  # a capped key's stream: watched for its hold (cutoff.py)

    def scanner(self) -> Scanner:
        route = route_request("POST", self.path, {})
        assert route is not None, self.path
        facts = route.family.parse_request(route, dict(self.request))
        return Scanner(route.family, route, facts, content_type=self.content_type,
                       content_encoding=self.content_encoding, hide_injected_usage=False,
                       allowance=self.allowance)


def split_frames(body: bytes, ndjson: bool) -> list[bytes]:
    """Frames with their separators (SSE: blank line, LF or CRLF; NDJSON: newline)."""
    sep = b"\n" if ndjson else (b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n")
    parts = body.split(sep)
    frames = [p + sep for p in parts[:-1]]
    if parts[-1]:
        frames.append(parts[-1])
    return frames


def long_stream(fixture: str, frames: int = FRAMES) -> tuple[list[bytes], Case]:
    fx = FIXTURES[fixture]
    ndjson = "ndjson" in fx.content_type
    got = split_frames(fx.body, ndjson)
    route = route_request("POST", fx.path, {})
    assert route is not None
    rx = route.family.output_text
    markers = route.family.usage_markers
    content = [i for i, f in enumerate(got) if any(rx.findall(f))]  # non-empty text
    plain = [i for i in content if not any(m in got[i] for m in markers)]
    i = (plain or content)[0]
    body_frames = got[:i] + [got[i]] * frames + got[i + 1 :]
    case = Case(fixture, fx.path, fx.request, fx.content_type, "", body_frames,
                sum(map(len, body_frames)))
    return body_frames, case


def cases(frames: int = FRAMES) -> list[Case]:
    out = []
    for label, fixture in STREAMS.items():
        _, case = long_stream(fixture, frames)
        case.name = f"{label} frame"
        out.append(case)
        body = b"".join(long_stream(fixture, FRAMES_64K)[0])
        out.append(Case(f"{label} 64k", case.path, case.request, case.content_type, "",
                        [body[i : i + 65536] for i in range(0, len(body), 65536)], len(body)))
    out.append(gzip_json_case())
    # A capped key's streams carry an output allowance (the default 4096-token limit): the
    # scanner watches them for a stream that outruns its hold.
    for label in ("openai-sse", "anthropic-sse"):
        _, case = long_stream(STREAMS[label], frames)
        out.append(Case(f"{label} frame held", case.path, case.request, case.content_type, "",
                        case.pieces, case.decoded_size, allowance=HELD_ALLOWANCE))
    return out


def gzip_json_case(answer_bytes: int = 64 << 10) -> Case:
    fx = FIXTURES["openai_chat"]
    doc = json.loads(fx.body)
    word = "budget "
    doc["choices"][0]["message"]["content"] = word * (answer_bytes // len(word))
    body = json.dumps(doc).encode()
    wire = gzip.compress(body, 6)
    pieces = [wire[i : i + 16384] for i in range(0, len(wire), 16384)]
    return Case("openai-json gzip", fx.path, fx.request, "application/json", "gzip", pieces,
                len(body))


def settle_reads(sc: Scanner) -> None:
    """What settlement reads once a stream ends (meter.decide)."""
    usage = sc.usage
    if sc.usage_invalid or usage.prompt_tokens is None or usage.completion_tokens is None:
        _ = sc.output_chars


def measure(case: Case, seconds: float) -> dict[str, float]:
    """Run whole streams through fresh scanners for about `seconds`; best of 3 runs."""
    wire = sum(map(len, case.pieces))
    best = 0.0
    streams = 0
    for _ in range(3):
        n = 0
        clock = time.perf_counter
        t0 = clock()
        deadline = t0 + seconds / 3
        while True:
            sc = case.scanner()
            for piece in case.pieces:
                sc(piece)
            sc(b"")
            settle_reads(sc)
            n += 1
            if clock() >= deadline:
                break
        elapsed = clock() - t0
        best = max(best, n / elapsed)
        streams += n
    check = case.scanner()
    for piece in case.pieces:
        check(piece)
    check(b"")
    no_usage = "no-usage" in case.name
    if (check.usage.prompt_tokens is None) != no_usage or check.scan_error \
            or not check.output_seen or not check.output_chars:
        raise RuntimeError(f"scanner bench {case.name}: usage not read ({check.usage}, "
                           f"{check.scan_error})")
    return {
        "mb_per_s": round(best * case.decoded_size / 1e6, 1),
        "wire_mb_per_s": round(best * wire / 1e6, 1),
        "calls_per_stream": len(case.pieces),
        "stream_kb": round(case.decoded_size / 1e3, 1),
        "us_per_call": round(1e6 / (best * len(case.pieces)), 2),
    }


def run(seconds: float = 1.5) -> dict[str, dict[str, float]]:
    return {c.name: measure(c, seconds) for c in cases()}


if __name__ == "__main__":
    for name, r in run().items():
        print(f"{name:24} {r['mb_per_s']:>8} MB/s  {r['us_per_call']:>7} us/call "
              f"({r['calls_per_stream']} calls, {r['stream_kb']} kB)")
