"""Google Gemini API (AI Studio and Vertex AI): `models/{model}:generateContent` and
`:streamGenerateContent`, under any prefix (`/v1beta/`, `/v1/`, Vertex's
`/v1/projects/P/locations/L/publishers/google/`).

What differs from the other families: the model is in the path; the credential is
`x-goog-api-key`, the `key=` query parameter or (Vertex) a Bearer token; a stream is SSE
with `?alt=sse` and otherwise one JSON array delivered in pieces; every chunk may carry a
cumulative `usageMetadata` snapshot (the last one wins, never a sum); prompt tokens
include `toolUsePromptTokenCount` and completion tokens are `candidatesTokenCount +
thoughtsTokenCount`; the request may spell fields in lowerCamelCase or snake_case (both
are valid proto JSON); errors are `google.rpc.Status` objects.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping
from urllib.parse import unquote

from seatbelt.apis.assembly import Assembly
from seatbelt.apis.base import (
    ApiFamily,
    BadRequestBody,
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
    read_multiplier,
    read_output_limit,
    usage_field,
)

# Generated text (incl. thought summaries), function-call names and executable code.
OUTPUT_TEXT = re.compile(rb'"(?:text|name|code)"\s*:\s*' + JSON_STRING)

# `models/M:verb`, tuned models, and Vertex's deployed `endpoints/E:verb` (E stands for
# the model).
_METHOD = re.compile(r"(?:^|/)(?:(?:tuned)?models|endpoints)/[^/]+:([a-z]+)$")
# Models that think by default: Gemini 2.5 and every later generation.
_THINKING = re.compile(r"^(?:models/)?gemini-(?:2\.5|[3-9]|\d{2})", re.IGNORECASE)
_MODEL = re.compile(r"(?:models|endpoints)/([^/:]+):[a-z]+$", re.IGNORECASE)
_RESOURCE = re.compile(
    r"(?:^|/)v1(?:alpha|beta)\d*/(models|tunedmodels|cachedcontents|files|batches|operations"
    r"|corpora|filesearchstores|generatedfiles|auth_tokens)(?:/.*)?$"
)
_METERED = {"generatecontent": "generate", "streamgeneratecontent": "stream"}
_NO_OUTPUT = {"embedcontent": "embed", "batchembedcontents": "embed"}
_FREE = frozenset({"counttokens", "computetokens"})
_STORAGE_FREE = frozenset({"files"})  # uploading files costs no tokens
# (POST auth_tokens mints an ephemeral key for the Live API, whose spend happens out of
# sight on a socket: unmetered, like the other POSTs not named above.)

# google.rpc.Code names for the HTTP statuses seatbelt answers with.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _alias(obj: Mapping[str, Any], camel: str, snake: str) -> str:
    """The spelling a request used for a field; both at once is ambiguous (-> 400)."""
    if obj.get(camel) is not None and obj.get(snake) is not None:
        raise BadRequestBody(f"{camel} and {snake} are the same field; send one")
    return snake if obj.get(snake) is not None else camel


def _config(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _alias(body, "generationConfig", "generation_config")
    config = body.get(name)
    if config is None:
        return name, {}
    if not isinstance(config, dict):
        raise BadRequestBody(f"{name} must be an object")
    return name, config


class Gemini(ApiFamily):
    name = "gemini"
    credential_headers = ("x-goog-api-key", "authorization")
    # `access_token=`: Google APIs take an OAuth token in the query, and Live takes its
    # ephemeral tokens there (BidiGenerateContentConstrained): a credential, so it is
    # authenticated (an unknown one is refused) and redacted like `key=`.
    credential_query = ("key", "access_token")
    usage_markers = (b'"usageMetadata"',)
    output_text = OUTPUT_TEXT
    # Gemini's SentencePiece has byte fallback (at most one token per byte); turn framing
    # is a few tokens per content; built-in tools (googleSearch, codeExecution) carry a
    # prompt of their own (its tokens are reported as toolUsePromptTokenCount): 256.
    message_keys = ("contents",)
    # Google's model pages: 1.5 Pro 2,097,152 tokens; 1.5 Flash and 2.x / 2.5: 1,048,576.
    context_windows = (("gemini-1.5-pro", 2_097_152), ("gemini-1.5-flash", 1_048_576),
                       ("gemini-2", 1_048_576))
    base_tokens = 16
    per_message = 8
    per_tool = 32
    tools_prompt = 256

    def tool_count(self, body: dict[str, Any]) -> int:
        """Each tool entry, and each function declaration inside one."""
        tools = body.get("tools")
        if not isinstance(tools, list):
            return 0
        n = len(tools)
        for tool in tools:
            if isinstance(tool, dict):
                for key in ("functionDeclarations", "function_declarations"):
                    value = tool.get(key)
                    n += len(value) if isinstance(value, list) else 0
        return n

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        p = norm_path(path)
        method = method.upper()
        m = _METHOD.search(p)
        if m is not None:
            verb = m.group(1)
            found = _MODEL.search(unquote(path.split("?", 1)[0]).rstrip("/"))
            model = found.group(1) if found else None
            if method in READ_ONLY or verb in _FREE:
                return Route(self, "gemini", verb, "free", model)
            if method == "POST" and verb in _METERED:
                return Route(self, "gemini", _METERED[verb], "metered", model)
            if method == "POST" and verb in _NO_OUTPUT:
                return Route(self, "gemini", "embed", "metered", model)
            # batchGenerateContent, predict, rawPredict, ...: cost seatbelt cannot see
            return Route(self, "gemini", verb, "unmetered", model)
        m = _RESOURCE.search(p)
        if m is None:
            return None
        resource = m.group(1)
        free = method in READ_ONLY or method == "DELETE" or resource in _STORAGE_FREE
        return Route(self, "gemini", resource, "free" if free else "unmetered")

    def parse_request(self, route: Route, body: dict[str, Any]) -> RequestFacts:
        check_spelling(body)
        model = route.model_from_path
        if route.endpoint == "embed":
            return RequestFacts(model, False, None, 1, produces_output=False)
        name, config = _config(body)
        check_spelling(config, name)
        # 0 is proto3's "unset": the model's default limit, which seatbelt cannot bound.
        limit = read_output_limit(config, _alias(config, "maxOutputTokens", "max_output_tokens"))
        n = read_multiplier(config, _alias(config, "candidateCount", "candidate_count"))
        stream = route.endpoint == "stream"
        cached = _alias(body, "cachedContent", "cached_content")
        hidden = cached if body.get(cached) is not None else None
        # Every Gemini stream chunk can carry usage; nothing needs to be requested.
        return RequestFacts(model, stream, limit, n, wants_usage=stream, hidden_context=hidden,
                            hidden_reasoning=self.hides_reasoning(model, body))

    def hides_reasoning(self, model: str | None, body: dict[str, Any]) -> bool:
        # Gemini 2.5 and later think by default (thoughtsTokenCount, billed as output);
        # any model given a thinkingConfig may.
        _, config = _config(body)
        configured = any(config.get(k) is not None for k in ("thinkingConfig", "thinking_config"))
        return configured or (isinstance(model, str) and _THINKING.match(model) is not None)

    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        name, config = _config(body)
        config = dict(config)
        snake = name == "generation_config"
        for key in ("maxOutputTokens", "max_output_tokens"):
            config.pop(key, None)  # a null spelling must not sit beside the written one
        config["max_output_tokens" if snake else "maxOutputTokens"] = limit
        body[name] = config

    def framing(self, route: Route, facts: RequestFacts, content_type: str) -> Framing:
        if content_type.lower().startswith("text/event-stream"):
            return "sse"  # ?alt=sse
        return "json-array" if route.endpoint == "stream" else "json"

    def new_usage_reader(self, route: Route) -> UsageReader:
        return GeminiUsageReader(no_output=route.endpoint == "embed")

    def error_body(self, error: ErrorShape) -> dict[str, Any]:
        status = _STATUS.get(error.status) or ("INTERNAL" if error.status >= 500
                                               else "FAILED_PRECONDITION")
        return {
            "error": {
                "code": error.status,
                "message": error.message,
                "status": status,
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": error.code.upper(),
                        "domain": "seatbelt",
                        "metadata": {"code": error.code},
                    },
                    *([] if error.retry_after is None else [{
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{error.retry_after}s",  # Gemini's own retry hint
                    }]),
                ],
            }
        }

    def assemble(self, a: Assembly, obj: dict[str, Any]) -> bool:
        """A GenerateContentResponse (whole, or one streamed chunk), for the content view."""
        if not (isinstance(obj.get("candidates"), list) or "usageMetadata" in obj):
            return False
        _gemini(a, obj)
        return True


class GeminiUsageReader(UsageReader):
    """Each `usageMetadata` is a cumulative snapshot: the last one replaces the rest."""

    def __init__(self, no_output: bool = False) -> None:
        super().__init__()
        self.no_output = no_output

    def feed(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        u = obj.get("usageMetadata")
        if u is None:
            return
        if not isinstance(u, dict):
            self.invalid = "usageMetadata is not an object"
            return
        prompt = usage_field(u, "promptTokenCount", self)
        tool_prompt = usage_field(u, "toolUsePromptTokenCount", self)
        candidates = usage_field(u, "candidatesTokenCount", self)
        thoughts = usage_field(u, "thoughtsTokenCount", self)
        if prompt is not None:
            prompt += tool_prompt or 0
        # Early chunks carry only the prompt: no output count is "not known yet", not 0.
        if candidates is None and thoughts is None:
            completion = 0 if self.no_output else None
        else:
            completion = (candidates or 0) + (thoughts or 0)
        self.usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=usage_field(u, "cachedContentTokenCount", self),
            reasoning_tokens=thoughts,
        )


# -- the content view's assembly (ApiFamily.assemble) --


def _gemini(a: Assembly, obj: dict[str, Any]) -> None:
    a.api("gemini")
    a.model(obj.get("modelVersion"))
    a.usage(obj.get("usageMetadata"))  # cumulative snapshots: the last one wins
    for n, cand in enumerate(obj.get("candidates") or []):
        if not isinstance(cand, dict):
            continue
        choice = a.s.choice(cand.get("index", n))
        content = cand["content"] if isinstance(cand.get("content"), dict) else {}
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                tool = choice.tool(("call", len(choice._tools)), call.get("name"))
                tool.content = json.dumps(call.get("args", {}), ensure_ascii=False)
            else:
                choice.add("reasoning" if part.get("thought") else "text", part.get("text"))
        if cand.get("finishReason"):
            choice.finish = str(cand["finishReason"])
