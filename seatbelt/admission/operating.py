"""Admission helpers for the operating fields (seatbelt/config/access.py): identity, virtual
keys, clamp.

Pure where possible; the steps of seatbelt/admission/steps.py decide when each applies.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mitmproxy import http

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
    """Every host name the request could be delivered to, all of which must be allowed.

    `request.host` is where mitmproxy connects; in transparent mode it is an IP, and the
    TLS server name (verified against the upstream certificate unless ssl_insecure) names
    the host. A Host header naming yet another host is checked too: it may route the
    request at a shared front end."""
    req = flow.request
    out = [req.host]
    if _is_ip(req.host):
        sni = getattr(flow.server_conn, "sni", None) or getattr(flow.client_conn, "sni", None)
        if sni:
            out = [sni]
    header = req.host_header
    if header:
        name = header.rsplit(":", 1)[0] if not header.startswith("[") else \
            header[1:].split("]", 1)[0]
        if name and name.lower() not in (h.lower() for h in out):
            out.append(name)
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def virtual_host_ok(key: Key, flow: http.HTTPFlow) -> tuple[bool, str]:
    """(allowed, the first host that is not) for a virtual key's request."""
    for host in destinations(flow):
        if not host_allowed(key.access.upstream_hosts, host):
            return False, host
    return True, ""


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
