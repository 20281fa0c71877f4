"""Anthropic Messages API (`POST /v1/messages`), under any prefix.

Usage differs from OpenAI's in two ways that matter for money: cache reads and cache
writes are *added* to `input_tokens` (not subsets of it), and a stream's `message_delta`
counts are cumulative snapshots that replace the `message_start` values, never add.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from seatbelt.apis.assembly import Assembly
from seatbelt.apis.base import (
    ApiFamily,
    EndpointKind,
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
_CODE_TYPES = {"insufficient_quota": "billing_error"}
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
                kind: EndpointKind = "metered" if method == "POST" else "unmetered"
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
            hidden_reasoning=self.hides_reasoning(None, body),
        )

    def hides_reasoning(self, model: str | None, body: dict[str, Any]) -> bool:
        # Extended thinking: Claude 4 models stream a summary of it and bill it in full.
        thinking = body.get("thinking")
        return thinking is not None and not (
            isinstance(thinking, dict) and thinking.get("type") == "disabled")

    def stream_error(self, framing: Framing, error: ErrorShape) -> bytes:
        if framing != "sse":
            return super().stream_error(framing, error)
        data = json.dumps(self.error_body(error), separators=(",", ":")).encode()
        return b"event: error\ndata: " + data + b"\n\n"  # the SDK raises on `event: error`

    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        body["max_tokens"] = limit

    def framing(self, route: Route, facts: RequestFacts, content_type: str) -> Framing:
        return "sse" if content_type.lower().startswith("text/event-stream") else "json"

    def new_usage_reader(self, route: Route) -> UsageReader:
        return AnthropicUsageReader()

    def error_body(self, error: ErrorShape) -> dict[str, Any]:
        # An exhausted balance is Anthropic's billing_error (one of its error types), still
        # on a 429 (seatbelt never answers 402) so it stays a RateLimitError to the SDK,
        # told apart from a rate limit by the type and by `x-should-retry: false`.
        t = _CODE_TYPES.get(error.code) or _ERROR_TYPES.get(error.status)
        if t is None:
            t = "api_error" if error.status >= 500 else "invalid_request_error"
        return {"type": "error", "error": {"type": t, "message": error.message}}

    def assemble(self, a: Assembly, obj: dict[str, Any]) -> bool:
        """Message events and whole messages, for the content view."""
        kind = obj.get("type")
        if not isinstance(kind, str):  # from the wire: maybe a list, not hashable
            return False
        if kind in _EVENTS:
            _anthropic_event(a, kind, obj)
        elif kind == "message" and isinstance(obj.get("content"), list):
            _anthropic_message(a, obj)
        else:
            return False
        return True


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
        names: tuple[str, ...] = _FIELDS
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


# -- the content view's assembly (ApiFamily.assemble) --


_EVENTS = {
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop", "ping",
}


def _block_kind(block: dict[str, Any]) -> str:
    return "reasoning" if block.get("type") in ("thinking", "redacted_thinking") else "text"


def _anthropic_event(a: Assembly, kind: str, obj: dict[str, Any]) -> None:
    a.api("anthropic messages")
    choice = a.s.choice(0)
    if kind == "message_start" and isinstance(obj.get("message"), dict):
        a.model(obj["message"].get("model"))
        a.usage(obj["message"].get("usage"))
    elif kind == "content_block_start" and isinstance(obj.get("content_block"), dict):
        block = obj["content_block"]
        if block.get("type") in ("tool_use", "server_tool_use"):
            a.blocks[repr(obj.get("index"))] = choice.tool(
                ("block", obj.get("index")), block.get("name"), block.get("id")
            )
        else:
            choice.add(_block_kind(block), block.get("text") or block.get("thinking"))
    elif kind == "content_block_delta" and isinstance(obj.get("delta"), dict):
        delta = obj["delta"]
        if delta.get("type") == "input_json_delta":
            index = obj.get("index")
            part = a.blocks.get(repr(index)) or choice.tool(("block", index))
            part.content += delta.get("partial_json") or ""
        elif delta.get("type") == "thinking_delta":
            choice.add("reasoning", delta.get("thinking"))
        elif delta.get("type") == "text_delta":
            choice.add("text", delta.get("text"))
    elif kind == "message_delta":
        delta = obj["delta"] if isinstance(obj.get("delta"), dict) else {}
        if delta.get("stop_reason"):
            choice.finish = str(delta["stop_reason"])
        a.usage(obj.get("usage"), merge=True)  # cumulative: replace field by field


def _anthropic_message(a: Assembly, obj: dict[str, Any]) -> None:
    a.api("anthropic messages")
    a.model(obj.get("model"))
    a.usage(obj.get("usage"))
    choice = a.s.choice(0)
    for n, block in enumerate(obj["content"]):
        if not isinstance(block, dict):
            continue
        if block.get("type") in ("tool_use", "server_tool_use"):
            part = choice.tool(("block", n), block.get("name"), block.get("id"))
            part.content = json.dumps(block.get("input", {}), ensure_ascii=False)
        else:
            choice.add(_block_kind(block), block.get("text") or block.get("thinking"))
    if obj.get("stop_reason"):
        choice.finish = str(obj["stop_reason"])
