"""Reservation arithmetic (contract §4.2): pure functions, no I/O.

The prompt estimate is the original design's bytes/4 over the request JSON, which is an
upper bound for text in the usual tokenizers (English runs at ~4 bytes per token, code
and non-Latin scripts at fewer tokens per byte, never more than one token per byte).
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

A request whose media cost more is still charged in full from the reported usage
(audit `overrun: true`); over-reserving is always safe because settlement corrects it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from seatbelt.apis.base import RequestFacts

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


class _Walk:
    """Copies a request body with media payloads removed, adding up their allowances."""

    def __init__(self) -> None:
        self.allowance = 0

    def add(self, kind: str) -> None:
        self.allowance += _ALLOWANCE[kind]

    def value(self, v: Any) -> Any:
        if isinstance(v, dict):
            return self.obj(v)
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, str):
            kind = _data_url_kind(v)
            if kind is not None:
                self.add(kind)
                return ""
        return v

    def obj(self, d: dict[str, Any]) -> Any:
        part = d.get("type")
        kind = _PART_KINDS.get(part) if isinstance(part, str) else None
        if kind is not None and not _is_text_document(d):
            self.add(kind)
            return {"type": part}  # the payload (data URL, base64, URL, file id) is dropped
        out: dict[str, Any] = {}
        for k, v in d.items():
            if k in ("inlineData", "inline_data", "fileData", "file_data") and isinstance(v, dict):
                # Gemini parts: {"inlineData": {"mimeType", "data"}}, {"fileData": {...}}
                self.add(_kind_of_mime(v.get("mimeType", v.get("mime_type"))))
                out[k] = {}
            elif k == "images" and isinstance(v, list) and all(isinstance(x, str) for x in v):
                # Ollama: "images": [base64, ...] on a message
                for _ in v:
                    self.add("image")
                out[k] = []
            else:
                out[k] = self.value(v)
        return out


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
_MEDIA_MARKERS = re.compile(rb"image|audio|file|File|document|nline|data:|\\u")


def _may_hold_media(raw: bytes) -> bool:
    """False only when the JSON text cannot contain a media part."""
    return _MEDIA_MARKERS.search(raw) is not None


def prompt_estimate(body: dict[str, Any], raw: bytes | None = None) -> int:
    """Upper-bound prompt tokens: compact JSON bytes / 4 (ceil, >= 1) plus media allowances.

    raw: the JSON text `body` was parsed from; when it names no media, the walk (which
    would copy the body unchanged) is skipped. Same result either way."""
    walk = _Walk()
    stripped = walk.value(body) if raw is None or _may_hold_media(raw) else body
    text = json.dumps(stripped, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8", "surrogatepass"))
    return max(1, math.ceil(size / 4)) + walk.allowance


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
