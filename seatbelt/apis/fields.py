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
