"""What each WebSocket API's events mean to the meter: pure functions, no I/O.

Three APIs hold a socket open and generate on it (docs/ describes the HTTP ones):

* OpenAI Realtime (`GET .../realtime`): the client's `response.create` asks for output
  (`response.max_output_tokens`; `max_response_output_tokens` in the beta); the server
  also creates responses itself on voice activity. `response.done` carries `usage`.
* OpenAI Responses WebSocket mode (`GET .../responses` with Upgrade): `response.create`
  carries the body of `POST /v1/responses`; `response.completed` (or `.incomplete`,
  `.failed`) carries `usage` like the SSE stream.
* Gemini Live (`...GenerativeService.BidiGenerateContent`): a `setup` message (model,
  `generationConfig.maxOutputTokens`), then turns: `clientContent` with `turnComplete`,
  `toolResponse`, or streamed `realtimeInput` (voice activity starts a turn); server
  messages carry `usageMetadata` (`responseTokenCount` is the output).

A client event that is not known to be free and is not a metered create closes the socket:
a new event type that makes output must never run unmetered.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from seatbelt.admission import estimate
from seatbelt.apis import FAMILIES
from seatbelt.apis.base import ApiFamily, Usage, UsageReader
from seatbelt.apis.gemini import GeminiUsageReader
from seatbelt.apis.openai import OpenAIUsageReader
from seatbelt.apis.responses import Responses, ResponsesUsageReader

# Audio is billed by duration, not by base64 size. The slowest encoding a client may send
# (G.711, 8,000 bytes/s) against the most tokens per second any of these APIs counts
# (Gemini: 32/s) is 250 bytes per token; 100 keeps a margin over both.
AUDIO_BYTES_PER_TOKEN = 100

_REALTIME = re.compile(r"(?:^|/)(?:v\d[^/]*|openai)/realtime$")
_RESPONSES = re.compile(r"(?:^|/)(?:v\d[^/]*|openai|codex)/responses$")
_LIVE = re.compile(r"GenerativeService\.BidiGenerateContent(?:Constrained)?$")


class Kind(enum.Enum):
    REALTIME = "realtime"
    RESPONSES = "responses"
    LIVE = "live"


def family_named(name: str) -> ApiFamily:
    return next(f for f in FAMILIES if f.name == name)


def socket_kind(path: str) -> Kind | None:
    """The WebSocket API a handshake's path (no query) names, else None."""
    if _REALTIME.search(path):
        return Kind.REALTIME
    if _RESPONSES.search(path):
        return Kind.RESPONSES
    if _LIVE.search(path):
        return Kind.LIVE
    return None


FAMILY_OF = {Kind.REALTIME: "openai", Kind.RESPONSES: "responses", Kind.LIVE: "gemini"}


class Act(enum.Enum):
    PASS = "pass"  # costs nothing by itself
    CONTENT = "content"  # adds to what the next response reads
    CREATE = "create"  # asks for output: needs a hold first
    CONFIG = "config"  # session settings: read (and a limit written)
    UNKNOWN = "unknown"  # cannot be metered: the socket is closed


_REALTIME_PASS = frozenset({
    "input_audio_buffer.commit", "input_audio_buffer.clear", "conversation.item.truncate",
    "conversation.item.delete", "conversation.item.retrieve", "response.cancel",
    "output_audio_buffer.clear",
})
_REALTIME_CONTENT = frozenset({"conversation.item.create", "input_audio_buffer.append"})
_REALTIME_CONFIG = frozenset({"session.update"})


def client_act(kind: Kind, event: dict[str, Any]) -> Act:
    if kind is Kind.LIVE:
        return _live_act(event)
    t = event.get("type")
    if t == "response.create":
        return Act.CREATE
    if kind is Kind.REALTIME:
        if t in _REALTIME_CONTENT:
            return Act.CONTENT
        if t in _REALTIME_CONFIG:
            return Act.CONFIG
        if t in _REALTIME_PASS:
            return Act.PASS
    return Act.UNKNOWN


def _live_act(msg: dict[str, Any]) -> Act:
    if len(msg) != 1:
        return Act.UNKNOWN  # one message field at a time (a oneof on the wire)
    (name, value), = msg.items()
    if name == "setup":
        return Act.CONFIG
    if name == "clientContent":
        done = isinstance(value, dict) and value.get("turnComplete") is True
        return Act.CREATE if done else Act.CONTENT
    if name in ("toolResponse", "realtimeInput"):
        return Act.CREATE  # a tool answer resumes the turn; voice activity starts one
    return Act.UNKNOWN


def content_tokens(kind: Kind, event: dict[str, Any]) -> int:
    """An upper bound on the prompt tokens an input event adds to the conversation."""
    audio = _audio_payloads(kind, event)
    if audio is None:
        text, allowance = estimate.text_bound(event)  # bytes bound tokens (estimate.py)
        return max(1, text) + allowance
    return sum(_decoded_len(a) for a in audio) // AUDIO_BYTES_PER_TOKEN + 1


def _audio_payloads(kind: Kind, event: dict[str, Any]) -> list[str] | None:
    """The base64 audio an event carries, or None when it is not an audio event."""
    if kind is Kind.REALTIME and event.get("type") == "input_audio_buffer.append":
        audio = event.get("audio")
        return [audio] if isinstance(audio, str) else []
    if kind is Kind.LIVE and isinstance(ri := event.get("realtimeInput"), dict):
        blobs = [ri.get("audio")] + list(ri.get("mediaChunks") or [])
        found = [b for b in blobs if isinstance(b, dict)]
        if found and all(str(b.get("mimeType", "")).startswith("audio/") for b in found)\
                and set(ri) <= {"audio", "mediaChunks"}:
            return [b["data"] for b in found if isinstance(b.get("data"), str)]
    return None


