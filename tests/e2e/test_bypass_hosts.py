"""Adversarial: a client-chosen Host header never picks the rules (issue 14, item 4).

A real mitmdump in explicit-proxy mode in front of a real uvicorn upstream (it echoes what
it received, tests/standin/echo_uvicorn.py). The policy takes `free.example` off the LLM
routes (`api: none`); before, a request to any upstream that merely *said* `Host:
free.example` passed unmetered and unauthenticated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Iterator

import pytest

from tests.e2e.conftest import Key, Proxy, free_port, policy_text
from tests.e2e.test_bypass_paths import STANDIN, _wait_port, send

KEY = Key("hosts")
ROUTES = "routes:\n  - {host: free.example, api: none}\n"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("hosts-echo") / "echo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(STANDIN), "--host",
             "127.0.0.1", "--port", str(port), "--no-access-log", "echo_uvicorn:app"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()  # ours; uvicorn would wait for a request still in flight
        proc.wait(10)


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any, upstream: str) -> Proxy:
    return proxy_factory("hosts", policy_text([KEY]) + ROUTES, mode="regular")


def test_a_spoofed_host_header_gets_no_free_route(proxy: Proxy, upstream: str) -> None:
    status, headers, content = send(proxy, "/v1/chat/completions", absolute=upstream,
                                    host="free.example")
    assert "x-seatbelt-refused" in headers, f"forwarded unauthenticated: {content!r}"
    assert status == 400 and b"Host header names free.example" in content, content


def test_a_spoofed_host_header_is_refused_even_with_a_key(proxy: Proxy, upstream: str
                                                          ) -> None:
    status, headers, _ = send(proxy, "/v1/chat/completions", KEY.credential,
                              absolute=upstream, host="free.example")
    assert (status, headers.get("x-seatbelt-refused")) == (400, "invalid_request")


def test_the_real_destination_is_metered(proxy: Proxy, upstream: str) -> None:
    status, headers, content = send(proxy, "/v1/chat/completions", absolute=upstream,
                                    host=upstream.removeprefix("http://"))
    assert (status, headers.get("x-seatbelt-refused")) == (401, "invalid_api_key"), content
    status, headers, content = send(proxy, "/v1/chat/completions", KEY.credential,
                                    absolute=upstream, host=upstream.removeprefix("http://"))
    assert status == 200 and json.loads(content)["server"] == "uvicorn"
    (line,) = proxy.wait_audit(KEY.id, 1)
    assert line["outcome"] == "served" and line["host"] == "127.0.0.1", line


@pytest.mark.parametrize("second", ["free.example", "{upstream}"])
def test_a_second_host_header_is_refused(proxy: Proxy, upstream: str, second: str) -> None:
    """The destination's own Host, then another (or the same again): read folded, the part
    before the one colon used to match the destination, so a front end that routes by the
    second field got a request seatbelt judged by the first. Now refused before upstream."""
    own = upstream.removeprefix("http://")
    status, headers, content = send(proxy, "/v1/chat/completions", KEY.credential,
                                    absolute=upstream, host=own,
                                    extra=(f"Host: {second.format(upstream=own)}",))
    assert (status, headers.get("x-seatbelt-refused")) == (400, "invalid_request"), content
    assert b"Host header names" in content, content
