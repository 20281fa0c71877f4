"""The operator hint (seatbelt/settlement/hints.py): an upstream that rejects the
stream_options seatbelt added is named once per host, with the policy line that opts out."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from seatbelt.settlement import hints

REJECTED = b'{"error":{"message":"Unrecognized request argument supplied: stream_options"}}'


@pytest.fixture(autouse=True)
def _fresh_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hints, "_hinted", set())


def answered(host: str, status: int, body: bytes) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request.host = host
    assert flow.response is not None
    flow.response.status_code = status
    flow.response.content = body
    return flow


def hinted(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "stream_options" in r.getMessage()]


def test_a_rejected_injection_is_hinted_once_per_host(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seatbelt"):
        hints.hint_rejected_stream_options(answered("old.azure.example", 400, REJECTED), True)
        hints.hint_rejected_stream_options(answered("old.azure.example", 400, REJECTED), True)
        hints.hint_rejected_stream_options(answered("other.example", 400, REJECTED), True)
    lines = hinted(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("seatbelt: old.azure.example answered 400")
    assert "`routes: [{host: old.azure.example, stream_options: false}]`" in lines[0]


@pytest.mark.parametrize("status,body,injected", [
    (400, REJECTED, False),  # seatbelt added nothing: not its business
    (200, REJECTED, True),
    (400, b'{"error":{"message":"max_tokens is too large"}}', True),
])
def test_no_hint_unless_an_injection_was_rejected_for_it(
    caplog: pytest.LogCaptureFixture, status: int, body: bytes, injected: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="seatbelt"):
        hints.hint_rejected_stream_options(answered("h.example", status, body), injected)
    assert hinted(caplog) == []


def test_no_response_no_hint(caplog: pytest.LogCaptureFixture) -> None:
    flow = tflow.tflow()
    with caplog.at_level(logging.WARNING, logger="seatbelt"):
        hints.hint_rejected_stream_options(flow, True)
    assert hinted(caplog) == []
