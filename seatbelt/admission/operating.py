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
    """(allowed, why not) for a virtual key's request: every destination allowed, and the
    upstream's identity checked. Over TLS mitmproxy verifies the certificate against the
    host unless `ssl_insecure` (then an IP with an allowed server name could be anyone);
    plain HTTP has no certificate, so only a loopback address is trusted there."""
    for host in destinations(flow):
        if not host_allowed(key.access.upstream_hosts, host):
            return False, host
    host = destinations(flow)[0]
    if flow.request.scheme == "https":
        if ctx.options.ssl_insecure:
            return False, f"{host} (ssl_insecure: its certificate is not verified)"
    elif not _loopback(flow.request.host):
        return False, f"{host} (plain HTTP: no certificate proves who answers)"
    return True, ""


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def swap_credential(key: Key, family: ApiFamily, request: http.Request,
                    creds: Credentials) -> bool:
    """Put the key's real credential where the client put its virtual one (or, with no
    client credential, in the family's first credential header). True if swapped."""
    secret = key.access.upstream_credential
    if secret is None:
        return False
    real = secret.reveal()
    places = creds.places or ([family.credential_headers[0]] if family.credential_headers
                              else [])
    for place in places:
        if place.endswith("="):
            request.query[place[:-1]] = real
        elif place == "authorization":
            request.headers[place] = f"Bearer {real}"
        else:
            request.headers[place] = real
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
