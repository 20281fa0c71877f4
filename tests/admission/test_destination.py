"""Where a request really goes (seatbelt/admission/destination.py): never the client's Host
header, which is only compared (issue 14, item 4)."""

from __future__ import annotations

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from seatbelt.admission import destination
from seatbelt.config.policy import Policy


def flow(host: str, header: str | None, mode: str = "regular", sni: str | None = None):
    f = tflow.tflow()
    f.request.host = host
    if header is None:
        f.request.headers.pop("host", None)
    else:
        f.request.headers["host"] = header
    f.client_conn.proxy_mode = ProxyMode.parse(mode)
    f.client_conn.sni = sni
    return f


def test_the_destination_is_where_mitmproxy_connects() -> None:
    assert destination.destination(flow("API.example.com.", "evil.example")) == "api.example.com"
    # An IP with a TLS server name: the name (mitmproxy verifies the certificate for it).
    assert destination.destination(flow("10.1.2.3", None, sni="api.example.com")) == \
        "api.example.com"
    assert destination.destination(flow("10.1.2.3", None)) == "10.1.2.3"


@pytest.mark.parametrize("host,header,mode,sni,mismatch", [
    ("api.example.com", "api.example.com:443", "regular", None, None),
    ("api.example.com", "API.EXAMPLE.COM.", "regular", None, None),
    ("api.example.com", "free.example", "regular", None, "free.example"),
    ("127.0.0.1", "free.example", "regular", None, "free.example"),  # absolute-form to an IP
    ("127.0.0.1", "free.example", "reverse:http://127.0.0.1:1", None, "free.example"),
    ("10.1.2.3", "api.example.com", "transparent", "api.example.com", None),
    ("10.1.2.3", "free.example", "transparent", "api.example.com", "free.example"),
    # Plain-HTTP transparent: the OS gave an IP and nothing names it: not comparable.
    ("10.1.2.3", "api.example.com", "transparent", None, None),
    ("[::1]", "[::1]:8080", "regular", None, None),
    ("api.example.com", None, "regular", None, None),
    # One header holding two hosts, or a host and more: the first alone looked like a match.
    ("api.example.com", "api.example.com:443, free.example", "regular", None,
     "api.example.com:443, free.example"),
    ("api.example.com", "api.example.com free.example", "regular", None,
     "api.example.com free.example"),
])
def test_a_host_header_naming_another_host(host, header, mode, sni, mismatch) -> None:
    assert destination.host_mismatch(flow(host, header, mode, sni)) == mismatch


@pytest.mark.parametrize("second", [b"free.example", b"api.example.com", b"API.example.com:443"])
def test_a_host_header_sent_twice_is_a_mismatch(second: bytes) -> None:
    """Two Host fields read folded ("api.example.com:443, free.example": before, the part up
    to the one colon matched); an upstream may take either, so neither is taken."""
    f = flow("api.example.com", None)
    f.request.headers.fields += ((b"Host", b"api.example.com:443"), (b"host", second))
    assert destination.host_mismatch(f) == f"api.example.com:443, {second.decode().lower()}"


def test_llm_hosts_reverse_mode_and_policy_named(tmp_path) -> None:
    assert destination.on_llm_host(flow("x.example", None, "reverse:http://127.0.0.1:1"), None)
    assert not destination.on_llm_host(flow("x.example", None), None)
    policy = Policy(path="p", version=1, require_auth=True, fallback_max_output=1, models={},
                    accounts={}, keys=(), unmetered_endpoints="refuse", digest="d")
    assert not destination.on_llm_host(flow("llm.internal", None), policy)
    object.__setattr__(policy, "llm_hosts", frozenset({"llm.internal", "*.vllm.example"}))
    assert destination.on_llm_host(flow("llm.internal", "spoofed.example"), policy)
    assert destination.on_llm_host(flow("a.vllm.example", None), policy)
    assert not destination.on_llm_host(flow("web.example", "llm.internal"), policy)
