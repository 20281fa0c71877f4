"""OpenAI-style APIs: OpenAI, Azure OpenAI and the many compatible servers.

Routing is by path shape under any prefix (`/v1/chat/completions`, `/openai/v1/...`,
`/api/v1/...`, `/chat/completions`, Azure `/openai/deployments/{d}/...`), never by host,
so a self-hosted vLLM behind any base URL is metered like api.openai.com.

The field-reading rules shared by every family live in `fields.py`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping
from urllib.parse import unquote

from seatbelt.apis.assembly import Assembly, Choice
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
    read_bool,
    read_model,
    read_multiplier,
    read_output_limit,
    sub,
    usage_field,
)

# Generated text in a response: message/delta content, legacy completions text, tool-call
# arguments, refusals and the reasoning text some servers stream (vLLM, Ollama).
OUTPUT_TEXT = re.compile(
    rb'"(?:content|text|arguments|re(?:fusal|asoning(?:_content)?))"\s*:\s*' + JSON_STRING
)


def provider_of(deployment: str | None, headers: Mapping[str, str]) -> str:
    """`azure` for an Azure deployment path or Azure's `api-key` header, else `openai`."""
    if deployment is not None or any(k.lower() == "api-key" for k in headers):
        return "azure"
    return "openai"


_METERED = (
    (re.compile(r"(?:^|/)chat/completions$"), "chat"),
    (re.compile(r"(?:^|/)completions$"), "completions"),
    (re.compile(r"(?:^|/)embeddings$"), "embeddings"),
)
_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/", re.IGNORECASE)
# Other endpoints of the family, found after a version-like segment so that a random
# application's `/static/images/...` is not taken for OpenAI's images API.
_RESOURCE = re.compile(
    r"(?:^|/)(?:v1|openai|deployments/[^/]+)/"
    r"(models|files|moderations|batches|fine_tuning|fine-tunes|realtime|assistants|threads"
    r"|audio|images|uploads|responses|vector_stores|conversations|containers|evals|videos"
    r"|chatkit|chat/completions/[^/]+|completions/[^/]+)(?:/(.*))?$"
)
# Amazon Bedrock's runtime (`/model/{id}/invoke`, `converse`, their streams, async jobs and
# guardrails): no family reads its usage yet, so it is refused as unmetered, never passed.
_BEDROCK = re.compile(
    r"(?:^|/)(?:model/.+/(invoke|invoke-with-response-stream|converse|converse-stream)"
    r"|(async-invoke)(?:/.*)?|guardrail/.+/(apply))$"
)
# A realtime session (websocket GET, or POST minting client secrets) spends tokens
# whatever its method; everything else read-only is free.
_ALWAYS_UNMETERED = frozenset({"realtime"})


