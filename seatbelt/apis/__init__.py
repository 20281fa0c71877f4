"""The API families seatbelt knows, and the one routing entry point.

Routing is by API shape (method + path, sometimes a header), never by host, so it works
for every base URL. Order matters only where two families share a path shape:
Anthropic comes first and takes `/v1/models` etc. only when the request carries
`anthropic-version`; Responses, Gemini and Ollama take only their own shapes
(`.../responses`, `models/{m}:verb` and `v1beta/...`, `api/chat|generate|embed`) before
OpenAI, which would otherwise file `/v1/responses` and `/v1/models/{m}:generateContent`
under its unmetered resources. OpenAI never takes `/v1/messages` (its own
`threads/{id}/messages` needs the `threads/` segment).

A family defined outside this package (a plugin, a test) joins with `register()`, before
the built-in ones: it routes first, so it can take a shape they would otherwise file.

The policy can override routing per host/path (`routes:`): `api: NAME` routes a request
as if its path were `API_PATHS[NAME]` (a custom deployment path), `api: none` takes it off
the LLM routes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from seatbelt.apis.anthropic import Anthropic
from seatbelt.apis.base import ApiFamily, Route
from seatbelt.apis.gemini import Gemini
from seatbelt.apis.ollama import Ollama
from seatbelt.apis.openai import OpenAI
from seatbelt.apis.responses import Responses

FAMILIES: tuple[ApiFamily, ...] = (Anthropic(), Responses(), Gemini(), Ollama(), OpenAI())
# Where the built-in families carry a credential: redaction (seatbelt/records/redact.py)
# scrubs exactly these, so a registered family may not add another place.
_CREDENTIAL_PLACES = frozenset(
    [h for f in FAMILIES for h in f.credential_headers]
    + [q for f in FAMILIES for q in f.credential_query]
)


def register(family: ApiFamily) -> None:
    """Add an API family, routed before the built-in ones; registering it again is a no-op.

    Refused when it names a credential header or query parameter the built-in families do
    not: redaction would not know to scrub it from logs and saved flows.
    """
    global FAMILIES
    if any(type(f) is type(family) for f in FAMILIES):
        return
    places = set(family.credential_headers) | set(family.credential_query)
    unknown = sorted(places - _CREDENTIAL_PLACES)
    if unknown:
        raise ValueError(
            f"API family {family.name!r}: credential place(s) {', '.join(unknown)} are not "
            "redacted; carry the credential in a header or parameter seatbelt already scrubs"
        )
    FAMILIES = (family, *FAMILIES)

# Names a policy `routes:` rule may give as `api:`, each the path it routes as.
API_PATHS: Mapping[str, str] = {
    "openai-chat": "/v1/chat/completions",
    "openai-completions": "/v1/completions",
    "openai-embeddings": "/v1/embeddings",
    "openai-responses": "/v1/responses",
    "anthropic-messages": "/v1/messages",
    "gemini-generate": "/v1beta/models/-:generateContent",
    "gemini-stream": "/v1beta/models/-:streamGenerateContent",
    "ollama-chat": "/api/chat",
    "ollama-generate": "/api/generate",
    "ollama-embed": "/api/embed",
}
NOT_AN_API = "none"


def route_request(
    method: str, path: str, headers: Mapping[str, str], api: str | None = None
) -> Route | None:
    """The route of a request (path without its query string), or None: not an LLM call.

    `api` is a policy override: a name of API_PATHS, or "none".
    """
    if api == NOT_AN_API:
        return None
    if api is not None:
        route = _first(method, API_PATHS[api], headers)
        if route is not None and route.model_from_path == "-":
            route = dataclasses.replace(route, model_from_path=None)
        return route
    return _first(method, path, headers)


def _first(method: str, path: str, headers: Mapping[str, str]) -> Route | None:
    for family in FAMILIES:
        route = family.route(method, path, headers)
        if route is not None:
            return route
    return None


def read_error(obj: Any) -> str | None:
    """An upstream error object of any family (the content view reads bodies without
    knowing their route); the same text as the scanner's family reader gives."""
    for family in FAMILIES:
        found = family.read_error(obj)
        if found is not None:
            return found
    return None
