"""Find the one credential a request carries, in the places its API family honours.

Anything ambiguous is an error (-> 401), never "anonymous": two different credentials,
a header sent twice or folded into one line, a value that does not parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mitmproxy import http

from seatbelt.apis.base import ApiFamily, Credentials
from seatbelt.codec.headers import header_lists

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


def find_in(request: http.Request, headers: Sequence[str], query: Sequence[str]) -> Credentials:
    """The one credential among these header and query names (find_credential's rules)."""
    found: dict[str, str] = {}
    sent = header_lists(request.headers, headers)
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