class OpenAI(ApiFamily):
    name = "openai"
    credential_headers = ("authorization", "api-key")
    usage_markers: tuple[bytes, ...] = (b'"usage"',)
    output_text = OUTPUT_TEXT
    # Chat framing is 3 tokens per message (+1 for a name) and 3 to prime the reply
    # (OpenAI's token-counting cookbook); tools are rendered as a TypeScript-like
    # namespace (~10 tokens of wrapper, a few per function) beside their JSON's text;
    # compatible servers apply their model's chat template (Llama 3: 5 per message).
    # Each figure here is at least twice that.
    message_keys = ("messages", "input")
    # OpenAI's model pages: GPT-4.1 1,047,576; GPT-5 400,000; o-series 200,000; GPT-4o 128,000.
    context_windows = (("gpt-4.1", 1_047_576), ("gpt-5", 400_000), ("o1", 200_000),
                       ("o3", 200_000), ("o4", 200_000), ("gpt-4o", 128_000),
                       ("gpt-4-turbo", 128_000), ("codex", 400_000))
    base_tokens = 16
    per_message = 8
    per_tool = 32
    tools_prompt = 64

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        p = norm_path(path)
        method = method.upper()
        m = _DEPLOYMENT.search(path.split("?", 1)[0] + "/")
        deployment = unquote(m.group(1)) if m else None
        provider = provider_of(deployment, headers)
        for rx, endpoint in _METERED:
            if rx.search(p):
                if method == "POST":
                    kind: EndpointKind = "metered"
                elif method in READ_ONLY:
                    kind = "free"  # e.g. listing stored chat completions
                else:
                    kind = "unmetered"
                return Route(self, provider, endpoint, kind, deployment)
        m = _BEDROCK.search(p)
        if m is not None:
            verb = next(g for g in m.groups() if g)
            return Route(self, "bedrock", verb, "free" if method in READ_ONLY else "unmetered")
        m = _RESOURCE.search(p)
        if m is None:
            return None
        resource, rest = m.group(1).split("/", 1)[0], m.group(2) or ""
        if resource in _ALWAYS_UNMETERED:
            kind = "unmetered"
        elif method in READ_ONLY:
            kind = "free"
        elif resource == "moderations" or (resource == "responses" and rest == "input_tokens"):
            kind = "free"  # moderation is free of charge; input_tokens only counts
        else:
            kind = "unmetered"
        return Route(self, provider, resource, kind, deployment)

    def parse_request(self, route: Route, body: dict[str, Any]) -> RequestFacts:
        check_spelling(body)
        model = read_model(body, route.model_from_path)
        if route.model_from_path is not None:
            # Azure runs the deployment the path names, whatever `model` the body says: the
            # path decides allow-lists, prices, limits and metrics.
            model = route.model_from_path
        if route.endpoint == "embeddings":
            return RequestFacts(model, False, None, 1, produces_output=False)
        stream = read_bool(body, "stream")
        if route.endpoint == "chat":
            limit = _chat_limit(body)
            multiplier = read_multiplier(body, "n")
        else:
            limit = read_output_limit(body, "max_tokens")
            best = max(read_multiplier(body, "n"), read_multiplier(body, "best_of"))
            multiplier = best * prompt_count(body.get("prompt"))
        options = body.get("stream_options")
        wants = stream and isinstance(options, dict) and options.get("include_usage") is True
        return RequestFacts(model, stream, limit, multiplier, wants_usage=wants,
                            hidden_reasoning=self.hides_reasoning(model, body))

    def hides_reasoning(self, model: str | None, body: dict[str, Any]) -> bool:
        # o1/o3/o4/gpt-5 reason by default and stream none of it; any model asked to
        # reason (`reasoning_effort`, the Responses API's `reasoning`) may too.
        return _reasoning_model(model) or any(
            body.get(k) is not None for k in ("reasoning_effort", "reasoning"))

    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        # `max_tokens` is the one limit every OpenAI-compatible server parses: Ollama's
        # /v1 and older vLLM/llama.cpp builds ignore `max_completion_tokens`, so writing
        # that would leave the request unbounded there. OpenAI's own reasoning models
        # (o1, o3, o4-mini, gpt-5...) reject `max_tokens` with a 400, so those names
        # get `max_completion_tokens`, which OpenAI and Azure honour for every model.
        name = "max_tokens"
        model = route.model_from_path or body.get("model")
        if route.endpoint == "chat" and _reasoning_model(model):
            name = "max_completion_tokens"
        body[name] = limit

    def request_usage(self, route: Route, body: dict[str, Any]) -> bool:
        if route.endpoint not in ("chat", "completions") or body.get("stream") is not True:
            return False
        options = body.get("stream_options")
        if isinstance(options, dict):
            if options.get("include_usage") is True:
                return False
            body["stream_options"] = {**options, "include_usage": True}
        else:
            body["stream_options"] = {"include_usage": True}
        return True

    def is_injected_usage_frame(self, obj: Any) -> bool:
        # Recognised by a non-null usage object; Azure's first chunk also has empty
        # choices (with prompt_filter_results) but no usage, and must reach the client.
        return isinstance(obj, dict) and obj.get("usage") is not None and not obj.get("choices")

    def framing(self, route: Route, facts: RequestFacts, content_type: str) -> Framing:
        return "sse" if content_type.lower().startswith("text/event-stream") else "json"

    def new_usage_reader(self, route: Route) -> UsageReader:
        return OpenAIUsageReader(no_output=route.endpoint == "embeddings")

    def error_body(self, error: ErrorShape) -> dict[str, Any]:
        return {
            "error": {
                "message": error.message,
                "type": _error_type(error),
                "param": None,
                "code": error.code,
            }
        }

    def assemble(self, a: Assembly, obj: dict[str, Any]) -> bool:
        """Chat, chat chunks, legacy completions and embeddings, for the content view."""
        if isinstance(obj.get("choices"), list):
            _openai(a, obj)
        elif obj.get("object") == "list" and isinstance(obj.get("data"), list):
            _embeddings(a, obj)
        else:
            return False
        return True


def _chat_limit(body: dict[str, Any]) -> int | None:
    """The chat output limit. Servers differ in which of the two names wins when both are
    sent (vLLM: max_completion_tokens; older llama.cpp / Ollama builds: max_tokens), so two
    different values are refused."""
    completion_limit = read_output_limit(body, "max_completion_tokens")
    tokens_limit = read_output_limit(body, "max_tokens")
    if None not in (completion_limit, tokens_limit) and completion_limit != tokens_limit:
        raise BadRequestBody(
            "max_tokens and max_completion_tokens differ: servers read different ones; "
            "send one")
    return completion_limit if completion_limit is not None else tokens_limit


