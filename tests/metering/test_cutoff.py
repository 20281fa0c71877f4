"""Cutting off a stream that outruns its hold (seatbelt/metering/cutoff.py, composed by the
scanner): real wire captures with their content frame repeated past the allowance."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seatbelt.apis import route_request
from seatbelt.apis.anthropic import Anthropic
from seatbelt.apis.base import ErrorShape
from seatbelt.codec import framing as frames
from seatbelt.metering.cutoff import OutputWatch, stop_error
from seatbelt.metering.scanner import Scanner
from tests.wire import FIXTURES

STREAMS = ["openai_chat_stream", "openai_chat_stream_no_usage", "openai_completions_stream",
           "anthropic_messages_stream", "responses_stream", "gemini_stream",
           "ollama_chat_stream"]
ALLOWANCE = 5


def split(body: bytes, ndjson: bool) -> list[bytes]:
    sep = b"\n" if ndjson else (b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n")
    parts = body.split(sep)
    return [p + sep for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def long_stream(name: str, content_frames: int) -> tuple[list[bytes], bytes]:
    """The capture with its first plain content frame repeated; and that frame."""
    fx = FIXTURES[name]
    got = split(fx.body, "ndjson" in fx.content_type)
    route = route_request("POST", fx.path, {})
    assert route is not None
    rx, markers = route.family.output_text, route.family.usage_markers
    content = [i for i, f in enumerate(got) if any(rx.findall(f))]
    plain = [j for j in content if not any(m in got[j] for m in markers)]
    i = (plain or content)[0]
    return got[:i] + [got[i]] * content_frames + got[i + 1:], got[i]


def scanner(name: str, allowance: int | None, calls: list[int] | None = None,
            coding: str = "", hide: bool = False) -> Scanner:
    fx = FIXTURES[name]
    route = route_request("POST", fx.path, {})
    assert route is not None
    facts = route.family.parse_request(route, dict(fx.request))
    on_cut = (lambda: calls.append(1)) if calls is not None else None
    return Scanner(route.family, route, facts, content_type=fx.content_type,
                   content_encoding=coding, hide_injected_usage=hide, allowance=allowance,
                   on_cut=on_cut)


def run(sc: Scanner, pieces: list[bytes]) -> list[bytes]:
    """Feed pieces as mitmproxy does; what went to the client, chunk by chunk."""
    out: list[bytes] = []
    for p in pieces:
        got = sc(p)
        out.extend([got] if isinstance(got, bytes) else got)
    end = sc(b"")
    return out + ([end] if end else [])


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("piece", [0, 65536])
def test_a_stream_past_its_allowance_ends_after_a_whole_frame_with_the_error(
        name: str, piece: int) -> None:
    body_frames, content = long_stream(name, 200)
    body = b"".join(body_frames)
    pieces = body_frames if not piece else [body[i:i + piece] for i in range(0, len(body), piece)]
    calls: list[int] = []
    sc = scanner(name, ALLOWANCE, calls)
    out = run(sc, pieces)
    assert sc.cut_off and calls == [1]
    stop = sc.watch.stop if sc.watch is not None else b""
    assert out[-2:] == [stop, b""]  # the error, then the end of the body
    sent = b"".join(out[:-2])
    assert body.startswith(sent) and sent.endswith(body_frames[0][-2:])  # a frame boundary
    seen = sent.count(content)
    if name == "gemini_stream" and piece == 0:
        assert 1 <= seen <= ALLOWANCE + 1  # its running candidatesTokenCount passed first
    elif piece == 0:
        assert seen == ALLOWANCE + 1  # cut as soon as the count passed
    else:
        assert seen > ALLOWANCE  # cut after the read that passed it
    assert sc(body_frames[-1]) == []  # nothing more goes out


@pytest.mark.parametrize("name", STREAMS)
def test_a_stream_within_its_allowance_is_untouched(name: str) -> None:
    body_frames, content = long_stream(name, 40)
    reported = FIXTURES[name].usage.get("completion_tokens") or 0
    sc = scanner(name, max(len(body_frames), reported))  # at most one text frame a token
    out = run(sc, body_frames)
    assert b"".join(out) == b"".join(body_frames) and not sc.cut_off


def test_the_stop_frame_is_what_each_sdk_raises_on() -> None:
    shape = stop_error(7)
    for name in ("openai_chat_stream", "responses_stream", "gemini_stream", "ollama_chat_stream"):
        sc = scanner(name, 7)
        assert sc.watch is not None
        payload = sc.watch.stop.strip()
        if payload.startswith(b"data: "):
            payload = payload[len(b"data: "):]
        err = json.loads(payload)["error"]
        assert (err if isinstance(err, str) else err["message"]) == shape.message
    ant = Anthropic().stream_error("sse", shape)
    assert ant.startswith(b"event: error\ndata: ")
    assert json.loads(ant.split(b"data: ", 1)[1])["type"] == "error"


def test_an_upstream_running_count_cuts_before_any_frame_bound() -> None:
    events = [
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        b'{"input_tokens":9,"output_tokens":1}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"a long piece of many tokens"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":80}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"more"}}\n\n',
    ]
    more = events[3:] * 200
    sc = scanner("anthropic_messages_stream", 50)
    out = run(sc, events[:3] + more)
    sent = b"".join(out[:-2])
    assert out[-2].startswith(b"event: error") and sc.cut_off
    # Read at the next scan: the fast path's window holds less than the allowance's frames.
    assert sent.startswith(b"".join(events[:3])) and sent.count(b'"more"') < 50
    assert sc.usage.completion_tokens == 80


def test_a_json_array_stream_stays_one_array() -> None:
    fx = FIXTURES["gemini_stream_array"]
    element = frames.array_elements(fx.body)[0]
    pieces = [b"[" + element] + [b",\r\n" + element] * 30 + [b"]"]
    sc = scanner("gemini_stream_array", 3)
    out = run(sc, pieces)
    doc = json.loads(b"".join(out))
    assert "error" in doc[-1] and len(doc) > 4 and sc.cut_off


def test_a_compressed_stream_is_stopped_without_a_frame() -> None:
    body_frames, _ = long_stream("openai_chat_stream_no_usage", 200)
    comp = gzip.compress(b"".join(body_frames))
    calls: list[int] = []
    sc = scanner("openai_chat_stream_no_usage", ALLOWANCE, calls, coding="gzip")
    out = run(sc, [comp[i:i + 64] for i in range(0, len(comp), 64)])
    assert sc.cut_off and calls == [1]
    assert len(b"".join(out)) < len(comp)  # the rest was dropped


def test_hiding_injected_usage_and_cutting_compose() -> None:
    body_frames, _ = long_stream("openai_chat_stream", 100)
    sc = scanner("openai_chat_stream", ALLOWANCE, hide=True)
    out = run(sc, body_frames)
    sent = b"".join(out[:-2])
    assert sc.cut_off and out[-2].startswith(b"data: {\"error\"")
    for event in re.split(rb"\n\n", sent):
        if event.startswith(b"data: {"):
            json.loads(event[len(b"data: "):])  # every frame that went out is whole


def test_no_watch_without_a_hold_or_for_a_buffered_document() -> None:
    assert scanner("openai_chat_stream", None).watch is None
    assert scanner("openai_chat", 5).watch is None


def test_watch_counts() -> None:
    w = OutputWatch(Anthropic(), "sse", 3)
    assert not w.lines(7) and w.lines(1)  # 8 newlines: 4 frames could have passed 3
    w.text_frames(3)
    assert not w.passed
    w.reported(3)
    assert not w.passed
    w.reported(4)
    assert w.passed and w.headroom() == 17  # one SSE text frame: `data:`, 10 bytes, `\n\n`
    assert isinstance(stop_error(3), ErrorShape)


def test_room_counts_the_frames_unscanned_newlines_could_have_ended() -> None:
    w = OutputWatch(Anthropic(), "sse", 3)
    # Allowance 3: 4 frames at most before the cut, one of them under way.
    assert w.room(0) == 3 * 17
    assert w.room(1) == w.room(2) == 2 * 17  # a frame's end may have begun before
    assert w.room(4) == 17 and w.room(5) == 0  # two, then three frames ended: scan now
    w.lines(2)  # the scan saw one frame
    assert w.room(0) == 2 * 17 and w.room(3) == 0


@pytest.mark.parametrize("name", STREAMS)
def test_a_held_stream_near_its_allowance_is_scanned_in_few_batches_and_cut_on_time(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window of unscanned bytes shrinks as a stream nears its allowance; counting
    the newlines that went by (Scanner._stretch) instead of scanning each shrunk batch
    keeps the batches few, and the cut still comes with the first frame past it."""
    body_frames, content = long_stream(name, 400)
    regions: list[int] = []
    real = Scanner._region
    monkeypatch.setattr(Scanner, "_region", lambda sc, region, *a, **k: (
        regions.append(len(region)), real(sc, region, *a, **k))[1])
    within = scanner(name, 500)
    assert b"".join(run(within, body_frames[:300])) == b"".join(body_frames[:300])
    assert not within.cut_off and len(regions) <= 10, regions  # 10-28 before _stretch
    sc = scanner(name, 256)
    out = run(sc, body_frames)
    assert sc.cut_off
    if name != "gemini_stream":  # its running candidatesTokenCount passes first
        assert b"".join(out[:-2]).count(content) == 257


