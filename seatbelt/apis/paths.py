"""The paths an upstream server may see for one request-target (issue 14, item 1).

Servers read one request-target differently: uvicorn with httptools and Node's `URL` drop
a `#fragment`, uvicorn with h11 and Go keep it in the path; Node's URL parsers read `\\`
as `/`; Tomcat-style servers cut `;params` off each segment; most decode percent-escapes
(`%2F`, `%76`) and some resolve `.`/`..` segments or merge `//`. The router routes every
one of these readings (each then normalised by `fields.norm_path`: decoded, dot segments
resolved, lowercase) and takes the answer only when they agree; see `apis.route_request`.
Pure functions.
"""

from __future__ import annotations

import re

_PARAMS = re.compile(r";[^/]*")


def readings(target: str) -> tuple[str, ...]:
    """The distinct paths (query cut off) that common servers may route `target` as."""
    as_sent = target.split("?", 1)[0]  # h11, Go: a '#' stays in the path
    no_fragment = target.split("#", 1)[0].split("?", 1)[0]  # httptools, WHATWG URL, nginx
    url = no_fragment.replace("\\", "/")  # Node's URL parsers: '\' is '/'
    no_params = _PARAMS.sub("", url)  # servlet containers: /chat;jsessionid=1/completions
    return tuple(dict.fromkeys((no_fragment, as_sent, url, no_params)))


def is_plain(target: str) -> bool:
    """True for a path every server reads alike: no '#', '\\', ';', '%', '//' or dot
    segment (the fast path: one reading)."""
    path = target.split("?", 1)[0]
    if any(c in path for c in "#\\;%") or "//" in path:
        return False
    return "/." not in path
