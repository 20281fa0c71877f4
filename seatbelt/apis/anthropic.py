"""Anthropic Messages API (`POST /v1/messages`), under any prefix.

Usage differs from OpenAI's in two ways that matter for money: cache reads and cache
writes are *added* to `input_tokens` (not subsets of it), and a stream's `message_delta`
counts are cumulative snapshots that replace the `message_start` values, never add.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from seatbelt.apis.base import (
    ApiFamily,
    ErrorShape,
    Framing,
    RequestFacts,
    Route,
    Usage,
    UsageReader,
)
from seatbelt.apis.fields import (
    JSON_STRING,
    READ_ONLY,
    check_spelling,
    norm_path,
    read_bool,
    read_limit,
    read_model,
    sub,
    usage_field,
)

# Text deltas, tool-input JSON deltas and thinking deltas are all generated output.
OUTPUT_TEXT = re.compile(rb'"(?:text|partial_json|thinking)"\s*:\s*' + JSON_STRING)

_MESSAGES = re.compile(r"(?:^|/)v1/messages(?:/(count_tokens|batches(?:/.*)?))?$")
_COMPLETE = re.compile(r"(?:^|/)v1/complete$")
# Shared with OpenAI-style servers: only taken when the request speaks Anthropic.
_SHARED = re.compile(r"(?:^|/)v1/(models|files|skills)(?:/.*)?$")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


class Anthropic(ApiFamily):
    name = "anthropic"
    credential_headers = ("x-api-key", "authorization")
    usage_markers = (b'"usage"',)
    output_text = OUTPUT_TEXT
    # Tool use adds a hidden system prompt: 159-530 tokens on Claude 3 models, 261-346 on
    # Claude 3.5-4 (Anthropic's tool-use pricing table; the most is Claude 3 Opus with
    # tool_choice auto): 800 here. Server tools (web search, code execution) add their own
    # definitions and results, which are billed as they happen and not bounded here.
    base_tokens = 32
    per_message = 12
    per_tool = 48
    tools_prompt = 800

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        p = norm_path(path)
        method = method.upper()
        m = _MESSAGES.search(p)
        if m is not None:
            sub_path = m.group(1)
            if sub_path is None:
                kind = "metered" if method == "POST" else "unmetered"
                return Route(self, "anthropic", "messages", kind)
            if sub_path == "count_tokens":
                return Route(self, "anthropic", "count_tokens", "free")
            kind = "free" if method in READ_ONLY else "unmetered"
            return Route(self, "anthropic", "batches", kind)
        if _COMPLETE.search(p):  # the legacy Text Completions API
            return Route(self, "anthropic", "complete", "unmetered")
        m = _SHARED.search(p)
        if m is not None and any(k.lower() == "anthropic-version" for k in headers):
            kind = "free" if method in READ_ONLY else "unmetered"
            return Route(self, "anthropic", m.group(1), kind)
        return None

    def parse_request(self, route: Route, body: dict[str, Any]) -> RequestFacts:
        # max_tokens is required by the API; when absent it is treated as unnamed and
        # the reserved limit gets written in (an upstream that defaults it stays bounded).
        check_spelling(body)
        return RequestFacts(
            model=read_model(body),
            stream=read_bool(body, "stream"),
            # 0 is defined: no output (a cache pre-warm), so it stays a limit of 0.
            max_output=read_limit(body, "max_tokens"),
        )

    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        body["max_tokens"] = limit

    def framing(self, route: Route, facts: RequestFacts, content_type: str) -> Framing:
        return "sse" if content_type.lower().startswith("text/event-stream") else "json"

    def new_usage_reader(self, route: Route) -> UsageReader:
        return AnthropicUsageReader()

    def error_body(self, error: ErrorShape) -> dict[str, Any]:
        t = _ERROR_TYPES.get(error.status)
        if t is None:
            t = "api_error" if error.status >= 500 else "invalid_request_error"
        return {"type": "error", "error": {"type": t, "message": error.message}}


class AnthropicUsageReader(UsageReader):
    """Starts from message_start's usage; each message_delta replaces the fields it has."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: dict[str, int] = {}
        self.bad: set[str] = set()  # fields whose latest value was absurd: now unknown

    def feed(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_start":
            u = sub(obj, "message").get("usage")
        elif kind in ("message_delta", "message", None):
            u = obj.get("usage")
        else:
            return
        if u is None:
            return
        if not isinstance(u, dict):
            self.invalid = "usage is not an object"
            return
        names = _FIELDS
        if kind == "message_start":
            # output_tokens here is a placeholder (typically 1): a stream cut before its
            # message_delta must not look reported with one output token. Some API
            # versions also send zeros for the input counts and the real ones in
            # message_delta; no request has zero input, so zeros mean "not yet known".
            names = _FIELDS[:3] if any(u.get(n) for n in _FIELDS[:3]) else ()
        for name in names:
            if u.get(name) is None:
                continue  # absent or null: keep what an earlier event said
            value = usage_field(u, name, self)
            if value is None:
                self.bad.add(name)
                self.raw.pop(name, None)
            else:
                self.bad.discard(name)
                self.raw[name] = value
        self.usage = self._normalised()

    def _normalised(self) -> Usage:
        raw = self.raw
        read = raw.get("cache_read_input_tokens")
        write = raw.get("cache_creation_input_tokens")
        prompt = raw.get("input_tokens")
        if prompt is not None:
            prompt += (read or 0) + (write or 0)
        if self.bad & {"cache_read_input_tokens", "cache_creation_input_tokens"}:
            prompt = None  # one part of the total is unusable, so the total is unknown
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=raw.get("output_tokens"),
            cached_tokens=read,
            cache_write_tokens=write,
        )
