"""A provider's own prompt count, for families without a public tokenizer: pure parts.

Anthropic (POST /v1/messages/count_tokens, free) and Gemini (POST
models/M:countTokens, free) count a request's prompt with the tokenizer that bills it.
seatbelt asks only where the policy opts in (`models: {M: {count_tokens: provider}}`),
only when the byte bound would refuse (seatbelt/admission/counting.py does the I/O), and
treats the answer as an estimate:

    count + PROVIDER_MARGIN_PERCENT % + the family's fixed base_tokens
    (+ Gemini's tools_prompt when tools are declared: its countTokens leaves out the
    prompt of built-in tools, reported apart as toolUsePromptTokenCount)

never above the byte bound. Anthropic documents count_tokens as an estimate that "may
differ by a small amount"; its count includes the hidden tool-use system prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from seatbelt.apis.base import Route, count

PROVIDER_MARGIN_PERCENT = 10
FAMILIES = ("anthropic", "gemini")

# What count_tokens accepts: any other field of a Messages body is refused 400 there.
_ANTHROPIC_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")
_ANTHROPIC_HEADERS: tuple[str, ...] = ("x-api-key", "authorization", "anthropic-version",
                                       "anthropic-beta")
_GEMINI_FIELDS = ("contents", "systemInstruction", "system_instruction", "tools",
                  "toolConfig", "tool_config")
_GEMINI_HEADERS = ("x-goog-api-key", "authorization", "x-goog-user-project")
_GEMINI_METHODS = (":streamGenerateContent", ":generateContent")


@dataclass(frozen=True)
class CountRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    tools: bool  # the request declares tools


def header_values(fields: tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
    """Headers as they go on the wire: a swapped-in real credential reads as a placeholder
    through Headers.items() (seatbelt/admission/operating.py: HiddenCredential), so the
    raw bytes are read."""
    return {bytes(k).decode("latin-1"): bytes(v).decode("latin-1") for k, v in fields}


def count_request(route: Route, url: str, headers: dict[str, str], body: dict[str, Any],
                  model: str | None) -> CountRequest | None:
    """The count request for a request to `url` (its credential headers kept), or None
    where the family or the path has no count endpoint."""
    parts = urlsplit(url)
    tools = bool(body.get("tools"))
    if route.family.name == "anthropic":
        if not parts.path.rstrip("/").endswith("/messages"):
            return None
        path = parts.path.rstrip("/") + "/count_tokens"
        ask = {k: body[k] for k in _ANTHROPIC_FIELDS if k in body}
        keep = _ANTHROPIC_HEADERS
        query = parts.query
    elif route.family.name == "gemini":
        method = next((m for m in _GEMINI_METHODS if parts.path.endswith(m)), None)
        if method is None or model is None:
            return None
        path = parts.path[: -len(method)] + ":countTokens"
        inner = {k: body[k] for k in _GEMINI_FIELDS if k in body}
        ask = {"generateContentRequest": {"model": f"models/{model}", **inner}}
        keep = _GEMINI_HEADERS
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query)
                           if k in route.family.credential_query])
    else:
        return None
    sent = {k: v for k, v in headers.items() if k.lower() in keep}
    sent["content-type"] = "application/json"
    return CountRequest(urlunsplit((parts.scheme, parts.netloc, path, query, "")), sent,
                        json.dumps(ask, ensure_ascii=False).encode("utf-8", "surrogatepass"),
                        tools)


def read_count(route: Route, answer: bytes) -> int | None:
    """The prompt tokens in a count endpoint's answer, or None."""
    try:
        obj = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    name = "input_tokens" if route.family.name == "anthropic" else "totalTokens"
    return count(obj.get(name))


def with_margin(route: Route, tools: bool, n: int) -> int:
    """A provider's count as a hold: its margin and the overheads it leaves out."""
    family = route.family
    extra = family.tools_prompt if tools and family.name == "gemini" else 0
    return math.ceil(n * (100 + PROVIDER_MARGIN_PERCENT) / 100) + family.base_tokens + extra
