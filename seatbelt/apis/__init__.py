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
import re
from typing import Any, Callable, Mapping

from seatbelt.apis import paths
from seatbelt.apis.anthropic import Anthropic
from seatbelt.apis.base import ApiFamily, Route
from seatbelt.apis.fields import READ_ONLY, norm_path
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


# A path reading that cannot be routed one way (its readings route differently): 400.
AMBIGUOUS = "ambiguous_path"

ApiFor = Callable[[str], "str | None"]


def route_request(
    method: str, path: str, headers: Mapping[str, str], api: str | ApiFor | None = None,
    *, llm_host: bool = False,
) -> Route | None:
    """The route of a request (its request-target as sent, query and all), or None: not an
    LLM call.

    Every reading of the path a common server may route (seatbelt/apis/paths.py) is routed;
    when the readings that are LLM routes disagree, the answer is a route of kind
    "refused" (400): a spelling that one server bills and another would not is never
    forwarded as the cheaper one. `api` is a policy override (a name of API_PATHS or
    "none"), or a function giving it per reading. `llm_host`: the request goes to a host
    known to be an LLM server (reverse mode, or named by the policy): its bare paths
    (`/messages`, `/completion`, ...) and unknown POSTs are routed too.
    """
    route = _route_readings(method, path, headers, api, llm_host)
    if any(name.lower() in _METHOD_OVERRIDES for name in headers):
        # Google's front ends (and many frameworks) take the method from such a header: a
        # GET that is a POST upstream would pass as a free read. Never guessed: refused.
        route = route or _route_readings("POST", path, headers, api, llm_host)
        if route is not None:
            return Route(route.family, route.provider, METHOD_OVERRIDE, "refused")
    return route


# Headers that make a server take the request's method from them instead.
_METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
METHOD_OVERRIDE = "method_override"


def _route_readings(method: str, path: str, headers: Mapping[str, str],
                    api: str | ApiFor | None, llm_host: bool) -> Route | None:
    if paths.is_plain(path):
        return _route_one(method, path, headers, api, llm_host)
    found: dict[tuple[str, str, str, str | None], Route] = {}
    unknown = None  # a reading no family knows counts only when no reading is known
    for reading in paths.readings(path):
        route = _route_one(method, reading, headers, api, llm_host)
        if route is not None and route.endpoint == UNKNOWN:
            unknown = route
        elif route is not None:
            found.setdefault((route.family.name, route.endpoint, route.kind,
                              route.model_from_path), route)
    if not found:
        return unknown
    if len(found) == 1:
        return next(iter(found.values()))
    first = next(iter(found.values()))
    return Route(first.family, first.provider, AMBIGUOUS, "refused")


def _route_one(method: str, path: str, headers: Mapping[str, str], api: str | ApiFor | None,
               llm_host: bool) -> Route | None:
    name = api(path) if callable(api) else api
    if name == NOT_AN_API:
        return None
    if name is not None:
        route = _first(method, API_PATHS[name], headers)
        if route is not None and route.model_from_path == "-":
            route = dataclasses.replace(route, model_from_path=None)
        return route
    route = _first(method, path, headers)
    if route is None and llm_host:
        route = _on_llm_host(method, path, headers)
    return route


# Bare paths LLM servers serve at their root, routed only on an LLM host (elsewhere
# `/messages` or `/generate` is as likely a web app's): the unversioned Responses and
# Messages paths (routed as their /v1 form), and the native endpoints of llama.cpp
# (`/completion`, `/infill`, `/embedding`, `/rerank`) and TGI (`/generate`,
# `/generate_stream`, SageMaker's `/invocations`, `POST /`), whose usage no family reads:
# refused as unmetered. Their tokenizers only count.
_AS_V1 = re.compile(r"^/(?:responses|messages)(?:/.*)?$")
_LOCAL_UNMETERED = re.compile(
    r"^/(?:completion|infill|embedding|rerank|reranking|generate|generate_stream"
    r"|invocations)?$")
_LOCAL_FREE = re.compile(r"^/(?:tokenize|detokenize|apply-template)$")
# Ollama's model management spends no tokens: left alone, as on any other host.
_LOCAL_PASS = re.compile(r"^/api/(?:show|tags|ps|version|pull|push|create|copy|delete"
                         r"|blobs/.+)$")


def _on_llm_host(method: str, path: str, headers: Mapping[str, str]) -> Route | None:
    p = norm_path(path)
    if _AS_V1.match(p):
        return _first(method, "/v1" + p, headers)
    if method.upper() in READ_ONLY:
        return None  # a GET reads: free, and not an LLM route
    if _LOCAL_PASS.match(p):
        return None
    fallback = FAMILIES[-1]
    if _LOCAL_FREE.match(p):
        return Route(fallback, "openai", p[1:], "free")
    # Any other write on an LLM host: an endpoint seatbelt does not know may bill.
    endpoint = p[1:] if _LOCAL_UNMETERED.match(p) else UNKNOWN
    return Route(fallback, "openai", endpoint or "generate", "unmetered")


UNKNOWN = "unknown_endpoint"


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
