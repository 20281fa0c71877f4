"""Reading a header the way mitmproxy's `Headers` does, in one pass over its raw fields.

`Headers.get(name)` goes through four Python layers (Mapping.get, MultiDict.__getitem__,
Headers.get_all and a key conversion per field): ~10,000 instructions per lookup with a
handful of fields (bench/instructions.py), and the request path looks up about eight.
These give the same answers (names compared by `bytes.lower()`, values decoded as mitmproxy
decodes them, repeats folded with ", ") without the layers. Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import http


def _decoded(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")  # as mitmproxy's Headers decode values


def header_lists(headers: http.Headers, names: Sequence[str]) -> dict[str, list[str]]:
    """`headers.get_all(name)` for each of these lowercase names that is present, in one
    pass over the raw fields rather than one pass per name."""
    wanted = {name.encode(): name for name in names}
    out: dict[str, list[str]] = {}
    for raw, value in headers.fields:
        name = wanted.get(raw.lower())
        if name is not None:
            out.setdefault(name, []).append(_decoded(value))
    return out


def header_value(headers: http.Headers, name: bytes) -> str | None:
    """`headers.get(name)`: `name` lowercase bytes, repeats joined with ", ", None when
    absent."""
    found: list[bytes] | None = None
    for raw, value in headers.fields:
        if raw.lower() == name:
            if found is None:
                found = [value]
            else:
                found.append(value)
    if found is None:
        return None
    if len(found) == 1:
        return _decoded(found[0])
    return ", ".join(_decoded(v) for v in found)


def header(headers: http.Headers, name: bytes) -> str:
    """`headers.get(name, "")`."""
    value = header_value(headers, name)
    return "" if value is None else value


def host_header(request: http.Request) -> str | None:
    """`request.host_header`: HTTP/1's Host header read in one pass; HTTP/2 and 3 (where
    :authority comes first) through mitmproxy's own property."""
    if request.data.http_version.startswith(b"HTTP/1"):
        return header_value(request.headers, b"host")
    return request.host_header
