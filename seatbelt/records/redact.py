"""Scrub credentials from a finished flow so saved flows and mitmweb do not keep them, and
keep them off what mitmweb and the console show while the flow is in flight."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from mitmproxy import http

from seatbelt.apis import FAMILIES

# Every place a family reads a credential from (so a new family is scrubbed too), plus the
# proxy's own authentication header.
CREDENTIAL_HEADERS = tuple(
    dict.fromkeys([h for f in FAMILIES for h in f.credential_headers] + ["proxy-authorization"])
)
CREDENTIAL_QUERY = tuple(dict.fromkeys(q for f in FAMILIES for q in f.credential_query))
REDACTED = "[redacted by seatbelt]"


_NAMED_HEADERS = tuple((n, n.encode()) for n in CREDENTIAL_HEADERS)
_RAW_HEADERS = frozenset(raw for _, raw in _NAMED_HEADERS)


def redact_flow(flow: http.HTTPFlow) -> None:
    req = flow.request
    vars(req).pop(_SWAP, None)  # its plain fields hold the credential
    fields = req.headers.fields
    if all(name.isascii() for name, _ in fields):
        # One pass over the raw names instead of five case-insensitive lookups (~7 us).
        # (Non-ASCII names go the slow way: str.lower() maps e.g. KELVIN SIGN to "k".)
        present = {name.lower() for name, _ in fields} & _RAW_HEADERS
        found = [name for name, raw in _NAMED_HEADERS if raw in present]
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


class HiddenCredential(bytes):
    """A value that goes upstream as itself but reads as a placeholder.

    mitmproxy sends a request from its bytes (net/http/http1/assemble.py and the h2 layer
    join `headers.fields` and format `data.path` through the buffer protocol), while
    mitmweb's `/flows` and its WebSocket (`headers.items()`, `request.path`: `decode`) and
    the console (`repr(b'"' + v)`, `pretty_url`) only ever read them as text. A credential
    in flight is such a value, so that it is on the wire and never on screen; the flow is
    scrubbed for good when it ends (redact_flow). No mitmproxy hook runs after the request
    hooks and before the bytes are written (the view and mitmweb's addons run in the same
    `request` event, after seatbelt), so the value cannot simply be put in later. Saved,
    exported and dumped flows (`get_state`: mitmweb's `/flows/dump`, `-w`, the console's
    export) read the state, which ShownRequestData gives with the placeholder."""

    SHOWN = "[virtual key: real credential hidden by seatbelt]"
    shown: str

    def __new__(cls, value: bytes, shown: str | None = None) -> "HiddenCredential":
        self = super().__new__(cls, value)
        self.shown = cls.SHOWN if shown is None else shown
        return self

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.shown

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return repr(self.shown.encode())

    def __radd__(self, other: bytes) -> bytes:
        return bytes(other) + self.shown.encode()


HIDDEN = "[hidden by seatbelt while in flight]"
HIDDEN_QUERY = "[hidden-by-seatbelt]"  # a query value: nothing to escape but the brackets


@dataclass
class ShownRequestData(http.RequestData):
    """A request's data whose state (what is saved, dumped and exported) has the shown
    form of every HiddenCredential in its headers and path, never the bytes."""

    def get_state(self):  # type: ignore[no-untyped-def]
        state = super().get_state()
        state["headers"] = tuple((k, _shown(v)) for k, v in state["headers"])
        state["path"] = _shown(state["path"])
        return state


def _shown(value: bytes) -> bytes:
    return value.shown.encode() if isinstance(value, HiddenCredential) else value


# On a request whose headers hide() hid: (the hidden fields, the fields they were made
# from). The request hook gives the credentials back (unhide) and hides them again; while
# nothing changed the headers in between, each way is one assignment (unhide + hide: 6.5 ->
# 1.3 us, timeit). Not part of the request's state: never saved; redact_flow drops it.
_SWAP = "_seatbelt_hidden_fields"


def hide(request: http.Request) -> None:
    """Make every credential of the request (headers, `key=`) read as a placeholder in
    mitmweb, the console and saved state, and still go upstream as itself."""
    fields = request.headers.fields
    swap = vars(request).get(_SWAP)
    if swap is not None and fields is swap[1]:  # unhide()'s own fields, unchanged
        request.headers.fields = swap[0]
        hide_query(request)
        return
    hidden: list[tuple[bytes, bytes]] | None = None
    for i, (name, value) in enumerate(fields):  # one pass, no generator
        if name.lower() in _RAW_HEADERS and not isinstance(value, HiddenCredential):
            if hidden is None:
                hidden = list(fields)
            hidden[i] = (name, HiddenCredential(value, HIDDEN))
    if hidden is not None:
        shown = tuple(hidden)
        request.headers.fields = shown
        vars(request)[_SWAP] = (shown, fields)
        keep_state_hidden(request)
    hide_query(request)


def hide_query(request: http.Request) -> None:
    """The request-target's credential query values as placeholders (see hide)."""
    path = request.data.path
    if b"?" in path and not isinstance(path, HiddenCredential):
        shown = _shown_path(request.path)
        if shown is not None:
            request.data.path = HiddenCredential(path, shown)
            keep_state_hidden(request)


def keep_state_hidden(request: http.Request) -> None:
    """Saved, dumped and exported state of this request shows what its HiddenCredentials
    show (the data's class is swapped: mitmproxy builds RequestData itself)."""
    if type(request.data) is http.RequestData:
        request.data.__class__ = ShownRequestData


def _shown_path(path: str) -> str | None:
    """The path with every credential query value replaced, or None when it has none."""
    base, _, query = path.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k in CREDENTIAL_QUERY for k, _ in pairs):
        return None
    return base + "?" + urlencode([(k, HIDDEN_QUERY if k in CREDENTIAL_QUERY else v)
                                   for k, v in pairs], safe="[]")


def unhide(req: http.Request) -> None:
    """The request's own values again, for the code that must read them (the request hook)."""
    fields = req.headers.fields
    swap = vars(req).get(_SWAP)
    if swap is not None and fields is swap[0]:  # what hide() made, unchanged since
        req.headers.fields = swap[1]
    else:
        for _, value in fields:
            if isinstance(value, HiddenCredential):
                req.headers.fields = tuple((k, bytes(v)) for k, v in fields)
                break
    if isinstance(req.data.path, HiddenCredential):
        req.data.path = bytes(req.data.path)


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
