"""Read an LLM request body strictly: one JSON object, no ambiguity, bounded size and depth.

The depth limit (MAX_DEPTH) keeps every later walk over a body bounded: json.dumps and
json.loads recurse in C, and CPython's limit on that recursion differs by version (3.11
counts it against sys.getrecursionlimit(), ~1,000 frames less the hook's own stack; 3.12+
has a fixed C limit), so without one limit of seatbelt's own the depth a body may have
would depend on the interpreter. Real request bodies are a few levels deep: messages,
content parts, a tool's JSON schema (OpenAI's structured outputs allow 10 levels of
nesting; serde_json, which many Rust servers use, refuses more than 128).
"""

from __future__ import annotations

import gc
import json
from typing import Any

MAX_REQUEST_BODY = 32 * 1024 * 1024  # decoded bytes; larger -> 413
MAX_DEPTH = 128  # nested arrays and objects, the body itself included; deeper -> 400


class UnreadableBody(ValueError):
    """-> 400 invalid_request."""


class BodyTooLarge(ValueError):
    """-> 413."""


class BodyTooDeep(UnreadableBody):
    """-> 400 invalid_request, naming the limit."""

    def __init__(self) -> None:
        super().__init__(f"the JSON body is nested deeper than {MAX_DEPTH} levels (arrays "
                         "and objects), seatbelt's limit")


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
    enabled = gc.isenabled()
    gc.disable()  # a body of millions of tiny arrays would run the collector dozens of times
    try:
        obj = _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except UnreadableBody:
        raise
    except RecursionError:  # deeper than CPython's own limit, so deeper than MAX_DEPTH
        raise BodyTooDeep() from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UnreadableBody(f"the body is not valid JSON ({type(e).__name__})") from None
    finally:
        if enabled:
            gc.enable()
    if not isinstance(obj, dict):
        raise UnreadableBody("the JSON body is not an object")
    if over_depth_limit(data, obj):
        raise BodyTooDeep()
    return obj


def over_depth_limit(data: bytes, obj: Any) -> bool:
    """True when `obj`, parsed from `data`, nests deeper than MAX_DEPTH. The text's count of
    '[' and '{' bounds its depth (C speed), so most bodies are never walked."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    return too_deep(obj, MAX_DEPTH)


_CONTAINERS = (dict, list)


def too_deep(obj: Any, limit: int) -> bool:
    """True when `obj` nests arrays and objects more than `limit` levels deep (itself is
    level 1). Iterative, one level at a time: each container is visited once."""
    level = [obj]
    depth = 1
    while True:
        level = [x for v in level for x in (v.values() if type(v) is dict else v)
                 if type(x) in _CONTAINERS]
        if not level:
            return False
        depth += 1
        if depth > limit:
            return True


def dump_json(obj: dict[str, Any], *, ascii_only: bool = False) -> bytes:
    """Compact UTF-8 JSON; `ascii_only` escapes every non-ASCII character (a lone surrogate
    cannot be UTF-8 otherwise)."""
    return json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":")).encode()
