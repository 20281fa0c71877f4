"""Hints an operator needs from how an upstream answered a request seatbelt edited."""

from __future__ import annotations

import logging

from mitmproxy import http

logger = logging.getLogger("seatbelt")

_hinted: set[str] = set()


def hint_rejected_stream_options(flow: http.HTTPFlow, injected: bool) -> None:
    """Log, once per host, how to opt out when an upstream rejects the stream_options
    seatbelt added (older Azure API versions answer 400 "Unrecognized request argument")."""
    resp = flow.response
    if not injected or resp is None or resp.status_code != 400:
        return
    try:
        text = (resp.get_text(strict=False) or "")[:4000]
    except ValueError:
        return
    host = flow.request.pretty_host
    if "stream_options" not in text or host in _hinted or len(_hinted) > 1000:
        return
    _hinted.add(host)
    logger.warning(
        f"seatbelt: {host} answered 400 to a stream where seatbelt added "
        "stream_options.include_usage; if this upstream does not accept stream_options "
        "(older Azure OpenAI API versions do not), add to the policy `routes: [{host: "
        f"{host}, stream_options: false}}]`: its streams are then metered from an estimate"
    )