def prompt_count(prompt: Any) -> int:
    """Legacy completions generate n choices *per prompt*: a list of strings or of token
    lists is that many prompts; a string or one token list is one."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return len(prompt)
    return 1


# OpenAI's reasoning models, by the names OpenAI and Azure deployments use. Prefixed
# names ("openai/o3") are gateway spellings (OpenRouter, LiteLLM), which take max_tokens.

_REASONING = re.compile(r"^(?:o\d|gpt-5|codex)", re.IGNORECASE)


def _reasoning_model(model: Any) -> bool:
    return isinstance(model, str) and _REASONING.match(model) is not None


def _error_type(error: ErrorShape) -> str:
    """OpenAI's `type` for a refusal (contract §5)."""
    if error.code == "insufficient_quota":
        return "insufficient_quota"
    if error.code == "rate_limit_exceeded":
        return "tokens"
    if error.status >= 500:
        return "server_error"
    return "invalid_request_error"


class OpenAIUsageReader(UsageReader):
    """The last non-null `usage` object wins, whole: it is a snapshot, never an increment."""

    def __init__(self, no_output: bool = False) -> None:
        super().__init__()
        self.no_output = no_output  # embeddings: no completion tokens exist

    def feed(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        u = obj.get("usage")
        if u is None:
            return
        if not isinstance(u, dict):
            self.invalid = "usage is not an object"
            return
        prompt_details = sub(u, "prompt_tokens_details") or sub(u, "input_tokens_details")
        completion_details = sub(u, "completion_tokens_details") or sub(
            u, "output_tokens_details"
        )
        prompt_name = "prompt_tokens" if "prompt_tokens" in u else "input_tokens"
        completion_name = "completion_tokens" if "completion_tokens" in u else "output_tokens"
        completion = usage_field(u, completion_name, self)
        if completion is None and self.no_output and u.get(completion_name) is None:
            completion = 0
        cache_write = usage_field(prompt_details, "cache_write_tokens", self)
        if cache_write is None:
            cache_write = usage_field(u, "cache_write_tokens", self)
        self.usage = Usage(
            prompt_tokens=usage_field(u, prompt_name, self),
            completion_tokens=completion,
            cached_tokens=usage_field(prompt_details, "cached_tokens", self),
            cache_write_tokens=cache_write,
            reasoning_tokens=usage_field(completion_details, "reasoning_tokens", self),
        )


# -- the content view's assembly (ApiFamily.assemble) --


def _openai(a: Assembly, obj: dict[str, Any]) -> None:
    a.model(obj.get("model"))
    if obj.get("usage"):
        a.usage(obj["usage"])
    for c in obj["choices"]:
        if not isinstance(c, dict):
            continue
        choice = a.s.choice(c.get("index", 0))
        if isinstance(c.get("delta"), dict):
            a.api("openai chat")
            _openai_message(a, choice, c["delta"], streamed=True)
        elif isinstance(c.get("message"), dict):
            a.api("openai chat")
            _openai_message(a, choice, c["message"], streamed=False)
        elif "text" in c:
            a.api("openai completions")
            choice.add("text", c.get("text"))
        if c.get("finish_reason"):
            choice.finish = str(c["finish_reason"])
    a.api("openai")


def _openai_message(a: Assembly, choice: Choice, m: dict[str, Any], *, streamed: bool) -> None:
    choice.add("reasoning", m.get("reasoning_content") or m.get("reasoning"))
    choice.add("text", m.get("content"))
    choice.add("refusal", m.get("refusal"))
    calls = m.get("tool_calls") or []
    if isinstance(m.get("function_call"), dict):
        calls = [{"index": "function_call", "function": m["function_call"]}]
    for n, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, dict):
            continue
        fn = call["function"] if isinstance(call.get("function"), dict) else {}
        key = call.get("index", n) if streamed else n
        part = choice.tool(key, fn.get("name"), call.get("id"))
        args = fn.get("arguments")
        if isinstance(args, str):
            part.content += args
        elif args is not None:
            part.content += json.dumps(args, ensure_ascii=False)


def _embeddings(a: Assembly, obj: dict[str, Any]) -> None:
    vectors = [d for d in obj["data"] if isinstance(d, dict) and "embedding" in d]
    if not vectors:
        return
    a.api("openai embeddings")
    a.model(obj.get("model"))
    a.usage(obj.get("usage"))
    first = vectors[0]["embedding"]
    a.s.embeddings = (len(vectors), len(first) if isinstance(first, list) else 0)
