"""Admission helpers for the operating fields (seatbelt/config/access.py): identity, virtual
keys, clamp.

Pure where possible; the steps of seatbelt/admission/steps.py decide when each applies.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mitmproxy import ctx, http

from seatbelt.admission import destination
from seatbelt.apis.base import ApiFamily, Credentials, Route
from seatbelt.config.access import (
    connection_identity,
    host_allowed,
)
from seatbelt.config.policy import Key, Policy
from seatbelt.ledger.base import CapRefusal
from seatbelt.records.redact import HiddenCredential, hide_query, keep_state_hidden

# Limit fields a request may already name at the top level: a clamp lowers each of them.
_TOP_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def identify(policy: Policy, flow: http.HTTPFlow) -> tuple[Key | None, str | None]:
    """A key by connection identity, for a request whose credential matched none."""
    index = policy.identities()
    if not index:
        return None, None
    return index.match(*connection_identity(flow))


def destinations(flow: http.HTTPFlow) -> list[str]:
    """Every host name the request could be delivered to, all of which must be allowed:
    where mitmproxy connects (seatbelt/admission/destination.py), and a Host header naming
    yet another host (it may route the request at a shared front end)."""
    out = [destination.destination(flow)]
    named = destination.header_host(flow)
    if named and named not in out:
        out.append(named)
    return out


def virtual_host_ok(key: Key, flow: http.HTTPFlow) -> tuple[bool, str]:
    """(allowed, the first host that is not) for a virtual key's request."""
    for host in destinations(flow):
        if not host_allowed(key.access.upstream_hosts, host):
            return False, host
    return True, ""


def unverified_upstream(flow: http.HTTPFlow) -> str | None:
    """Why the upstream's identity is not checked, or None. Over TLS mitmproxy verifies the
    certificate against the host unless `ssl_insecure` (then an IP with an allowed server
    name could be anyone); plain HTTP has no certificate: only loopback is trusted there."""
    if flow.request.scheme == "https":
        if ctx.options.ssl_insecure:
            return "ssl_insecure is set, so its certificate is not verified"
        return None
    if not _loopback(flow.request.host):
        return "it is plain HTTP to a non-loopback address, with no certificate"
    return None


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _put_hidden(headers: http.Headers, name: str, value: str) -> None:
    """Set header `name` (once, where it was) to a HiddenCredential."""
    raw = name.encode()
    hidden: HiddenCredential | None = HiddenCredential(value.encode())
    fields: list[tuple[bytes, bytes]] = []
    for field_name, field_value in headers.fields:
        if field_name.lower() != raw:
            fields.append((field_name, field_value))
        elif hidden is not None:
            fields.append((field_name, hidden))
            hidden = None
    if hidden is not None:
        fields.append((raw, hidden))
    headers.fields = tuple(fields)


def swap_credential(key: Key, family: ApiFamily, request: http.Request,
                    creds: Credentials) -> bool:
    """Put the key's real credential where the client put its virtual one (or, with no
    client credential, in the family's first credential header). True if swapped.
    It is a HiddenCredential (seatbelt/records/redact.py), in a header or in the query:
    mitmweb, the console and a dump of the flow do not show it."""
    secret = key.access.upstream_credential
    if secret is None:
        return False
    real = secret.reveal()
    places = creds.places or ([family.credential_headers[0]] if family.credential_headers
                              else [])
    for place in places:
        if place.endswith("="):
            request.query[place[:-1]] = real
            hide_query(request)
        elif place == "authorization":
            _put_hidden(request.headers, place, f"Bearer {real}")
        else:
            _put_hidden(request.headers, place, real)
    keep_state_hidden(request)
    return bool(places)


def clamp_output(refused: tuple[CapRefusal, ...], prompt_estimate: int, multiplier: int,
                 min_output: int, current: int) -> int | None:
    """The output limit that fits every refusing cap now, if at least min_output and below
    the current one; else None (refuse as usual)."""
    room = min(r.limit - r.spent - r.reserved for r in refused)
    new = (room - prompt_estimate) // max(1, multiplier)
    if new < min_output or new >= current:
        return None
    return new


def write_clamp(family: ApiFamily, route: Route, body: dict[str, Any], limit: int) -> None:
    """Lower the request's output limit to `limit`, in the field(s) the request uses."""
    named = [n for n in _TOP_LIMITS if isinstance(body.get(n), int)
             and not isinstance(body.get(n), bool)]
    if named:
        for n in named:
            body[n] = min(body[n], limit)
    else:
        family.write_limit(route, body, limit)
