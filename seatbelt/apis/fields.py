"""The rules every API family reads request fields and usage numbers by.

Shared, so that a limit, a multiplier or a token count means the same thing on every
route: one definition of "a non-negative integer below 2**53", of a path as routing sees
it, of a JSON string in a raw frame.
"""

from __future__ import annotations

import posixpath
from typing import Any, Mapping
from urllib.parse import unquote

from seatbelt.apis.base import BadRequestBody, UsageReader, count

# A JSON string value in raw bytes, in the "unrolled loop" form, which sre matches much
# faster; families build their output-text patterns from it.
JSON_STRING = rb'"([^"\\]*(?:\\.[^"\\]*)*)"'
# Methods that only read: the free endpoints of every family.
READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


def norm_path(path: str) -> str:
    """The path as routing sees it: no query, percent-decoded, dot segments resolved,
    no duplicate or trailing slash, lowercase. Lenient on purpose: a spelling an
    upstream might still accept must not slip past the meter."""
    p = unquote(path.split("?", 1)[0])
    p = posixpath.normpath("/" + p.lstrip("/"))
    return p.rstrip("/").lower() or "/"


def read_model(body: Mapping[str, Any], default: str | None = None) -> str | None:
    model = body.get("model")
    if model is None:
        return default
    if not isinstance(model, str):
        raise BadRequestBody("model must be a string")
    return model


def read_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequestBody(f"{name} must be a boolean")
    return value


def read_limit(body: Mapping[str, Any], name: str) -> int | None:
    """An output limit: absent or null -> None; else a non-negative integer below 2**53."""
    value = body.get(name)
    if value is None:
        return None
    n = count(value)
    if n is None:
        raise BadRequestBody(f"{name} must be a non-negative integer")
    return n


def read_output_limit(body: Mapping[str, Any], name: str) -> int | None:
    """An output limit where 0 is no defined amount: absent/null -> None, 0 -> 400 (some
    servers read 0 as "no limit", others as "the default"), else as read_limit."""
    n = read_limit(body, name)
    if n == 0:
        raise BadRequestBody(
            f"{name}: 0 is read as 'no limit' or 'the default' by some servers, so seatbelt "
            "cannot bound it; send a positive limit")
    return n


# Every request field seatbelt reads, in its one valid spelling. An upstream written in Go
# decodes JSON case-insensitively (encoding/json: the last key that folds to a field
# wins), so a body with `MAX_TOKENS` or with both `model` and `Model` could mean one
# thing to seatbelt and another upstream: such bodies are refused (check_spelling).
_READ_FIELDS = (
    "model", "stream", "stream_options", "include_usage", "max_tokens",
    "max_completion_tokens", "max_output_tokens", "n", "best_of", "prompt", "echo",
    "background", "previous_response_id", "conversation", "messages", "input", "system",
    "tools", "functions", "options", "num_predict", "generationConfig", "generation_config",
    "maxOutputTokens", "candidateCount", "candidate_count", "cachedContent", "cached_content",
    "contents", "systemInstruction", "system_instruction", "instructions", "context",
)
_SPELLING = {name.casefold(): name for name in _READ_FIELDS}


def check_spelling(obj: Mapping[str, Any], where: str = "the body") -> None:
    """Refuse keys a case-insensitive upstream could read differently from seatbelt: two
    keys that differ only in case, or a field seatbelt reads spelled in another case."""
    seen: dict[str, str] = {}
    for key in obj:
        folded = key.casefold()
        other = seen.get(folded)
        if other is not None:
            raise BadRequestBody(
                f"{where} has both {other!r} and {key!r}: keys that differ only in case are "
                "read as one field by some servers (the last one wins); send one")
        seen[folded] = key
        spelled = _SPELLING.get(folded)
        if spelled is not None and spelled != key:
            raise BadRequestBody(
                f"{where} has {key!r}: some servers read it as {spelled!r}, seatbelt does "
                f"not; spell it {spelled!r}")


def read_multiplier(body: Mapping[str, Any], name: str) -> int:
    """n / best_of / candidateCount: absent or null -> 1; else a positive integer."""
    value = body.get(name)
    if value is None:
        return 1
    n = count(value)
    if n is None or n < 1:
        raise BadRequestBody(f"{name} must be a positive integer")
    return n


def usage_field(obj: Mapping[str, Any], name: str, reader: UsageReader) -> int | None:
    """One usage number: absent/null -> None; absurd -> None and the reader flagged."""
    value = obj.get(name)
    if value is None:
        return None
    n = count(value)
    if n is None:
        reader.invalid = f"{name}: {str(value)[:40]!r} is not a token count"
    return n


def sub(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = obj.get(name)
    return value if isinstance(value, dict) else {}
