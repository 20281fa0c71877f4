"""Ollama's native API: `POST /api/chat`, `/api/generate` (NDJSON, streaming by default)
and `/api/embed` / `/api/embeddings`, under any prefix. Ollama's `/v1/...` endpoints are
OpenAI-style and metered by the OpenAI family.

What differs: `stream` defaults to true; the output limit is `options.num_predict`, where
Ollama treats -1, -2 and 0 as "no limit", so seatbelt writes its reserved limit in; usage
is `prompt_eval_count` / `eval_count` on the final `done: true` object, and either may be
missing (older builds left `prompt_eval_count` out for a cached prompt): a missing count
is unknown, never 0. Errors are `{"error": "message"}`.

Only the endpoints that spend tokens are routed: the rest of Ollama's API (`/api/tags`,
`/api/pull`, ...) costs nothing, and its paths are generic enough (`/api/version`,
`/api/delete`) that claiming them would catch other applications' traffic.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from seatbelt.apis.assembly import Assembly
from seatbelt.apis.base import (
    ApiFamily,
    BadRequestBody,
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
    read_limit,
    read_model,
    usage_field,
)

# Chat content, generate's `response`, thinking text and tool-call function names.
OUTPUT_TEXT = re.compile(rb'"(?:content|response|thinking|name)"\s*:\s*' + JSON_STRING)

_ROUTE = re.compile(r"(?:^|/)api/(chat|generate|embed|embeddings)$")


def _options(body: Mapping[str, Any]) -> dict[str, Any]:
    options = body.get("options")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadRequestBody("options must be an object")
    return options


def read_num_predict(body: Mapping[str, Any]) -> int | None:
    """`options.num_predict`: a positive integer is a limit; absent, null, 0, -1 (forever)
    and -2 (fill the context) are no limit to Ollama."""
    options = _options(body)
    value = options.get("num_predict")
    if isinstance(value, int) and not isinstance(value, bool) and -2 <= value <= 0:
        return None
    return read_limit(options, "num_predict")


class Ollama(ApiFamily):
    name = "ollama"
    credential_headers = ("authorization",)
    usage_markers = (b'"prompt_eval_count"', b'"eval_count"')
    output_text = OUTPUT_TEXT
    # The model's chat template frames each message (Llama 3: 5 tokens, Qwen: 4) and
    # renders tools with a preamble (Llama 3.1's is ~60 tokens). A Modelfile SYSTEM prompt
    # is context the request does not carry: base_tokens leaves room for a short one only.
    base_tokens = 128
    per_message = 16
    per_tool = 32
    tools_prompt = 256

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        m = _ROUTE.search(norm_path(path))
        if m is None:
            return None
        method = method.upper()
        endpoint = "embed" if m.group(1).startswith("embed") else m.group(1)
        if method == "POST":
            kind: EndpointKind = "metered"
        elif method in READ_ONLY:
            kind = "free"
        else:
            kind = "unmetered"
        return Route(self, "ollama", endpoint, kind)

    def parse_request(self, route: Route, body: dict[str, Any]) -> RequestFacts:
        check_spelling(body)
        check_spelling(_options(body), "options")
        model = read_model(body)
        if route.endpoint == "embed":
            return RequestFacts(model, False, None, 1, produces_output=False)
        stream = body.get("stream")
        if stream is None:
            stream = True  # Ollama streams unless told not to
        elif not isinstance(stream, bool):
            raise BadRequestBody("stream must be a boolean")
        # Every Ollama stream ends with its counts: nothing needs to be requested.
        return RequestFacts(model, stream, read_num_predict(body), wants_usage=stream)

    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        body["options"] = {**_options(body), "num_predict": limit}

    def framing(self, route: Route, facts: RequestFacts, content_type: str) -> Framing:
        if "ndjson" in content_type.lower() or facts.stream:
            return "ndjson"
        return "json"

    def new_usage_reader(self, route: Route) -> UsageReader:
        return OllamaUsageReader(no_output=route.endpoint == "embed")

    def error_body(self, error: ErrorShape) -> dict[str, Any]:
        return {"error": error.message}

    def assemble(self, a: Assembly, obj: dict[str, Any]) -> bool:
        """One chat/generate object (NDJSON line or whole body), for the content view."""
        if not ("done" in obj and ("message" in obj or "response" in obj)):
            return False
        _ollama(a, obj)
        return True


class OllamaUsageReader(UsageReader):
    """The object carrying the counts (the final `done: true` one) sets the usage whole."""

    def __init__(self, no_output: bool = False) -> None:
        super().__init__()
        self.no_output = no_output

    def feed(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        if obj.get("prompt_eval_count") is None and obj.get("eval_count") is None:
            return
        completion = usage_field(obj, "eval_count", self)
        if completion is None and self.no_output and obj.get("eval_count") is None:
            completion = 0
        self.usage = Usage(
            prompt_tokens=usage_field(obj, "prompt_eval_count", self),
            completion_tokens=completion,
        )


# -- the content view's assembly (ApiFamily.assemble) --


def _ollama(a: Assembly, obj: dict[str, Any]) -> None:
    a.api("ollama")
    a.model(obj.get("model"))
    choice = a.s.choice(0)
    msg = obj["message"] if isinstance(obj.get("message"), dict) else {}
    choice.add("reasoning", msg.get("thinking") or obj.get("thinking"))
    choice.add("text", msg.get("content") or obj.get("response"))
    calls = msg.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:  # from the wire: maybe not a list
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            tool = choice.tool(("call", len(choice._tools)), fn.get("name"))
            tool.content = json.dumps(fn.get("arguments", {}), ensure_ascii=False)
    if obj.get("done"):
        choice.finish = str(obj.get("done_reason") or "stop")
        a.usage({k: v for k, v in obj.items() if k.endswith(("_count", "_duration"))})
