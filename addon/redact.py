"""Scrub credentials from a finished flow so saved flows and mitmweb do not keep them."""

from __future__ import annotations

from mitmproxy import http

CREDENTIAL_HEADERS = (
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
)
CREDENTIAL_QUERY = ("key",)
REDACTED = "[redacted by seatbelt]"


def redact_flow(flow: http.HTTPFlow) -> None:
    req = flow.request
    for name in CREDENTIAL_HEADERS:
        if name in req.headers:
            req.headers[name] = REDACTED
    if any(name in req.query for name in CREDENTIAL_QUERY):
        query = req.query
        for name in CREDENTIAL_QUERY:
            if name in query:
                query[name] = REDACTED
