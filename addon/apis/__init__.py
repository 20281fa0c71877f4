"""The API families seatbelt knows, and the one routing entry point.

Order matters only where two families share a path shape: Anthropic comes first and
takes `/v1/models` etc. only when the request carries `anthropic-version`; OpenAI never
takes `/v1/messages` (its own `threads/{id}/messages` needs the `threads/` segment).
"""

from __future__ import annotations

from typing import Mapping

from addon.apis.anthropic import Anthropic
from addon.apis.base import ApiFamily, Route
from addon.apis.openai import OpenAI

FAMILIES: tuple[ApiFamily, ...] = (Anthropic(), OpenAI())


def route_request(method: str, path: str, headers: Mapping[str, str]) -> Route | None:
    """The route of a request (path without its query string), or None: not an LLM call."""
    for family in FAMILIES:
        route = family.route(method, path, headers)
        if route is not None:
            return route
    return None
