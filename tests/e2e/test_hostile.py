"""Hostile input through a real mitmdump (issue 4, points 5-6).

One proxy in regular (explicit proxy) mode, so requests can go to the stand-in API and to a
small bomb server of this module alike. Every bad body gets its documented answer
(contract §4.3, §5) before any byte goes upstream; the proxy stays up, its memory and its
metric series stay bounded; nothing seatbelt writes (log, audit, metrics, flow comments,
saved flows) carries a raw credential.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    free_port,
    http_module,
    mitmdump_binary,
    policy_text,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

CAPPED, FREE, SPY = Key("capped", cap=50_000), Key("free"), Key("spy")
KEYS = [CAPPED, FREE, SPY]
MB = 1 << 20


def gzip_zeros(size: int) -> bytes:
    """A gzip stream of `size` zero bytes (about size/1000 bytes long)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MB)
    out = [c.compress(block) for _ in range(size // MB)]
    return b"".join(out) + c.flush()


BOMB = gzip_zeros(1 << 30)  # 1 GiB inflated


class _BombHandler(BaseHTTPRequestHandler):
    """200, text/event-stream, gzip: a 1 GiB decompression bomb."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(BOMB)))
        self.end_headers()
        self.wfile.write(BOMB)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def bomb_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BombHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    p = proxy_factory("hostile", policy_text(KEYS), mode="regular", start=False)
    p.extra_args = ["-w", str(p.workdir / "flows.mitm")]
    return p.start()


@pytest.fixture(scope="module")
def client(proxy: Proxy) -> Iterator[Any]:
    with http_module().Client(proxy=proxy.url, timeout=60) as c:
        yield c


def rss(proxy: Proxy, field: str = "VmRSS") -> int:
    """Resident memory of the mitmdump process in MiB (VmHWM: its peak so far)."""
    assert proxy.proc is not None
    for line in Path(f"/proc/{proxy.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {field} for mitmdump")


def post(client: Any, standin: StandIn, key: Key | str | None, body: bytes,
         headers: dict[str, str] | None = None, path: str = "/v1/chat/completions") -> Any:
    h = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        h["authorization"] = f"Bearer {key.credential if isinstance(key, Key) else key}"
    return client.post(standin.url + path, content=body, headers=h)


def chat_body(t: str, **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": t}], **fields}


def nested(depth: int) -> bytes:
    return b'{"model":"gpt-4o-mini","messages":' + b"[" * depth + b"]" * depth + b"}"


BAD_BODIES: dict[str, tuple[int, Any]] = {
    # name: (status, body or a callable making it from the test's tag)
    "not json": (400, lambda t: b"{this is not json " + t.encode()),
    "array": (400, lambda t: json.dumps([t]).encode()),
    "string": (400, lambda t: json.dumps(t).encode()),
    "null": (400, lambda t: b"null"),
    "nan": (400, lambda t: b'{"model":"gpt-4o-mini","max_tokens":NaN,"x":"' + t.encode()
            + b'"}'),
    "bad utf-8": (400, lambda t: b'{"model":"\xff\xfe","x":"' + t.encode() + b'"}'),
    "deep arrays": (400, lambda t: nested(200_000)[:-1] + b',"x":"' + t.encode() + b'"}'),
    "deep objects": (400, lambda t: b'{"x":"' + t.encode() + b'","a":' + b'{"a":' * 200_000
                     + b"1" + b"}" * 200_000 + b"}"),
    "duplicate keys": (400, lambda t: b'{"model":"gpt-4o-mini","model":"gpt-4o","messages":'
                       b'[{"role":"user","content":"' + t.encode() + b'"}]}'),
    "max_tokens string": (400, lambda t: json.dumps(chat_body(t, max_tokens="10")).encode()),
    "max_tokens bool": (400, lambda t: json.dumps(chat_body(t, max_tokens=True)).encode()),
    "max_tokens float": (400, lambda t: json.dumps(chat_body(t, max_tokens=10.5)).encode()),
    "max_tokens negative": (400, lambda t: json.dumps(chat_body(t, max_tokens=-1)).encode()),
    "max_tokens 1e30": (400, lambda t: json.dumps(chat_body(t, max_tokens=1e30)).encode()),
    "n string": (400, lambda t: json.dumps(chat_body(t, max_tokens=5, n="2")).encode()),
    "40 MB": (413, lambda t: json.dumps(chat_body(t + "a" * (40 * MB))).encode()),
}


@pytest.mark.parametrize("key", [CAPPED, FREE], ids=["capped", "uncapped"])
def test_bad_bodies_get_their_documented_answer(
    proxy: Proxy, client: Any, standin: StandIn, key: Key
) -> None:
    t = tag()
    for name, (status, make) in BAD_BODIES.items():
        r = post(client, standin, key, make(t))
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        body = r.json()
        assert body["error"]["code"] == "invalid_request", (name, body)
        assert r.headers.get("x-should-retry") == "false", name
        assert key.credential not in r.text
    assert standin.received(t) == [], "a bad body was forwarded"
    lines = proxy.wait_audit(key.id, len(BAD_BODIES))
    assert {a["outcome"] for a in lines} == {"rejected"}, lines
    assert proxy.row(key.id)["reserved"] == 0


@pytest.mark.parametrize("key", [CAPPED, FREE], ids=["capped", "uncapped"])
@pytest.mark.parametrize("limit", [10**30, 2**63, 2**62], ids=["1e30", "2^63", "2^62"])
def test_absurd_integer_limit_never_passes_unmetered(
    proxy: Proxy, client: Any, standin: StandIn, key: Key, limit: int
) -> None:
    """A huge but integral max_tokens must not overflow the ledger or slip past it."""
    t = tag()
    r = post(client, standin, key, json.dumps(chat_body(t, max_tokens=limit)).encode())
    assert r.status_code in (400, 429), (r.status_code, r.text[:300])
    assert standin.received(t) == []
    # The ledger is still fine for everyone: a normal request of the same key is served.
    ok = post(client, standin, key, json.dumps(chat_body(t + " ok", max_tokens=5)).encode())
    assert ok.status_code == 200, ok.text[:300]
    assert proxy.row(key.id)["reserved"] == 0


def test_request_gzip_bomb_is_413_in_bounded_memory(
    proxy: Proxy, client: Any, standin: StandIn
) -> None:
    t = tag()
    before = rss(proxy)
    r = post(client, standin, FREE, BOMB + t.encode(), headers={"content-encoding": "gzip"})
    assert r.status_code == 413, r.text[:300]
    assert r.headers.get("x-seatbelt-refused") == "invalid_request"  # §5: OpenAI's code
    for enc, body in (("gzip", b"not gzip at all"), ("br2", b"{}"), ("gzip", BOMB[:1000])):
        r = post(client, standin, FREE, body, headers={"content-encoding": enc})
        assert r.status_code == 400, (enc, r.status_code, r.text[:200])
    assert not [x for x in standin.received() if x.body.startswith(b"\0" * 100)]
    assert rss(proxy) - before < 300, "a 1 GiB request bomb was inflated in memory"


def test_response_decompression_bomb_passes_untouched(
    proxy: Proxy, client: Any, bomb_server: str
) -> None:
    t = tag()
    before = rss(proxy)
    received = 0
    with client.stream("POST", bomb_server + "/v1/chat/completions",
                       json=chat_body(t, max_tokens=5, stream=True),
                       headers={"authorization": f"Bearer {FREE.credential}"}) as r:
        assert r.status_code == 200
        assert r.headers["content-encoding"] == "gzip"
        for chunk in r.iter_raw():
            received += len(chunk)
    assert received == len(BOMB), "the client did not get the upstream's bytes"
    lines = [a for a in wait_for("the bomb's audit line", lambda: [
        a for a in proxy.audit_for(FREE.id) if a["model"] == "gpt-4o-mini" and a["stream"]])]
    last = lines[-1]
    assert last["usage_source"] == "estimated" and last["prompt_tokens"] > 0, last
    assert rss(proxy) - before < 300, "the proxy inflated the bomb in memory"


def test_thousands_of_unknown_credentials_and_models_keep_series_bounded(
    proxy: Proxy, client: Any, standin: StandIn
) -> None:
    t = tag()

    def unknown(i: int) -> int:
        body = json.dumps(chat_body(f"{t} {i}", max_tokens=1)).encode()
        return post(client, standin, "sk-" + secrets.token_hex(12), body).status_code

    def model(i: int) -> int:
        body = json.dumps({**chat_body(f"{t} m{i}", max_tokens=1),
                           "model": f"evil-model-{secrets.token_hex(8)}"}).encode()
        return post(client, standin, FREE, body).status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(unknown, range(1000))) == {401}
        assert set(pool.map(model, range(300))) == {200}
    assert len(standin.received(t)) == 300
    text = proxy.metrics_text()
    assert "evil-model" not in text and "sk-" not in text
    m = proxy.metrics()
    for name in ("seatbelt_requests_total", "seatbelt_prompt_tokens_total",
                 "seatbelt_request_duration_seconds_count"):
        assert len(m.find(name)) < 30, (name, len(m.find(name)))
    assert m.value("seatbelt_requests_total", account="anonymous", key="anonymous",
                   outcome="unauthorized") >= 1000
    assert m.value("seatbelt_prompt_tokens_total", provider="openai", model="other") > 0


def test_memory_stayed_bounded(proxy: Proxy) -> None:
    """Peak RSS over every hostile test above (a 40 MB body, 1 GiB bombs both ways)."""
    peak = rss(proxy, "VmHWM")
    assert peak < 700, f"mitmdump peaked at {peak} MiB"


def test_no_raw_credential_in_anything_seatbelt_writes(
    proxy: Proxy, client: Any, standin: StandIn
) -> None:
    """Log, audit, metrics, flow comments and the flows saved with -w (redact is on)."""
    t = tag()
    body = json.dumps(chat_body(t, max_tokens=5)).encode()
    assert post(client, standin, SPY, body).status_code == 200
    anthropic = json.dumps({"model": "claude-sonnet-4-0", "max_tokens": 5,
                            "messages": [{"role": "user", "content": t}]}).encode()
    assert post(client, standin, None, anthropic, headers={"x-api-key": SPY.credential},
                path="/v1/messages").status_code == 200
    leak = "sk-leak-" + secrets.token_hex(8)
    assert post(client, standin, leak, body).status_code == 401
    r = client.get(standin.url + f"/plain?key={leak}&x=1",
                   headers={"authorization": f"Bearer {SPY.credential}"})
    assert r.status_code == 200
    proxy.wait_audit(SPY.id, 2)
    places = {"audit": proxy.audit_path.read_text(), "metrics": proxy.metrics_text()}
    assert proxy.stop() == 0
    places["log"] = proxy.log()
    flows_file = proxy.workdir / "flows.mitm"
    places["saved flows"] = flows_file.read_bytes().decode("latin-1")
    comments = flow_comments(flows_file)
    assert any("key=spy" in c for c in comments), comments
    places["flow comments"] = "\n".join(comments)
    for where, text in places.items():
        for secret in (SPY.credential, leak, CAPPED.credential, FREE.credential):
            assert secret not in text, f"a raw credential appears in the {where}"


def flow_comments(path: Path) -> list[str]:
    code = ("import sys; from mitmproxy import io\n"
            "with open(sys.argv[1], 'rb') as f:\n"
            "    for fl in io.FlowReader(f).stream(): print(repr(fl.comment))")
    out = subprocess.run([str(Path(mitmdump_binary()).with_name("python")), "-c", code,
                          str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line != "''"]


def test_hashes_only_refuses_a_plain_credential_at_start_up(tmp_path: Path,
                                                            standin: StandIn) -> None:
    secret = "sk-plain-" + secrets.token_hex(8)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\nkeys:\n  - id: a\n    credential: {secret}\n")
    p = Proxy(tmp_path, policy.read_text(), upstream=standin.url,
              options={"seatbelt_hashes_only": "true"})
    p.port = free_port()
    with pytest.raises(RuntimeError) as e:
        p.start(timeout=30)
    assert "exited with" in str(e.value)
    log = p.log()
    assert "seatbelt_hashes_only" in log and "credential_sha256" in log, log[-2000:]
    assert "policy.yaml:4" in log, log[-2000:]
    assert secret not in log
    assert "Traceback" not in log
