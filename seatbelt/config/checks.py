"""The one set of value checks the policy's sections share (pure, no YAML, no I/O).

policy.py's loader (sections, routes, credentials), access.py (operating fields) and
usd/pricing.py read their values with these, so the same field type is accepted, and
matched, the same way everywhere.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import Any

# A host name, `*.` wildcard allowed, or an IP address (IPv6 with or without brackets).
HOST = re.compile(
    r"^(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?$|^\[[0-9a-f:.]+\]$|^[0-9a-f:.]*:[0-9a-f:.]*$"
)
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_host(text: str) -> bool:
    return HOST.match(text.strip().lower()) is not None


def norm_host(text: str) -> str:
    """How a host is compared: lowercase, no trailing dot, no IPv6 brackets."""
    return text.strip().lower().rstrip(".").strip("[]")


def host_matches(pattern: str, host: str) -> bool:
    """`pattern` (norm_host'ed) is the host itself, or `*.example.com`: its subdomains."""
    h = norm_host(host)
    if pattern.startswith("*."):
        return h.endswith(pattern[1:])
    return h == pattern


def any_host_matches(patterns: Iterable[str], host: str) -> bool:
    return any(host_matches(p, host) for p in patterns)


def glob_matches(patterns: Iterable[str], value: str) -> bool:
    """Case-sensitive fnmatch globs (model names, normalised paths)."""
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def is_one_of(value: Any, names: Sequence[str]) -> bool:
    """A field whose value is one word of a fixed set (exactly, case and all)."""
    return isinstance(value, str) and value in names


def closest(value: str, names: Sequence[str]) -> str | None:
    """The name a typo most likely meant, for a `did you mean` hint."""
    found = difflib.get_close_matches(value, names, n=1)
    return found[0] if found else None
