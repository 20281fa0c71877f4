"""OpenAI Responses API (`POST /v1/responses`), on OpenAI, Azure (`/openai/v1/responses`)
and the compatible servers (Ollama, vLLM), under any version-like prefix.

It is OpenAI-style in everything but three things, which is why it subclasses OpenAI:
the output limit is `max_output_tokens`; a stream always carries its usage, inside the
terminal event's `response` object (`response.completed` / `.incomplete` / `.failed`),
so nothing is injected; and a stream repeats its whole output in the `.done` and
terminal events, so only `delta` strings count as streamed output text. A
`background: true` request runs after the HTTP exchange ends, where seatbelt cannot see
its cost: it is an unmetered endpoint (contract §4).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from seatbelt.apis.assembly import Assembly, Choice
from seatbelt.apis.base import (
    EndpointKind,
    RequestFacts,
    Route,
    UnmeteredRequest,
    UsageReader,
)
from seatbelt.apis.fields import (
    JSON_STRING,
    READ_ONLY,
    check_spelling,
    norm_path,
    read_bool,
    read_model,
    read_output_limit,
)
from seatbelt.apis.openai import OpenAI, OpenAIUsageReader, provider_of

# Streamed output: output_text / refusal / reasoning / function-call argument deltas.
DELTA_TEXT = re.compile(rb'"delta"\s*:\s*' + JSON_STRING)
# A buffered Response: message text, reasoning summaries, tool-call arguments, refusals.
DOCUMENT_TEXT = re.compile(rb'"(?:text|arguments|refusal)"\s*:\s*' + JSON_STRING)

# `codex/` is the ChatGPT Codex backend (`/backend-api/codex/responses`).
_RESPONSES = re.compile(r"(?:^|/)(?:v\d[^/]*|openai|codex)/responses(?:/(.+))?$")
# Reads, deletes and cancels of stored responses, and token counting, cost nothing.
_FREE_POST = re.compile(r"^(?:input_tokens|[^/]+/cancel)$")


# Fields that bring in a prompt stored upstream: an earlier response's whole conversation,
# a Conversation object, a reusable prompt template.
_HIDDEN = ("previous_response_id", "conversation", "prompt")


class Responses(OpenAI):
    name = "responses"
    # The stream's `error` event has no "error" key: its type marks it.
    usage_markers = (b'"usage"', b'"type":"error"', b'"type": "error"')
    output_text = DELTA_TEXT
    document_text = DOCUMENT_TEXT

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        m = _RESPONSES.search(norm_path(path))
        if m is None:
            return None
        method = method.upper()
        rest = m.group(1)
        if rest is None:
            kind: EndpointKind = "metered" if method == "POST" else "free" if method in READ_ONLY \
                else "unmetered"
        elif method in READ_ONLY or method == "DELETE":
            kind = "free"  # a stored response, its input items, or a resumed stream
        elif method == "POST" and _FREE_POST.match(rest):
            kind = "free"
        else:
            kind = "unmetered"  # e.g. /responses/compact: it spends tokens we cannot see
        return Route(self, provider_of(None, headers), "responses", kind)

    def parse_request(self, route: Route, body: dict[str, Any]) -> RequestFacts:
        check_spelling(body)
        model = read_model(body)
        stream = read_bool(body, "stream")
        limit = read_output_limit(body, "max_output_tokens")
        if read_bool(body, "background"):
            raise UnmeteredRequest(
                "a background response is generated after the request ends, where its cost "
                "cannot be metered"
            )
        # A Responses stream always reports usage: nothing needs to be requested.
        hidden = next((k for k in _HIDDEN if body.get(k) is not None), None)
        return RequestFacts(model, stream, limit, wants_usage=stream, hidden_context=hidden,
                            hidden_reasoning=self.hides_reasoning(model, body))

    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        body["max_output_tokens"] = limit

    def request_usage(self, route: Route, body: dict[str, Any]) -> bool:
        return False

    def is_injected_usage_frame(self, obj: Any) -> bool:
        return False

    def new_usage_reader(self, route: Route) -> UsageReader:
        return ResponsesUsageReader()

    def assemble(self, a: Assembly, obj: dict[str, Any]) -> bool:
        """Response events and whole Response objects, for the content view; nothing
        else (chat shapes are OpenAI's, assembled there)."""
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            _responses_event(a, kind, obj)
        elif obj.get("object") == "response" and isinstance(obj.get("output"), list):
            _responses_object(a, obj)
        else:
            return False
        return True


class ResponsesUsageReader(OpenAIUsageReader):
    """A stream's terminal event wraps the Response; a buffered body is the Response."""

    def feed(self, obj: Any) -> None:
        if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
            obj = obj["response"]
        super().feed(obj)


# -- the content view's assembly (ApiFamily.assemble) --


def _responses_finish(resp: dict[str, Any]) -> str | None:
    status = resp.get("status")
    details = resp.get("incomplete_details")
    if isinstance(details, dict) and details.get("reason"):
        return f"{status}: {details['reason']}"
    return str(status) if status else None


def _responses_event(a: Assembly, kind: str, obj: dict[str, Any]) -> None:
    a.api("openai responses")
    choice = a.s.choice(0)
    if kind == "response.output_text.delta":
        choice.add("text", obj.get("delta"))
    elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
        choice.add("reasoning", obj.get("delta"))
    elif kind == "response.refusal.delta":
        choice.add("refusal", obj.get("delta"))
    elif kind == "response.output_item.added" and isinstance(obj.get("item"), dict):
        item = obj["item"]
        if item.get("type") == "function_call":
            a.items[repr(item.get("id"))] = choice.tool(
                ("item", item.get("id")), item.get("name"), item.get("call_id")
            )
    elif kind == "response.function_call_arguments.delta":
        item_id = obj.get("item_id")
        part = a.items.get(repr(item_id)) or choice.tool(("item", item_id))
        part.content += obj.get("delta") or ""
    elif isinstance(obj.get("response"), dict):
        resp = obj["response"]
        a.model(resp.get("model"))
        a.usage(resp.get("usage"))
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            choice.finish = _responses_finish(resp)
            if not choice.parts:
                _responses_output(a, choice, resp.get("output"))


def _responses_object(a: Assembly, obj: dict[str, Any]) -> None:
    a.api("openai responses")
    a.model(obj.get("model"))
    a.usage(obj.get("usage"))
    choice = a.s.choice(0)
    _responses_output(a, choice, obj.get("output"))
    choice.finish = _responses_finish(obj)


def _responses_output(a: Assembly, choice: Choice, output: Any) -> None:
    for n, item in enumerate(output if isinstance(output, list) else []):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            part = choice.tool(("item", item.get("id", n)), item.get("name"),
                               item.get("call_id"))
            part.content = str(item.get("arguments") or "")
        for piece in item.get("content") or item.get("summary") or []:
            if isinstance(piece, dict):
                kind = "reasoning" if item.get("type") == "reasoning" else "text"
                choice.add("refusal" if piece.get("type") == "refusal" else kind,
                           piece.get("text") or piece.get("refusal"))
