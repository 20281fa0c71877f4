"""Find the one credential a request carries, in the places its API family honours.

Anything ambiguous is an error (-> 401), never "anonymous": two different credentials,
a header sent twice or folded into one line, a value that does not parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mitmproxy import http

from seatbelt.apis.base import ApiFamily, Credentials

_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


def _parse_header(name: str, value: str) -> tuple[str | None, str | None]:
    if name == "authorization":
        m = _BEARER.match(value)
        if not m or "," in m.group(1):
            return None, "the Authorization header is not of the form 'Bearer <key>'"
        return m.group(1), None
    token = value.strip()
    if not token or any(c in token for c in " ,\t"):
        return None, f"the {name} header does not hold exactly one key"
    return token, None


def find_credential(family: ApiFamily, request: http.Request) -> Credentials:
    return find_in(request, family.credential_headers, family.credential_query)


def header_values(request: http.Request, names: Sequence[str]) -> dict[str, list[str]]:
    """The values of these (lowercase) header names, in one pass over the raw fields: what
    `Headers.get_all` gives for each (its names match by bytes.lower(), as here), without a
    pass per name."""
    wanted = {name.encode(): name for name in names}
    out: dict[str, list[str]] = {}
    for raw, value in request.headers.fields:
        name = wanted.get(raw.lower())
        if name is not None:
            out.setdefault(name, []).append(value.decode("utf-8", "surrogateescape"))
    return out


def find_in(request: http.Request, headers: Sequence[str], query: Sequence[str]) -> Credentials:
    """The one credential among these header and query names (find_credential's rules)."""
    found: dict[str, str] = {}
    sent = header_values(request, headers)
    for name in headers:
        values = sent.get(name)
        if not values:
            continue
        if len(values) > 1:
            return Credentials(error=f"the {name} header is sent more than once", places=[name])
        token, error = _parse_header(name, values[0])
        if error:
            return Credentials(error=error, places=[name])
        found[name] = token  # type: ignore[assignment]
    # Parsing the query costs microseconds: only when the request-target has one.
    for name in query if b"?" in request.data.path else ():
        values = request.query.get_all(name)
        if not values:
            continue
        if len(values) > 1 or not values[0].strip():
            return Credentials(error=f"the {name}= query parameter is not exactly one key",
                               places=[name + "="])
        found[name + "="] = values[0].strip()
    distinct = set(found.values())
    if len(distinct) > 1:
        return Credentials(
            error="the request carries different credentials in "
            + ", ".join(sorted(found))
            + "; send exactly one",
            places=sorted(found),
        )
    if not distinct:
        return Credentials()
    return Credentials(value=distinct.pop(), places=sorted(found))
