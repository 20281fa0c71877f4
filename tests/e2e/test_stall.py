"""Adversarial bodies for the event loop (issue 14, item 7): nesting over the documented
depth limit is refused before anything is sent; a 10 MB body of the worst shape
(bench/stall_shapes.py) does not keep a small request of another key from being served and
metered. One proxy in regular (explicit proxy) mode in front of the stand-in; no timing is
asserted (bench/stall_bench.py measures the stall)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bench import stall_shapes
from seatbelt.codec.requestbody import MAX_DEPTH
from tests.e2e.conftest import Key, Proxy, http_module, policy_text, tag
from tests.e2e.test_hostile import chat_body, post
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

DEEP, HEAVY, LIGHT = Key("deep", cap=50_000), Key("heavy"), Key("light", cap=50_000)


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("stall", policy_text([DEEP, HEAVY, LIGHT]), mode="regular")


@pytest.fixture(scope="module")
def client(proxy: Proxy) -> Iterator[Any]:
    with http_module().Client(proxy=proxy.url, timeout=120) as c:
        yield c


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3_000])
def test_a_body_over_the_depth_limit_is_refused_naming_it_and_never_sent(
        proxy: Proxy, client: Any, standin: StandIn, depth: int) -> None:
    """Just over the documented limit and far over it (depth ~3,000 raised RecursionError
    before): 400 in the family's own error shape, naming the limit; nothing upstream."""
    t = tag()
    nest = b"[" * (depth - 3) + b'"image"' + b"]" * (depth - 3)  # body {} > messages [] > {}
    openai = (b'{"model":"gpt-4o-mini","user":"' + t.encode() + b'","messages":[{"role":'
              b'"user","content":' + nest + b"}]}")
    anthropic = openai.replace(b'"user":"', b'"max_tokens":5,"metadata":{"user_id":"', 1
                               ).replace(b'","messages"', b'"},"messages"', 1)
    for path, body, headers in (
            ("/v1/chat/completions", openai, {}),
            ("/v1/messages", anthropic, {"x-api-key": DEEP.credential,
                                         "anthropic-version": "2023-06-01"})):
        r = post(client, standin, DEEP if not headers else None, body, headers, path=path)
        assert r.status_code == 400, (path, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert f"nested deeper than {MAX_DEPTH} levels" in error["message"], error
        assert (error.get("code") if path.endswith("completions") else error["type"]) in (
            "invalid_request", "invalid_request_error"), error
    assert standin.received(t) == [], "a body over the depth limit reached the upstream"
    lines = proxy.wait_audit(DEEP.id, 2)
    assert {a["outcome"] for a in lines} == {"rejected"}
    assert proxy.row(DEEP.id)["reserved"] == 0


def test_a_worst_shape_10_mb_body_does_not_hold_up_a_small_request(
        proxy: Proxy, client: Any, standin: StandIn) -> None:
    """While seatbelt admits 10 MB of arrays nested to the depth limit, each holding
    "image" (the media walk's worst case), a small request of another key is answered
    and metered; the big one is admitted too. No timing is asserted (bench/stall_bench.py
    measures the stall)."""
    t = tag()
    big = stall_shapes.body("deep", "openai", 10 * 1_000_000).replace(
        b'"max_tokens":16', b'"max_tokens":16,"user":"' + t.encode() + b' big"', 1)
    with ThreadPoolExecutor(1) as pool:
        heavy = pool.submit(post, client, standin, HEAVY, big)
        small = post(client, standin, LIGHT, json.dumps(chat_body(f"{t} small",
                                                                   max_tokens=5)).encode())
        assert small.status_code == 200, small.text[:300]
        (line,) = proxy.wait_audit(LIGHT.id, 1)
        assert (line["outcome"], line["usage_source"]) == ("served", "reported")
        assert heavy.result(timeout=120).status_code == 200
    assert len(standin.received(f"{t} big")) == 1
    (line,) = proxy.wait_audit(HEAVY.id, 1)
    assert line["outcome"] == "served" and line["reserved"] > 1_000_000
