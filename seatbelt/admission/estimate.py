"""Reservation arithmetic (contract §4.2): pure functions, no I/O.

The prompt part of a hold is a *bound* on what the upstream bills, not a guess:

    UTF-8 bytes of the body as compact JSON with its escapes decoded (`\\u4e16` counts the
    3 bytes of 世, not 6; the body's own length where that is provably no smaller, which
    saves a re-encoding per request: _json_size), media payloads removed
    + the family's fixed overheads (`ApiFamily.prompt_overhead`, seatbelt/apis/base.py:
      per message, per tool, hidden system prompts)
    + a fixed allowance per media part (below).

Why bytes bound tokens: every token of a byte-level BPE (OpenAI's cl100k / o200k, Llama 3,
Qwen, and by all appearances Anthropic's) and of a SentencePiece model with byte fallback
(Gemini, Llama 2, Mistral) covers at least one byte of the text it encodes, so a text never
has more tokens than bytes, whatever its script, digits or escaping. What the tokenizer
sees is a subset of the body's decoded JSON (role names, text, tool schemas); the keys,
quotes and braces left in are slack that covers the few tokens a template adds per part
(SentencePiece's leading "▁"). The price: English runs at ~4-5 bytes per token, so its
bound is ~4x the real count. Where the bound would refuse, seatbelt/admission/exact.py
counts the prompt exactly when it can (docs/metering.md).

Media are billed by the API per item, not per base64 byte, so each image / audio / file
part counts a fixed allowance instead of its payload:

* IMAGE_TOKENS = 1,600: Anthropic's documented cost of a maximum-size image (~1.15
  megapixels at w*h/750); above OpenAI GPT-4o's largest high-detail image (1,105) and
  Gemini's tiling (258 per 768px tile, 1,032 for 1536x1536).
* AUDIO_TOKENS = 2,000: about a minute of speech (Gemini counts 32 tokens/s; OpenAI's
  audio models roughly 10 tokens/s, so ~3 minutes there).
* FILE_TOKENS = 3,000: one dense document page (Anthropic counts 1,500-3,000 text tokens
  per PDF page plus the page image).
* VIDEO_TOKENS = 10,000: ~38 s of Gemini video at 263 tokens/s.

A request whose media cost more (a many-page PDF, a long video) is still charged in full
from the reported usage (audit `overrun: true`): media are the one part the bound does not
cover. Over-reserving is always safe because settlement corrects it.

Every walk here is iterative (no recursion) and visits each node once: a body parsed by
seatbelt/codec/requestbody.py is at most its depth limit deep, and any shape costs linear
time.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from seatbelt.apis.base import RequestFacts, Route

IMAGE_TOKENS = 1_600
AUDIO_TOKENS = 2_000
FILE_TOKENS = 3_000
VIDEO_TOKENS = 10_000

_PART_KINDS = {
    # OpenAI chat / Responses
    "image_url": "image",
    "input_image": "image",
    "input_audio": "audio",
    "file": "file",
    "input_file": "file",
    # Anthropic
    "image": "image",
    "document": "file",
}
_ALLOWANCE = {"image": IMAGE_TOKENS, "audio": AUDIO_TOKENS, "file": FILE_TOKENS,
              "video": VIDEO_TOKENS}


def _kind_of_mime(mime: Any) -> str:
    if isinstance(mime, str):
        major = mime.split("/", 1)[0].strip().lower()
        if major in ("image", "audio", "video"):
            return major
    return "file"


def _data_url_kind(value: str) -> str | None:
    """The media kind of a base64 data URL, else None."""
    if value.startswith("data:"):
        head = value[5:200].split(",", 1)[0]
        if head.endswith(";base64"):
            return _kind_of_mime(head.split(";", 1)[0])
    return None


def _size(value: Any) -> int:
    """UTF-8 bytes of a value as compact JSON, escapes decoded (C speed, no Python walk)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


class _Media:
    """Finds the media parts of a body in one iterative pass: their allowances, and the
    bytes of their payloads (taken off the text size)."""

    def __init__(self) -> None:
        self.allowance = 0
        self.payload = 0

    def add(self, kind: str, payload: Any) -> None:
        self.allowance += _ALLOWANCE[kind]
        self.payload += _size(payload)

    def scan(self, body: Any) -> None:
        stack = [body]
        while stack:
            v = stack.pop()
            for x in self._rest(v) if isinstance(v, dict) else v:
                if isinstance(x, (dict, list)):
                    stack.append(x)
                elif isinstance(x, str):
                    kind = _data_url_kind(x)
                    if kind is not None:
                        self.add(kind, x)

    def _rest(self, d: dict[str, Any]) -> list[Any]:
        """Count an object's media (the whole object when it is a media part); return the
        values still to walk."""
        part = d.get("type")
        kind = _PART_KINDS.get(part) if isinstance(part, str) else None
        if kind is not None and not _is_text_document(d):
            self.add(kind, {k: v for k, v in d.items() if k != "type"})
            return []
        media = False
        for k, v in d.items():
            if k in _INLINE and isinstance(v, dict):
                # Gemini parts: {"inlineData": {"mimeType", "data"}}, {"fileData": {...}}
                self.add(_kind_of_mime(v.get("mimeType", v.get("mime_type"))), v)
                media = True
            elif k == "images" and isinstance(v, list) and all(isinstance(x, str) for x in v):
                # Ollama: "images": [base64, ...] on a message
                for x in v:
                    self.add("image", x)
                media = True
        if media:  # the rest of the object is walked, its media fields not again
            return [v for k, v in d.items() if k not in _INLINE and k != "images"]
        return list(d.values())


