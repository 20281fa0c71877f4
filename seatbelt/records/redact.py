"""Scrub credentials from a finished flow so saved flows and mitmweb do not keep them."""

from __future__ import annotations

from mitmproxy import http

from seatbelt.apis import FAMILIES

# Every place a family reads a credential from (so a new family is scrubbed too), plus the
# proxy's own authentication header.
CREDENTIAL_HEADERS = tuple(
    dict.fromkeys([h for f in FAMILIES for h in f.credential_headers] + ["proxy-authorization"])
)
CREDENTIAL_QUERY = tuple(dict.fromkeys(q for f in FAMILIES for q in f.credential_query))
REDACTED = "[redacted by seatbelt]"


_RAW_HEADERS = frozenset(n.encode() for n in CREDENTIAL_HEADERS)


def redact_flow(flow: http.HTTPFlow) -> None:
    req = flow.request
    fields = req.headers.fields
    if all(name.isascii() for name, _ in fields):
        # One pass over the raw names instead of five case-insensitive lookups (~7 us).
        # (Non-ASCII names go the slow way: str.lower() maps e.g. KELVIN SIGN to "k".)
        present = {name.lower() for name, _ in fields} & _RAW_HEADERS
        found = [name for name in CREDENTIAL_HEADERS if name.encode() in present]
    else:
        found = [name for name in CREDENTIAL_HEADERS if name in req.headers]
    for name in found:
        req.headers[name] = REDACTED
    auth = flow.metadata.get("proxyauth")  # (user, password) set by mitmproxy's ProxyAuth
    if type(auth) is tuple and len(auth) == 2 and auth[1] != REDACTED:
        flow.metadata["proxyauth"] = (auth[0], REDACTED)  # the user name stays: identity
    # Parsing the query costs ~4 us: only when the path has one that names a key.
    if "?" in req.path and any(name in req.query for name in CREDENTIAL_QUERY):
        query = req.query
        for name in CREDENTIAL_QUERY:
            if name in query:
                query[name] = REDACTED


class LiveFlows:
    """The flows between their request and their end, so that at shutdown every one of
    them is scrubbed before mitmproxy's `-w` saves it (its Save addon writes the flows
    still in flight in its own `done`, which runs after the scripts' `done`): free
    routes and non-LLM flows carry a credential as much as metered ones."""

    def __init__(self) -> None:
        self.flows: dict[str, http.HTTPFlow] = {}

    def started(self, flow: http.HTTPFlow) -> None:
        self.flows[flow.id] = flow

    def ended(self, flow: http.HTTPFlow) -> None:
        self.flows.pop(flow.id, None)

    def redact_all(self) -> None:
        for flow in list(self.flows.values()):
            redact_flow(flow)
        self.flows.clear()