@pytest.mark.parametrize("per_chunk", [1, 25])
def test_an_upstream_that_switches_to_tiny_frames_near_the_allowance_is_cut_on_time(
        per_chunk: int) -> None:
    """The windows near the allowance are sized from the smallest text frame, whatever the
    frames before them looked like: an upstream that sends long frames first and then packs
    minimal ones (one per chunk, or many per chunk) is still cut where it passes."""
    body_frames, content = long_stream("openai_chat_stream", 150)
    head = body_frames[:body_frames.index(content) + 150]
    tiny = b'data:{"choices":[{"delta":{"content":"x"}}]}\n\n'
    tail = [tiny * per_chunk] * (400 // per_chunk)
    sc = scanner("openai_chat_stream", 256)
    out = run(sc, head + tail)
    assert sc.cut_off
    sent = b"".join(out[:-2])
    assert sent.count(content) == 150
    text_frames = 150 + sent.count(tiny)
    if per_chunk == 1:
        assert text_frames == 257  # cut with the first frame past the allowance
    else:  # cut after the read that passed it: at most that read's frames too many
        assert 257 <= text_frames <= 256 + per_chunk


@pytest.mark.parametrize("name", [n for n in STREAMS if "ollama" not in n])
def test_a_stream_in_lone_crs_is_cut_on_time_like_one_in_lfs(name: str) -> None:
    """SSE lines may end in a lone CR (the SDKs read such a stream): its frames are counted
    by the same bounds, its newlines being CRs, so it cannot outrun its hold either."""
    body_frames, content = long_stream(name, 400)
    as_cr = [f.replace(b"\r\n", b"\n").replace(b"\n", b"\r") for f in body_frames]
    content = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r")
    within = scanner(name, 500)
    assert b"".join(run(within, as_cr[:300])) == b"".join(as_cr[:300])
    assert not within.cut_off and within._framer.newline == b"\r"
    sc = scanner(name, 256)
    out = run(sc, as_cr)
    assert sc.cut_off and out[-2:] == [sc.watch.stop if sc.watch else b"", b""]
    if name != "gemini_stream":  # its running candidatesTokenCount passes first
        assert b"".join(out[:-2]).count(content) == 257


@pytest.mark.parametrize("name", STREAMS)
def test_newlines_a_held_stream_counted_unscanned_are_not_counted_again(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path's count of the newlines that went by unscanned (Scanner._stretch) goes
    with that batch to its scan, which then counts only the bytes around it: each region's
    count given so is the region's own, so the bound is the one counting would give."""
    body_frames, _ = long_stream(name, 400)
    given: list[tuple[int, int]] = []
    real = Scanner._region

    def spy(sc: Scanner, region: bytes, base: int, framer, newlines=None, last=False):
        if newlines is not None:
            given.append((newlines, region.count(b"\n")))
        return real(sc, region, base, framer, newlines, last)

    monkeypatch.setattr(Scanner, "_region", spy)
    sc = scanner(name, 500)
    assert b"".join(run(sc, body_frames[:300])) == b"".join(body_frames[:300])
    assert given and all(hint == counted for hint, counted in given), given


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=40),
       st.integers(0, 120), st.sampled_from(["sse", "ndjson"]))
def test_seen_is_the_cheap_bound_until_it_could_pass_then_the_exact_count(
        calls: list[tuple[bool, int]], allowance: int, framing: str) -> None:
    """OutputWatch.seen, kept up to date by lines() and text_frames(), is at every point the
    newline bound while that is within the allowance, and the exact frame count after."""
    w = OutputWatch(Anthropic(), framing, allowance)  # type: ignore[arg-type]
    for newlines, n in calls:
        if newlines:
            w.lines(n)
        else:
            w.text_frames(n)
        bound = w.newlines // w.per_frame
        assert w.seen == (w.frames if bound > allowance else bound)
