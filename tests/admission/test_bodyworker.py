import asyncio
import gzip
import json

import pytest

from seatbelt.admission import bodyworker, estimate
from seatbelt.admission.bodyworker import RAW_BYTES, RawJSON, dump, read_body, shallow
from seatbelt.apis import route_request
from seatbelt.codec.requestbody import MAX_DEPTH, parse_json_object

CHAT = route_request("POST", "/v1/chat/completions", {})
GEMINI = route_request("POST", "/v1beta/models/gemini-2.0-flash:generateContent", {})
assert CHAT is not None and GEMINI is not None

BIG = "x" * (RAW_BYTES * 4)


def chat(**fields):  # type: ignore[no-untyped-def]
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": BIG}], **fields}


def test_read_body_gives_the_facts_and_bound_the_loop_would():
    body = chat(max_tokens=7, stream=True)
    raw = json.dumps(body).encode()
    read = read_body(CHAT, raw, "")
    assert read.kind == "ok" and read.facts == CHAT.family.parse_request(CHAT, body)
    assert read.prompt_bound == estimate.prompt_bound(CHAT, body, raw)
    assert isinstance(read.body["messages"], RawJSON)  # large: its JSON text
    assert read.body["model"] == "gpt-4o-mini" and read.body["max_tokens"] == 7


def test_a_compressed_body_is_decoded_there():
    raw = json.dumps(chat(max_tokens=3)).encode()
    assert read_body(CHAT, gzip.compress(raw), "gzip").kind == "ok"


@pytest.mark.parametrize("raw, kind", [
    (b"not json", "unreadable"),
    (b'{"a":1,"a":2}', "unreadable"),
    (b'{"x":' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"}", "unreadable"),
    (json.dumps(chat(max_tokens="5")).encode(), "unreadable"),
    (gzip.compress(b" " * (40 * 1024 * 1024)), "too_large"),
])
def test_what_the_loop_refuses_the_worker_answers_as_data(raw, kind):
    read = read_body(CHAT, raw, "gzip" if raw[:2] == b"\x1f\x8b" else "")
    assert read.kind == kind and read.message
    assert read.facts is None and read.body is None


def test_the_depth_refusal_names_the_limit():
    raw = b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}"
    assert f"deeper than {MAX_DEPTH} levels" in read_body(CHAT, raw, "").message


def test_a_shallow_body_edited_like_a_whole_one_encodes_the_same():
    """Every edit seatbelt makes (a limit written in, stream_options, Gemini's
    generationConfig) lands the same on the shallow body as on the whole one."""
    cases = [
        (CHAT, chat(stream=True, stream_options={"x": BIG}), "chat"),
        (GEMINI, {"contents": [{"parts": [{"text": BIG}]}],
                  "generationConfig": {"temperature": 0.5, "responseSchema": {"d": BIG}}},
         "gemini"),
    ]
    for route, body, _ in cases:
        whole, part = json.loads(json.dumps(body)), shallow(json.loads(json.dumps(body)))
        for b in (whole, part):
            route.family.write_limit(route, b, 99)
            route.family.request_usage(route, b)
        assert parse_json_object(dump(part)) == parse_json_object(dump(whole))
        assert dump(part) == dump(whole)


def test_a_lone_surrogate_travels_escaped():
    body = {"model": "m", "messages": [{"role": "user", "content": "\ud800" + BIG}]}
    part = shallow(body)
    part["max_tokens"] = 5
    out = dump(part)
    assert b"\\ud800" in out
    assert parse_json_object(out)["messages"][0]["content"] == "\ud800" + BIG


def test_small_bodies_are_read_in_the_loop_and_large_or_compressed_ones_not():
    assert not bodyworker.offloaded(b"{}" * 100, "")
    assert bodyworker.offloaded(b" " * (bodyworker.OFFLOAD_BYTES + 1), "")
    assert bodyworker.offloaded(b"{}", "gzip")


def test_the_worker_process_reads_a_body():
    """The real worker: a spawned process, its answer across the pipe."""
    worker = bodyworker.BodyWorker()
    raw = json.dumps(chat(max_tokens=4)).encode()

    async def go():  # type: ignore[no-untyped-def]
        worker.start()
        return await worker.read(CHAT, raw, "")

    try:
        read = asyncio.run(go())
    finally:
        worker.close()
    assert read.kind == "ok" and read.facts is not None and read.facts.max_output == 4
    assert read.prompt_bound == estimate.prompt_bound(CHAT, chat(max_tokens=4), raw)


def test_the_worker_exits_when_its_proxy_is_killed():
    """A SIGKILLed proxy cannot stop its pool: the worker notices its parent is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (f"import sys; sys.path.insert(0, {str(root)!r})\n"
            "import time\nfrom seatbelt.admission import bodyworker\n"
            "w = bodyworker.BodyWorker()\n"
            "print(w._executor().submit(__import__('os').getpid).result(60), flush=True)\n"
            "time.sleep(600)\n")
    proxy = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None
        worker = int(proxy.stdout.readline())
        os.kill(worker, 0)  # alive while its proxy is
    finally:
        proxy.send_signal(signal.SIGKILL)
        proxy.wait(10)
    deadline = time.monotonic() + 10  # it looks once a second (PARENT_CHECK_SECONDS)
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError(f"worker {worker} outlived its killed proxy")