_INLINE = frozenset({"inlineData", "inline_data", "fileData", "file_data"})


def _is_text_document(d: dict[str, Any]) -> bool:
    """An Anthropic document whose source is plain text is counted as text."""
    source = d.get("source")
    return (
        d.get("type") == "document"
        and isinstance(source, dict)
        and source.get("type") in ("text", "content")
    )


# Every media part the walk recognises names one of these in its JSON text (part types
# image_url / input_image / input_audio / file / input_file / image / document, Gemini's
# inlineData / inline_data / fileData / file_data, Ollama's images, data: URLs).
# A \\u escape could spell a marker's letters, so any escape means maybe.
# (One bytes.find per marker: each is a memchr-speed scan, where a regex alternation took
# ~200 ms over 10 MB.)
_MEDIA_MARKERS = (b"image", b"audio", b"file", b"File", b"document", b"nline", b"data:", b"\\u")


def _may_hold_media(raw: bytes) -> bool:
    """False only when the JSON text cannot contain a media part."""
    # A plain loop (noqa SIM110): any() over a generator costs more than the 8 finds.
    for marker in _MEDIA_MARKERS:  # noqa: SIM110
        if marker in raw:
            return True
    return False


# The JSON text's length bounds its compact re-encoding (strings byte for byte, whitespace
# dropped; seatbelt/codec/requestbody.py refuses duplicate keys, raw control characters and
# NaN) except for a number with a fraction or exponent, which json.dumps may write longer
# (1e2 -> 100.0, 1E400 -> Infinity). A \u escape is re-encoded shorter (6 bytes -> the
# character's 1-3), so \u-escaped text takes the exact path too: its bound would double.
_REENCODE_MAY_GROW = re.compile(rb"\\u|[0-9][.eE]")


def _json_size(body: Any, raw: bytes | None) -> int:
    """An upper bound on _size(body): the length of the text it was parsed from when that
    cannot be shorter (one C regex search instead of a re-encoding), else _size(body)."""
    if raw is not None and _REENCODE_MAY_GROW.search(raw) is None:
        return len(raw)
    return _size(body)


def text_bound(body: dict[str, Any], raw: bytes | None = None) -> tuple[int, int]:
    """(UTF-8 bytes of the body's decoded compact JSON less media payloads, media
    allowances). raw: the JSON text `body` was parsed from; when it names no media the
    media walk is skipped. Same media result either way; the text size may be the raw
    text's length, never less than the re-encoding's (_json_size)."""
    size = _json_size(body, raw)
    if raw is not None and not _may_hold_media(raw):
        return size, 0
    media = _Media()
    media.scan(body)
    return max(0, size - media.payload), media.allowance


def prompt_bound(route: Route, body: dict[str, Any], raw: bytes | None = None) -> int:
    """The prompt part of a hold: an upper bound on the prompt tokens the upstream bills."""
    text, allowance = text_bound(body, raw)
    return max(1, text) + allowance + route.family.prompt_overhead(route, body)


def completion_estimate(output_chars: int) -> int:
    """Completion tokens for output seen without a usage report: ceil(chars / 4)."""
    if output_chars <= 0:
        return 0
    return max(1, math.ceil(output_chars / 4))


def reservation(
    facts: RequestFacts,
    prompt_est: int,
    model_max_output: int | None,
    fallback_max_output: int,
) -> tuple[int, int | None]:
    """(tokens to reserve, output limit to write into the request or None), per §4.2.

    Max output is the request's own limit, else the model's `max_output`, else the
    policy fallback; times n. A limit is written only where the request named none and
    the endpoint produces output, so the hold is a real bound on what can be generated.
    """
    if not facts.produces_output:
        return prompt_est, None
    if facts.max_output is not None:
        return prompt_est + facts.max_output * facts.multiplier, None
    limit = model_max_output if model_max_output is not None else fallback_max_output
    return prompt_est + limit * facts.multiplier, limit
