"""LLM responses readable in mitmweb and the console.

A streamed LLM answer is hundreds of SSE frames of one token each. This module turns such a
body (SSE, NDJSON or JSON, OpenAI-style, Anthropic, Gemini or Ollama) into what a developer
wants to see: the assembled assistant text, tool calls, finish reason and usage. The parsing
is pure (`summarize`, `render`); the view classes only adapt it to mitmproxy 11's
`contentviews.View` or mitmproxy 12's `Contentview`, whichever is installed.

The body put back on a streamed flow, with its cut marker, is built by
seatbelt/codec/keptbody.py (settlement puts it there; this view reads it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mitmproxy import contentviews, http

from seatbelt.apis import read_error
from seatbelt.apis.base import describe_error
from seatbelt.codec.keptbody import CUT_MARKER, cut_marker, shown_body  # noqa: F401 (API)

VIEW_NAME = "LLM"
PRIORITY = 3  # above JSON (1) and Raw (0.1): auto-selected for LLM response bodies
ERROR_ONLY = "API error"  # a body that is only an error object: LLM-ish, but not only LLM
MAX_BODY = 16 << 20  # larger bodies are left to mitmproxy's own views (kept copies: 1 MiB)
_ANTHROPIC_EVENTS = {
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop", "ping",
}

# --------------------------------------------------------------------------- parsing


@dataclass
class Part:
    kind: str  # text | reasoning | refusal | tool
    content: str = ""
    name: str = ""  # tool name
    call_id: str = ""


@dataclass
class Choice:
    index: int
    parts: list[Part] = field(default_factory=list)
    finish: str | None = None
    _tools: dict[str, Part] = field(default_factory=dict)

    def add(self, kind: str, text: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        if self.parts and self.parts[-1].kind == kind:
            self.parts[-1].content += text
        else:
            self.parts.append(Part(kind, text))

    def tool(self, key: Any, name: Any = None, call_id: Any = None) -> Part:
        key = repr(key)  # ids and indexes come from the wire: maybe lists, never trusted
        part = self._tools.get(key)
        if part is None:
            part = self._tools[key] = Part("tool")
            self.parts.append(part)
        if isinstance(name, str) and name:
            part.name = name
        if isinstance(call_id, str) and call_id:
            part.call_id = call_id
        return part


@dataclass
class Summary:
    """What one LLM response body says, assembled from all its frames."""

    api: str
    framing: str  # sse | ndjson | json
    frames: int = 0
    model: str | None = None
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unparsed: int = 0
    embeddings: tuple[int, int] | None = None  # (vectors, dimensions)
    cut: str | None = None

    def choice(self, index: Any = 0) -> Choice:
        i = index if isinstance(index, int) else 0
        if i not in self.choices:
            self.choices[i] = Choice(i)
        return self.choices[i]

    def output_text(self) -> str:
        """Every generated piece (text, reasoning, tool arguments) in order."""
        return "".join(p.content for c in self.choices.values() for p in c.parts)


def _split_cut(body: bytes) -> tuple[bytes, str | None]:
    at = body.rfind(CUT_MARKER)
    if at < 0:
        return body, None
    return body[:at], body[at:].strip().decode("utf-8", "replace")


def _framing(body: bytes, content_type: str) -> str:
    ct = content_type.lower()
    if "event-stream" in ct:
        return "sse"
    if "ndjson" in ct or "jsonl" in ct:
        return "ndjson"
    head = body.lstrip()[:16]
    if head.startswith((b"data:", b"event:", b"id:", b":")):
        return "sse"
    return "json"


def _sse_frames(body: bytes, summary: Summary, cut: bool) -> list[Any]:
    events = body.replace(b"\r\n", b"\n").split(b"\n\n")
    out: list[Any] = []
    for i, event in enumerate(events):
        data = []
        for line in event.split(b"\n"):
            name, _, value = line.partition(b":")
            value = value[1:] if value[:1] == b" " else value
            if name == b"data":
                data.append(value)
            elif name == b"error":  # llama.cpp's non-standard error field
                summary.errors.append(value.decode("utf-8", "replace"))
        payload = b"\n".join(data).strip()
        if not payload or payload == b"[DONE]":
            continue
        last = i == len(events) - 1
        _parse_into(payload, out, summary, tolerate=cut and last)
    return out


def _parse_into(payload: bytes, out: list[Any], summary: Summary, tolerate: bool) -> None:
    try:
        out.append(json.loads(payload))
    except (ValueError, RecursionError):
        if not tolerate:  # the frame the cut went through is expected to be broken
            summary.unparsed += 1


def _ndjson_frames(body: bytes, summary: Summary, cut: bool) -> list[Any]:
    out: list[Any] = []
    lines = [x for x in body.split(b"\n") if x.strip()]
    for i, line in enumerate(lines):
        _parse_into(line, out, summary, tolerate=cut and i == len(lines) - 1)
    return out


def _json_frames(body: bytes, summary: Summary, cut: bool) -> list[Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        if body.lstrip().startswith(b"["):
            return _array_prefix(body) if cut else []
        summary.framing = "ndjson"  # JSON lines sent as application/json
        return _ndjson_frames(body, summary, cut)
    return doc if isinstance(doc, list) else [doc]


def _array_prefix(body: bytes) -> list[Any]:
    """The complete elements of a cut top-level JSON array (Gemini without alt=sse)."""
    text = body.decode("utf-8", "replace").lstrip()
    if not text.startswith("["):
        return []
    decoder, out, i = json.JSONDecoder(), [], 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        try:
            obj, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            return out
        out.append(obj)


class _Assembler:
    """Feeds parsed frames into a Summary, recognising each API by the shape of its frames."""

    def __init__(self, summary: Summary) -> None:
        self.s = summary
        self.blocks: dict[str, Part] = {}  # repr(anthropic content block index) -> part
        self.items: dict[str, Part] = {}  # repr(responses API item id) -> tool part

    def api(self, name: str) -> None:
        """The first specific name wins; the generic "openai" (a usage-only or empty-choices
        chunk) gives way to the chat/completions name a later frame reveals."""
        if not self.s.api or (self.s.api == "openai" and name != "openai"):
            self.s.api = name

    def model(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.s.model = value

    def usage(self, value: Any, merge: bool = False) -> None:
        if isinstance(value, dict) and value:
            if merge:
                self.s.usage.update({k: v for k, v in value.items() if v is not None})
            else:
                self.s.usage = dict(value)

    def error(self, text: str | None) -> None:
        """One line per distinct error (read by seatbelt/apis: the audit's wording): a
        Responses stream reports one twice (error event, then response.failed)."""
        if text and text not in self.s.errors:
            self.s.errors.append(text)

    def feed(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("type") if isinstance(obj.get("type"), str) else None
        if kind is not None and kind.startswith("response."):
            self.responses_event(kind, obj)
        elif kind in _ANTHROPIC_EVENTS:
            self.anthropic_event(kind, obj)
        elif kind == "message" and isinstance(obj.get("content"), list):
            self.anthropic_message(obj)
        elif kind == "error":  # Anthropic {"error": {...}}; Responses {"code", "message"}
            self.api(ERROR_ONLY)
            self.error(read_error(obj))
        elif obj.get("object") == "response" and isinstance(obj.get("output"), list):
            self.responses_object(obj)
        elif isinstance(obj.get("choices"), list):
            self.openai(obj)
        elif isinstance(obj.get("candidates"), list) or "usageMetadata" in obj:
            self.gemini(obj)
        elif "done" in obj and ("message" in obj or "response" in obj):
            self.ollama(obj)
        elif obj.get("object") == "list" and isinstance(obj.get("data"), list):
            self.embeddings(obj)
        elif "error" in obj:
            self.api(ERROR_ONLY)
            self.error(read_error(obj))
        else:
            return
        self.s.frames += 1

    # -- OpenAI-style: chat, chat chunks, legacy completions ---------------------------

    def openai(self, obj: dict[str, Any]) -> None:
        self.model(obj.get("model"))
        if obj.get("usage"):
            self.usage(obj["usage"])
        for c in obj["choices"]:
            if not isinstance(c, dict):
                continue
            choice = self.s.choice(c.get("index", 0))
            if isinstance(c.get("delta"), dict):
                self.api("openai chat")
                self.openai_message(choice, c["delta"], streamed=True)
            elif isinstance(c.get("message"), dict):
                self.api("openai chat")
                self.openai_message(choice, c["message"], streamed=False)
            elif "text" in c:
                self.api("openai completions")
                choice.add("text", c.get("text"))
            if c.get("finish_reason"):
                choice.finish = str(c["finish_reason"])
        self.api("openai")

    def openai_message(self, choice: Choice, m: dict[str, Any], *, streamed: bool) -> None:
        choice.add("reasoning", m.get("reasoning_content") or m.get("reasoning"))
        choice.add("text", m.get("content"))
        choice.add("refusal", m.get("refusal"))
        calls = m.get("tool_calls") or []
        if isinstance(m.get("function_call"), dict):
            calls = [{"index": "function_call", "function": m["function_call"]}]
        for n, call in enumerate(calls if isinstance(calls, list) else []):
            if not isinstance(call, dict):
                continue
            fn = call.get("function") if isinstance(call.get("function"), dict) else {}
            key = call.get("index", n) if streamed else n
            part = choice.tool(key, fn.get("name"), call.get("id"))
            args = fn.get("arguments")
            if isinstance(args, str):
                part.content += args
            elif args is not None:
                part.content += json.dumps(args, ensure_ascii=False)

    # -- Anthropic ---------------------------------------------------------------------

    def anthropic_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.api("anthropic messages")
        choice = self.s.choice(0)
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            self.model(obj["message"].get("model"))
            self.usage(obj["message"].get("usage"))
        elif kind == "content_block_start" and isinstance(obj.get("content_block"), dict):
            block = obj["content_block"]
            if block.get("type") in ("tool_use", "server_tool_use"):
                self.blocks[repr(obj.get("index"))] = choice.tool(
                    ("block", obj.get("index")), block.get("name"), block.get("id")
                )
            else:
                choice.add(_block_kind(block), block.get("text") or block.get("thinking"))
        elif kind == "content_block_delta" and isinstance(obj.get("delta"), dict):
            delta = obj["delta"]
            if delta.get("type") == "input_json_delta":
                index = obj.get("index")
                part = self.blocks.get(repr(index)) or choice.tool(("block", index))
                part.content += delta.get("partial_json") or ""
            elif delta.get("type") == "thinking_delta":
                choice.add("reasoning", delta.get("thinking"))
            elif delta.get("type") == "text_delta":
                choice.add("text", delta.get("text"))
        elif kind == "message_delta":
            delta = obj.get("delta") if isinstance(obj.get("delta"), dict) else {}
            if delta.get("stop_reason"):
                choice.finish = str(delta["stop_reason"])
            self.usage(obj.get("usage"), merge=True)  # cumulative: replace field by field

    def anthropic_message(self, obj: dict[str, Any]) -> None:
        self.api("anthropic messages")
        self.model(obj.get("model"))
        self.usage(obj.get("usage"))
        choice = self.s.choice(0)
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

    # -- OpenAI Responses API ----------------------------------------------------------

    def responses_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.api("openai responses")
        choice = self.s.choice(0)
        if kind == "response.output_text.delta":
            choice.add("text", obj.get("delta"))
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            choice.add("reasoning", obj.get("delta"))
        elif kind == "response.refusal.delta":
            choice.add("refusal", obj.get("delta"))
        elif kind == "response.output_item.added" and isinstance(obj.get("item"), dict):
            item = obj["item"]
            if item.get("type") == "function_call":
                self.items[repr(item.get("id"))] = choice.tool(
                    ("item", item.get("id")), item.get("name"), item.get("call_id")
                )
        elif kind == "response.function_call_arguments.delta":
            item_id = obj.get("item_id")
            part = self.items.get(repr(item_id)) or choice.tool(("item", item_id))
            part.content += obj.get("delta") or ""
        elif isinstance(obj.get("response"), dict):
            resp = obj["response"]
            self.model(resp.get("model"))
            self.usage(resp.get("usage"))
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                choice.finish = _responses_finish(resp)
                if not choice.parts:
                    self.responses_output(choice, resp.get("output"))
                if isinstance(resp.get("error"), dict):
                    self.error(describe_error(resp["error"]))

    def responses_object(self, obj: dict[str, Any]) -> None:
        self.api("openai responses")
        self.model(obj.get("model"))
        self.usage(obj.get("usage"))
        choice = self.s.choice(0)
        self.responses_output(choice, obj.get("output"))
        choice.finish = _responses_finish(obj)

    def responses_output(self, choice: Choice, output: Any) -> None:
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

    # -- Gemini, Ollama, embeddings ----------------------------------------------------

    def gemini(self, obj: dict[str, Any]) -> None:
        self.api("gemini")
        self.model(obj.get("modelVersion"))
        self.usage(obj.get("usageMetadata"))  # cumulative snapshots: the last one wins
        for n, cand in enumerate(obj.get("candidates") or []):
            if not isinstance(cand, dict):
                continue
            choice = self.s.choice(cand.get("index", n))
            content = cand.get("content") if isinstance(cand.get("content"), dict) else {}
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

    def ollama(self, obj: dict[str, Any]) -> None:
        self.api("ollama")
        self.model(obj.get("model"))
        choice = self.s.choice(0)
        msg = obj.get("message") if isinstance(obj.get("message"), dict) else {}
        choice.add("reasoning", msg.get("thinking") or obj.get("thinking"))
        choice.add("text", msg.get("content") or obj.get("response"))
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                tool = choice.tool(("call", len(choice._tools)), fn.get("name"))
                tool.content = json.dumps(fn.get("arguments", {}), ensure_ascii=False)
        if obj.get("done"):
            choice.finish = str(obj.get("done_reason") or "stop")
            self.usage({k: v for k, v in obj.items() if k.endswith(("_count", "_duration"))})

    def embeddings(self, obj: dict[str, Any]) -> None:
        vectors = [d for d in obj["data"] if isinstance(d, dict) and "embedding" in d]
        if not vectors:
            return
        self.api("openai embeddings")
        self.model(obj.get("model"))
        self.usage(obj.get("usage"))
        first = vectors[0]["embedding"]
        self.s.embeddings = (len(vectors), len(first) if isinstance(first, list) else 0)


def _block_kind(block: dict[str, Any]) -> str:
    return "reasoning" if block.get("type") in ("thinking", "redacted_thinking") else "text"


def _responses_finish(resp: dict[str, Any]) -> str | None:
    status = resp.get("status")
    details = resp.get("incomplete_details")
    if isinstance(details, dict) and details.get("reason"):
        return f"{status}: {details['reason']}"
    return str(status) if status else None


@lru_cache(maxsize=8)
def summarize(body: bytes, content_type: str = "") -> Summary | None:
    """The assembled response, or None when the body is not an LLM response."""
    data, cut = _split_cut(body)
    framing = _framing(data, content_type or "")
    if len(data) > MAX_BODY or (framing != "sse" and data.lstrip()[:1] not in (b"{", b"[")):
        return None  # cheap refusal: images, HTML, text are never parsed
    summary = Summary(api="", framing=framing, cut=cut)
    if framing == "sse":
        frames = _sse_frames(data, summary, cut is not None)
    elif framing == "ndjson":
        frames = _ndjson_frames(data, summary, cut is not None)
    else:
        frames = _json_frames(data, summary, cut is not None)
    assembler = _Assembler(summary)
    for frame in frames:
        assembler.feed(frame)
    if not summary.api:
        return None
    return summary


# --------------------------------------------------------------------------- rendering


def _flat(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            out.append(f"{prefix}{k}={v}")
    return out


def _pretty_args(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def headline(s: Summary) -> str:
    frames = f"{s.frames} frame{'s' if s.frames != 1 else ''}"
    model = f", model {s.model}" if s.model else ""
    return f"{s.api}: {s.framing.upper()}, {frames}{model}"


def render_lines(s: Summary, note: str | None = None) -> list[tuple[str, str]]:
    """(style, text) lines: "header" for the headline and section rules, "error" for
    problems, else "text". `note` (the flow's seatbelt comment) goes right under the
    headline, so the Response tab shows who paid what next to what was said."""
    lines: list[tuple[str, str]] = [("header", headline(s))]
    if note:  # "who, reserved" / "spent, edits" on two lines: the pane is half a screen
        who, sep, spent = note.partition(" spent=")
        lines += [("text", who)] + ([("text", f"  spent={spent}")] if sep else [])
    finishes = [c.finish for c in s.choices.values() if c.finish]
    if finishes:
        lines.append(("text", "finish: " + ", ".join(finishes)))
    if s.usage:
        flat = {k: v for k, v in s.usage.items() if not isinstance(v, (dict, list))}
        lines.append(("text", "usage: " + " ".join(_flat(flat))))
        for k, v in s.usage.items():
            if isinstance(v, dict) and v:
                lines.append(("text", f"  {k}: " + " ".join(_flat(v))))
    if s.embeddings:
        lines.append(("text", f"embeddings: {s.embeddings[0]} vector(s) of {s.embeddings[1]}"))
    lines += [("error", f"error: {e}") for e in s.errors]
    if s.unparsed:
        lines.append(("error", f"{s.unparsed} frame(s) are not JSON (shown by the Raw view)"))
    if s.cut:
        lines.append(("error", s.cut))
    many = len(s.choices) > 1
    for choice in s.choices.values():
        for part in choice.parts:
            who = f"choice {choice.index}: " if many else ""
            if part.kind == "tool":
                ident = f" ({part.call_id})" if part.call_id else ""
                title, body = f"tool call {part.name or '?'}{ident}", _pretty_args(part.content)
            else:
                title = {"text": "assistant", "reasoning": "reasoning", "refusal": "refusal"}
                title, body = title[part.kind], part.content
            lines.append(("text", ""))
            lines.append(("header", f"── {who}{title} ──"))
            lines += [("text", line) for line in body.split("\n")]
    return lines


def render(s: Summary, note: str | None = None) -> str:
    return "\n".join(text for _, text in render_lines(s, note))


def seatbelt_note(flow: Any) -> str | None:
    comment = getattr(flow, "comment", None)
    return comment if isinstance(comment, str) and comment.startswith("seatbelt:") else None


def priority(data: bytes, content_type: str | None, message: Any, flow: Any = None) -> float:
    """Auto-select for LLM responses only; never for requests or other bodies. A body that
    is just `{"error": ...}` is claimed only on a flow seatbelt metered or refused."""
    if not data or isinstance(message, http.Request):
        return -1
    s = summarize(bytes(data), content_type or "")
    if s is None or (s.api == ERROR_ONLY and seatbelt_note(flow) is None):
        return -1
    return PRIORITY


def _not_llm() -> ValueError:
    return ValueError("not an LLM response body (SSE, NDJSON or JSON of a known LLM API)")


# --------------------------------------------------------------------------- the views

if hasattr(contentviews, "Contentview"):  # mitmproxy >= 12

    class LLMContentview(contentviews.Contentview):
        name = VIEW_NAME  # type: ignore[assignment]
        syntax_highlight = "none"  # type: ignore[assignment]

        def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
            s = summarize(bytes(data), metadata.content_type or "")
            if s is None:
                raise _not_llm()
            return render(s, seatbelt_note(metadata.flow))

        def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
            return priority(data, metadata.content_type, metadata.http_message, metadata.flow)

    VIEW: Any = LLMContentview()

    def register() -> None:
        if VIEW_NAME.lower() not in contentviews.registry:
            contentviews.add(VIEW)

else:  # mitmproxy 11
    from mitmproxy.contentviews import base as _base

    class ViewLLM(_base.View):
        name = VIEW_NAME

        def __call__(self, data: bytes, *, content_type: str | None = None,
                     flow: Any = None, **metadata: Any) -> Any:
            s = summarize(bytes(data), content_type or "")
            if s is None:
                return None  # mitmproxy 11 falls back to Raw
            lines = render_lines(s, seatbelt_note(flow))
            return headline(s), iter([[line] for line in lines[1:]])

        def render_priority(self, data: bytes, *, content_type: str | None = None,
                            http_message: Any = None, flow: Any = None,
                            **metadata: Any) -> float:
            return priority(data, content_type, http_message, flow)

    VIEW = ViewLLM()

    def register() -> None:
        if contentviews.get(VIEW_NAME) is None:
            contentviews.add(VIEW)


class LLMView:
    """The addon: registers the view once per process (a script reload keeps it)."""

    def load(self, loader: Any) -> None:
        register()
