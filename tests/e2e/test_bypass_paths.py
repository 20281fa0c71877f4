"""Adversarial: no spelling of a path, no bare endpoint of an LLM server, reaches a real
upstream unauthenticated as an LLM call (issue 14, items 1 and 2).

Each upstream is a real server of the kind that serves LLM APIs: uvicorn with httptools
and with h11 (Python servers: vLLM, LiteLLM, llama-cpp-python), Node `http` (WHATWG URL
and Express's legacy parser) and Go `net/http` (Ollama). Each answers with the path(s) it
routes (tests/standin/echo_*). A real mitmdump with seatbelt in reverse mode sits in front.
For every spelling sent with no credential under `require_auth: true`, either seatbelt
refused it, or every path the server routed is not an LLM call seatbelt would meter.
The proxies run with `unknown_endpoints: allow`, so that it is the path logic that is
tested, not the blanket refusal of unknown POSTs (which has its own test below).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from seatbelt.apis import UNKNOWN, route_request
from tests.e2e.conftest import REPO, Key, Proxy, free_port, policy_text, wait_for

STANDIN = REPO / "tests" / "standin"
KEY = Key("bypass")

SPELLINGS = [
    "/v1/chat/completions#x",
    "/v1/chat/completions#/../models",
    "/v1/models#/../chat/completions",
    "/v1\\chat\\completions",
    "\\v1\\chat\\completions",
    "/v1/models\\..\\chat\\completions",
    "/v1/chat/completions;x=1",
    "/v1/chat;x=1/completions",
    "/v1/chat%2Fcompletions",
    "/%761/chat/completions",
    "/v1/chat/completion%73",
    "/v1//chat//completions",
    "/v1/./chat/completions",
    "/v1/models/../chat/completions",
    "/v1/models/..%2Fchat/completions",
    "/v1/models/%2e%2e/chat/completions",
    "/V1/Chat/Completions",
    "/v1/chat/completions/",
    "/v1/messages#x",
    "/v1/embeddings\\",
    "/api/chat#x",
    "/v1beta/models/gemini-2.0-flash:generateContent#x",
    # bare endpoints of llama.cpp, TGI; unversioned Responses / Messages
    "/completion", "/infill", "/generate", "/generate_stream", "/responses", "/messages",
    "/completion#x", "/generate\\",
    # Vertex deployed endpoints, Gemini ephemeral keys, Bedrock
    "/v1/projects/p/locations/l/endpoints/123:generateContent",
    "/v1/projects/p/locations/l/endpoints/123:streamGenerateContent",
    "/v1alpha/auth_tokens",
    "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
    "/model/m/invoke-with-response-stream",
    "/model/m/converse",
    "/model/m/converse-stream",
]


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"echo server exited {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(f"echo server on {port}", up, timeout=60)


def _command(kind: str, port: int, workdir: Path) -> list[str]:
    if kind.startswith("uvicorn-"):
        return [sys.executable, "-m", "uvicorn", "--app-dir", str(STANDIN),
                "--http", kind.split("-", 1)[1], "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "echo_uvicorn:app"]
    if kind == "node":
        return [shutil.which("node") or "node", str(STANDIN / "echo_node.js"), str(port)]
    binary = workdir / "echo_go"
    subprocess.run([shutil.which("go") or "go", "build", "-o", str(binary),
                    str(STANDIN / "echo_go.go")], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "GOPROXY": "off",
                        "GOFLAGS": "-mod=mod", "GO111MODULE": "off",
                        "GOCACHE": str(workdir / "gocache")}, timeout=300)
    return [str(binary), str(port)]


@pytest.fixture(scope="module", params=["uvicorn-httptools", "uvicorn-h11", "node", "go"])
def upstream(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp(request.param)
    port = free_port()
    log = workdir / "echo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_command(request.param, port, workdir), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()  # ours; uvicorn would wait for a request still in flight
        proc.wait(10)


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any, upstream: str) -> Proxy:
    policy = policy_text([KEY]) + "unknown_endpoints: allow\n"
    return proxy_factory("bypass", policy, upstream=upstream)


def send(proxy: Proxy, target: str, credential: str | None = None, method: str = "POST",
         host: str | None = None, absolute: str | None = None,
         extra: tuple[str, ...] = ()) -> tuple[int, dict, bytes]:
    """One raw HTTP/1.1 request, the request-target byte for byte as given."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 5, "prompt": "hi", "inputs": "hi"}).encode()
    lines = [f"{method} {(absolute or '') + target} HTTP/1.1",
             f"Host: {host or f'127.0.0.1:{proxy.port}'}",
             "Content-Type: application/json", f"Content-Length: {len(body)}",
             "Connection: close"]
    if credential is not None:
        lines.append(f"Authorization: Bearer {credential}")
    lines.extend(extra)
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, content


def llm_call(path: str) -> bool:
    """Would seatbelt meter (or refuse as unmetered) this path, as the upstream routed it?"""
    route = route_request("POST", path, {}, llm_host=True)
    return route is not None and route.kind != "free" and route.endpoint != UNKNOWN


@pytest.mark.parametrize("target", SPELLINGS)
def test_no_spelling_reaches_an_llm_handler_unauthenticated(proxy: Proxy, target: str
                                                             ) -> None:
    status, headers, content = send(proxy, target)
    if "x-seatbelt-refused" in headers:
        assert status in (400, 401, 403), (status, content)
        return
    # Forwarded: the upstream answered; whatever it routed must not be an LLM call.
    if status != 200:
        return  # the server itself refused the spelling (e.g. a 400 from its parser)
    echo = json.loads(content)
    assert echo["authorization"] is None
    billed = [p for p in echo["routed"] if llm_call(p)]
    assert not billed, f"{target!r} reached {echo['server']} as {billed} with no credential"


def test_a_fragment_spelling_is_metered_for_a_known_key(proxy: Proxy) -> None:
    status, headers, content = send(proxy, "/v1/chat/completions#x", KEY.credential)
    assert status == 200 and "x-seatbelt-refused" not in headers, content
    (line,) = proxy.wait_audit(KEY.id, 1)
    assert line["outcome"] == "served" and line["reserved"] > 0, line


def test_ambiguous_readings_are_refused_400(proxy: Proxy) -> None:
    status, headers, _ = send(proxy, "/v1/models#/../chat/completions", KEY.credential)
    assert (status, headers.get("x-seatbelt-refused")) == (400, "invalid_request")


@pytest.fixture(scope="module")
def strict(proxy_factory: Any, upstream: str) -> Proxy:
    return proxy_factory("bypass-strict", policy_text([KEY]), upstream=upstream)


@pytest.mark.parametrize("target", ["/v1/some/new/endpoint", "/tokenizer/anything",
                                    "/completion"])
def test_an_unknown_post_on_an_llm_host_is_refused(strict: Proxy, target: str) -> None:
    status, headers, _ = send(strict, target, KEY.credential)
    assert (status, headers.get("x-seatbelt-refused")) == (403, "endpoint_not_metered")
    # A GET only reads: it passes.
    status, headers, content = send(strict, target, KEY.credential, method="GET")
    assert status == 200 and "x-seatbelt-refused" not in headers, content


def test_a_method_override_gets_no_free_read(proxy: Proxy) -> None:
    """Google's front ends take the method from X-HTTP-Method-Override: a GET (a free
    read to seatbelt) would be a billed POST there."""
    status, headers, _ = send(proxy, "/v1beta/models/gemini-2.0-flash:generateContent",
                              method="GET", extra=("X-HTTP-Method-Override: POST",))
    assert (status, headers.get("x-seatbelt-refused")) == (400, "invalid_request")
