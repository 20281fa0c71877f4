"""Read an LLM request body strictly: one JSON object, no ambiguity, bounded size."""

from __future__ import annotations

import json
from typing import Any

MAX_REQUEST_BODY = 32 * 1024 * 1024  # decoded bytes; larger -> 413


class UnreadableBody(ValueError):
    """-> 400 invalid_request."""


class BodyTooLarge(ValueError):
    """-> 413."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two parsers may pick different values of a repeated key (`max_tokens` twice): the
    upstream's choice must be the one metered, so a repeated key is refused."""
    obj = dict(pairs)  # in C; only a body with a repeated key pays for finding it
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise UnreadableBody(f"the JSON body has the key {k!r} twice")
            seen.add(k)
    return obj


def _reject_constant(name: str) -> Any:
    raise UnreadableBody(f"the JSON body contains {name}, which is not JSON")


# One decoder (json.loads builds a new one per call when given a hook).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def parse_json_object(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_REQUEST_BODY:
        raise BodyTooLarge(f"the body is larger than {MAX_REQUEST_BODY} bytes")
    try:
        obj = _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except UnreadableBody:
        raise
    except RecursionError:
        raise UnreadableBody("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UnreadableBody(f"the body is not valid JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise UnreadableBody("the JSON body is not an object")
    return obj


def dump_json(obj: dict[str, Any], *, ascii_only: bool = False) -> bytes:
    """Compact UTF-8 JSON; `ascii_only` escapes every non-ASCII character (a lone surrogate
    cannot be UTF-8 otherwise)."""
    return json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":")).encode()
