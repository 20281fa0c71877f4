"""Exact prompt counting where the byte bound would refuse (issue 13 item 2): pure parts.

The byte bound (seatbelt/admission/estimate.py) runs ~4-5x above an English prompt's real
count, so a request that fits in the last part of a cap is refused. Where the model's
tokenizer is public, the prompt can be counted exactly instead, and the count is still a
bound on what the upstream bills:

    exact tokens of each text the tokenizer sees (message content, text parts, a prompt,
      instructions) + EXACT_MARGIN_PER_TEXT per text + ceil(EXACT_MARGIN_PERCENT %)
    + UTF-8 bytes of everything else in the body (roles, names, tool schemas, response
      formats, tool calls' arguments: the parts whose rendering the proxy does not know)
    + the same media allowances and family overheads as the byte bound.

The per-text margin covers the upstream joining or splitting texts where this count does
not (a merge across a boundary can change a count by a token); the percent covers a
tokenizer revision the encoding name does not show. The result is never above the byte
bound (both are bounds: the smaller one is used).

Which tokenizer: the OpenAI family's models per tiktoken's model map (cl100k_base,
o200k_base), and any model the policy names one for (`models: {M: {tokenizer: NAME}}`,
the open models behind compatible servers). Nothing here does I/O or loads a tokenizer:
seatbelt/admission/counting.py does, off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from seatbelt.admission.estimate import _PART_KINDS, _data_url_kind, text_bound
from seatbelt.apis.base import Route

EXACT_MARGIN_PER_TEXT = 2
EXACT_MARGIN_PERCENT = 1

# Encodings the tokenizer package ships (quicktok-v1: seatbelt/admission/counting.py).
ENCODINGS = ("cl100k_base", "o200k_base", "o200k_harmony", "llama3", "qwen3")

# tiktoken's model map: exact names, then prefixes (its MODEL_TO_ENCODING and
# MODEL_PREFIX_TO_ENCODING, the encodings still in use).
_MODELS = {
    "o1": "o200k_base", "o3": "o200k_base", "o4-mini": "o200k_base", "gpt-5": "o200k_base",
    "gpt-4.1": "o200k_base", "gpt-4o": "o200k_base", "gpt-4": "cl100k_base",
    "gpt-3.5-turbo": "cl100k_base", "gpt-3.5": "cl100k_base", "gpt-35-turbo": "cl100k_base",
    "davinci-002": "cl100k_base", "babbage-002": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base", "text-embedding-3-small": "cl100k_base",
    "text-embedding-3-large": "cl100k_base",
}
_PREFIXES = (
    ("o1-", "o200k_base"), ("o3-", "o200k_base"), ("o4-mini-", "o200k_base"),
    ("gpt-5", "o200k_base"), ("gpt-4.5-", "o200k_base"), ("gpt-4.1-", "o200k_base"),
    ("chatgpt-4o-", "o200k_base"), ("gpt-4o-", "o200k_base"), ("gpt-4-", "cl100k_base"),
    ("gpt-3.5-turbo-", "cl100k_base"), ("gpt-35-turbo-", "cl100k_base"),
    ("gpt-oss-", "o200k_harmony"), ("ft:gpt-4o", "o200k_base"), ("ft:gpt-4", "cl100k_base"),
    ("ft:gpt-3.5-turbo", "cl100k_base"), ("ft:davinci-002", "cl100k_base"),
    ("ft:babbage-002", "cl100k_base"),
)
# Families whose model names are OpenAI's: the map applies there only. Elsewhere (Ollama,
# a model a compatible server names freely) only the policy's `tokenizer` does, and only
# on the shapes prompt_texts reads (Anthropic and Gemini have no public tokenizer).
_MAPPED_FAMILIES = frozenset({"openai", "responses"})
_LOCAL_FAMILIES = frozenset({"openai", "responses", "ollama"})
# Where a body keeps the texts the tokenizer sees, per family shape.
_CONTAINERS = ("messages", "input", "prompt", "instructions", "system")


def encoding_for(route: Route, model: str | None, named: str | None) -> str | None:
    """The encoding that counts this request's prompt exactly, or None."""
    if route.family.name not in _LOCAL_FAMILIES:
        return None
    if named is not None:
        return named
    if model is None or route.family.name not in _MAPPED_FAMILIES:
        return None
    found = _MODELS.get(model)
    if found is not None:
        return found
    return next((enc for prefix, enc in _PREFIXES if model.startswith(prefix)), None)


def prompt_texts(body: dict[str, Any]) -> list[str]:
    """The strings the tokenizer sees as they are: message content, text parts, a prompt
    (or a list of them), instructions. Media parts and data URLs are left to the media
    allowance, everything else (tool calls, schemas, names) to the byte count."""
    out: list[str] = []
    stack: list[Any] = [body[k] for k in _CONTAINERS if k in body]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _data_url_kind(v) is None:
                out.append(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict) and not _is_media(v):
            stack.extend(v[k] for k in ("content", "text") if isinstance(v.get(k), (str, list)))
    return out


def _is_media(d: dict[str, Any]) -> bool:
    part = d.get("type")
    return isinstance(part, str) and part in _PART_KINDS


def _utf8_len(text: str) -> int | None:
    """UTF-8 bytes of a text; None for one with a lone surrogate ("\\ud800"): no UTF-8,
    so no tokens (it keeps its bytes in the count)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def exact_bound(route: Route, body: dict[str, Any], count: Callable[[str], int],
                raw: bytes | None = None) -> int:
    """The prompt part of a hold with the texts counted by `count` (one encoding's exact
    token count); never above the byte bound (estimate.prompt_bound, from the same sizes).
    A text's own bytes are taken off the body's size, its JSON escapes stay in: slack."""
    size, allowance = text_bound(body, raw)
    overhead = route.family.prompt_overhead(route, body)
    texts = prompt_texts(body)
    tokens = counted = 0
    for text in texts:
        n = _utf8_len(text)
        if n is not None:
            tokens += count(text)
            counted += n
    tokens += EXACT_MARGIN_PER_TEXT * len(texts) + math.ceil(tokens * EXACT_MARGIN_PERCENT / 100)
    exact = tokens + max(0, size - counted) + allowance + overhead
    return min(exact, max(1, size) + allowance + overhead)