def _decoded_len(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return len(data)


def realtime_limit(event: dict[str, Any], session_limit: int | None, beta: bool) -> int | None:
    """A Realtime create's own limit, else the session's ("inf" means none)."""
    resp = event.get("response")
    value = resp.get(realtime_limit_field(beta)) if isinstance(resp, dict) else None
    if _is_count(value):
        return value
    return session_limit


def realtime_limit_field(beta: bool) -> str:
    return "max_response_output_tokens" if beta else "max_output_tokens"


def write_realtime_limit(event: dict[str, Any], limit: int, beta: bool) -> None:
    resp = event.get("response")
    if not isinstance(resp, dict):
        resp = event["response"] = {}
    resp[realtime_limit_field(beta)] = limit


def session_limit(event: dict[str, Any], beta: bool) -> int | None:
    session = event.get("session")
    value = session.get(realtime_limit_field(beta)) if isinstance(session, dict) else None
    return value if _is_count(value) else None


def live_limit(setup: dict[str, Any]) -> int | None:
    config = setup.get("generationConfig")
    value = config.get("maxOutputTokens") if isinstance(config, dict) else None
    return value if _is_count(value) else None


def write_live_limit(setup: dict[str, Any], limit: int) -> None:
    config = setup.get("generationConfig")
    if not isinstance(config, dict):
        config = setup["generationConfig"] = {}
    config["maxOutputTokens"] = limit


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def responses_body(event: dict[str, Any]) -> dict[str, Any]:
    """A Responses `response.create` is the POST body plus `type` (and envelope ids)."""
    return {k: v for k, v in event.items() if k not in ("type", "stream_id")}


RESPONSES = Responses()


# ---------------------------------------------------------------- server events


class Seen(enum.Enum):
    OTHER = "other"
    CREATED = "created"  # a response began (id known)
    OUTPUT = "output"  # output text / audio of the current response
    DONE = "done"  # the response ended; usage attached when reported
    ERROR = "error"  # an error event (no response began for it)


@dataclass(frozen=True)
class ServerEvent:
    seen: Seen
    response_id: str | None = None
    usage: Usage | None = None
    output_tokens: int = 0  # estimated output of an OUTPUT event
    cause: str | None = None  # ERROR: the client event it answers (Realtime `event_id`)


_TEXT_DELTAS = frozenset({
    "response.output_text.delta", "response.text.delta", "response.audio_transcript.delta",
    "response.output_audio_transcript.delta", "response.function_call_arguments.delta",
    "response.refusal.delta", "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
})
_AUDIO_DELTAS = frozenset({"response.audio.delta", "response.output_audio.delta"})
_ENDS = frozenset({"response.done", "response.completed", "response.incomplete",
                   "response.failed"})


def server_event(kind: Kind, event: dict[str, Any]) -> ServerEvent:
    if kind is Kind.LIVE:
        return _live_server(event)
    t = event.get("type")
    resp = event.get("response")
    rid = resp.get("id") if isinstance(resp, dict) and isinstance(resp.get("id"), str) \
        else None
    if t == "response.created":
        return ServerEvent(Seen.CREATED, rid)
    if t in _ENDS:
        reader: UsageReader = (ResponsesUsageReader() if kind is Kind.RESPONSES
                               else OpenAIUsageReader())
        reader.feed(resp if kind is Kind.REALTIME else event)
        usage = reader.usage if reader.invalid is None and reader.usage.complete else None
        return ServerEvent(Seen.DONE, rid, usage)
    if t in _TEXT_DELTAS and isinstance(d := event.get("delta"), str):
        return ServerEvent(Seen.OUTPUT, output_tokens=estimate.completion_estimate(len(d)))
    if t in _AUDIO_DELTAS and isinstance(d := event.get("delta"), str):
        return ServerEvent(Seen.OUTPUT, output_tokens=_decoded_len(d) // AUDIO_BYTES_PER_TOKEN)
    if t == "error":
        error = event.get("error")
        cause = error.get("event_id") if isinstance(error, dict) else None
        return ServerEvent(Seen.ERROR, cause=cause if isinstance(cause, str) else None)
    return ServerEvent(Seen.OTHER)


def _live_server(msg: dict[str, Any]) -> ServerEvent:
    meta = msg.get("usageMetadata")
    if isinstance(meta, dict):
        # Live names the output `responseTokenCount`; generateContent `candidatesTokenCount`.
        meta = dict(meta)
        if "responseTokenCount" in meta:
            meta["candidatesTokenCount"] = meta.pop("responseTokenCount")
        reader = GeminiUsageReader()
        reader.feed({"usageMetadata": meta})
        if reader.invalid is None and reader.usage.complete:
            return ServerEvent(Seen.DONE, usage=reader.usage)
    content = msg.get("serverContent")
    if isinstance(content, dict):
        turn = content.get("modelTurn")
        parts = turn.get("parts") if isinstance(turn, dict) else None
        chars = sum(len(json.dumps(p)) for p in parts) if isinstance(parts, list) else 0
        return ServerEvent(Seen.OUTPUT, output_tokens=estimate.completion_estimate(chars))
    return ServerEvent(Seen.OTHER)


def parse_message(content: bytes) -> dict[str, Any] | None:
    """A message as the JSON object every one of these APIs sends, else None."""
    try:
        value = json.loads(content)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def dump(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass")
