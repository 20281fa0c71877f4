"""Baseline 2 for the benchmark: every response streamed through a callable that returns
each chunk as it is, the least any streaming, metering proxy addon must do.

    mitmdump -s bench/passthrough_addon.py --mode reverse:http://127.0.0.1:PORT

This is the fair baseline for seatbelt: a stream callable changes how mitmproxy moves a
body (one Python call per chunk, nothing buffered), whatever the callable does.
"""

from __future__ import annotations

from mitmproxy import http


def _same(chunk: bytes) -> bytes:
    return chunk


class PassThrough:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = _same


addons = [PassThrough()]
