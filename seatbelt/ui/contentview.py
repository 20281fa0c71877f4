"""LLM responses readable in mitmweb and the console.

A streamed LLM answer is hundreds of SSE frames of one token each. This module turns such a
body (SSE, NDJSON or JSON, OpenAI-style, Anthropic, Gemini or Ollama) into what a developer
wants to see: the assembled assistant text, tool calls, finish reason and usage. Frames are
cut and errors read by seatbelt/codec/framing.py (as the scanner does); each family module
reads its own frames (`ApiFamily.assemble`, into seatbelt/apis/assembly.py). The parsing
is pure (`summarize`, `render`); the view classes only adapt it to mitmproxy 11's
`contentviews.View` or mitmproxy 12's `Contentview`, whichever is installed.

The body put back on a streamed flow, with its cut marker, is built by
seatbelt/codec/keptbody.py (settlement puts it there; this view reads it).
"""

from __future__ import annotations

import json
import textwrap
from functools import lru_cache
from typing import Any

from mitmproxy import contentviews, http

from seatbelt import apis
from seatbelt.apis.assembly import Assembly, Choice, Part, Summary  # noqa: F401 (API)
from seatbelt.codec.framing import array_elements, error_of, events_of
from seatbelt.codec.keptbody import CUT_MARKER, cut_marker, shown_body  # noqa: F401 (API)
from seatbelt.records import comment as flow_comment

VIEW_NAME = "LLM"
PRIORITY = 3  # above JSON (1) and Raw (0.1): auto-selected for LLM response bodies
ERROR_ONLY = "API error"  # a body that is only an error object: LLM-ish, but not only LLM
MAX_BODY = 16 << 20  # larger bodies are left to mitmproxy's own views (kept copies: 1 MiB)

# --------------------------------------------------------------------------- parsing


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


def _line_frames(body: bytes, summary: Summary, cut: bool) -> list[Any]:
    """Parsed frames of an SSE or NDJSON body, cut the way the scanner cuts them
    (seatbelt/codec/framing.py)."""
    out: list[Any] = []
    events = list(events_of(body, summary.framing))
    for i, (payload, err) in enumerate(events):
        if err is not None:
            summary.add_error(err)
        if payload is None:
            continue
        try:
            out.append(json.loads(payload))
        except (ValueError, RecursionError):
            if not (cut and i == len(events) - 1):  # the frame the cut went through
                summary.unparsed += 1
    return out


def _parsed(elements: list[bytes]) -> list[Any]:
    out = []
    for element in elements:
        try:
            out.append(json.loads(element))
        except (ValueError, RecursionError):
            pass  # not JSON after all: the Raw view shows it
    return out


def _json_frames(body: bytes, summary: Summary, cut: bool) -> list[Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        if body.lstrip().startswith(b"["):
            return _parsed(array_elements(body)) if cut else []
        summary.framing = "ndjson"  # JSON lines sent as application/json
        return _line_frames(body, summary, cut)
    return doc if isinstance(doc, list) else [doc]


def _assemble(a: Assembly, obj: Any) -> None:
    """One parsed frame into the summary: the first family whose shape it is reads it
    (seatbelt/apis/*.py `assemble`); a frame that is only an error is shown as one."""
    if not isinstance(obj, dict):
        return
    err = error_of(obj)  # the scanner's own reading: the audit log's text
    if err is not None:
        a.s.add_error(err)
    if not any(family.assemble(a, obj) for family in apis.FAMILIES):
        if obj.get("type") != "error" and "error" not in obj:
            return
        a.api(ERROR_ONLY)  # Anthropic {"type": "error"}, Responses {"code", ...}, any API's
    a.s.frames += 1


@lru_cache(maxsize=8)
def summarize(body: bytes, content_type: str = "") -> Summary | None:
    """The assembled response, or None when the body is not an LLM response."""
    data, cut = _split_cut(body)
    framing = _framing(data, content_type or "")
    if len(data) > MAX_BODY or (framing != "sse" and data.lstrip()[:1] not in (b"{", b"[")):
        return None  # cheap refusal: images, HTML, text are never parsed
    summary = Summary(api="", framing=framing, cut=cut)
    if framing in ("sse", "ndjson"):
        frames = _line_frames(data, summary, cut is not None)
    else:
        frames = _json_frames(data, summary, cut is not None)
    assembly = Assembly(summary)
    for frame in frames:
        _assemble(assembly, frame)
    if not summary.api:
        return None
    return summary


# --------------------------------------------------------------------------- rendering


def _flat(d: dict[str, Any]) -> list[str]:
    """`a.b=1` lines of nested objects, in order; iterative (an upstream's usage object
    may be nested as deep as it likes)."""
    out = []
    stack: list[tuple[str, Any]] = [("", iter(d.items()))]
    while stack:
        prefix, items = stack[-1]
        for k, v in items:
            if isinstance(v, dict):
                stack.append((f"{prefix}{k}.", iter(v.items())))
                break
            if not isinstance(v, list):
                out.append(f"{prefix}{k}={v}")
        else:
            stack.pop()
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


WRAP_WIDTH = 100  # mitmweb and mitmproxy's console show view lines as given: never wrapped


def wrapped(lines: list[tuple[str, str]], width: int) -> list[tuple[str, str]]:
    """Each line cut at word boundaries to `width` (continuations keep its indent + 2);
    words longer than `width` are split, so no line is wider."""
    out: list[tuple[str, str]] = []
    for style, text in lines:
        if len(text) <= width:
            out.append((style, text))
            continue
        indent = " " * (len(text) - len(text.lstrip(" ")) + 2)
        out += [(style, t) for t in textwrap.wrap(text, width, subsequent_indent=indent,
                                                  replace_whitespace=False)]
    return out


def render_lines(s: Summary, note: str | None = None,
                 width: int | None = None) -> list[tuple[str, str]]:
    """(style, text) lines: "header" for the headline and section rules, "error" for
    problems, else "text". `note` (the flow's seatbelt comment) goes right under the
    headline, so the Response tab shows who paid what next to what was said. With
    `width`, long lines wrap (the views pass WRAP_WIDTH)."""
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
                titles = {"text": "assistant", "reasoning": "reasoning", "refusal": "refusal"}
                title, body = titles[part.kind], part.content
            lines.append(("text", ""))
            lines.append(("header", f"── {who}{title} ──"))
            lines += [("text", line) for line in body.split("\n")]
    return wrapped(lines, width) if width else lines


def render(s: Summary, note: str | None = None, width: int | None = None) -> str:
    return "\n".join(text for _, text in render_lines(s, note, width))


def seatbelt_note(flow: Any) -> str | None:
    comment = getattr(flow, "comment", None)
    if not isinstance(comment, str):
        return None
    shown = flow_comment.detail(comment)
    return shown if shown.startswith("seatbelt:") else None


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
            return render(s, seatbelt_note(metadata.flow), WRAP_WIDTH)

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
            lines = render_lines(s, seatbelt_note(flow), WRAP_WIDTH)
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
