"""Once a flow ends, no credential place any API family reads keeps its value."""

import pytest
from mitmproxy.test import tflow

from seatbelt.apis import FAMILIES
from seatbelt.records.redact import REDACTED, redact_flow

PLACES = sorted({h for f in FAMILIES for h in f.credential_headers} | {"proxy-authorization"})


@pytest.mark.parametrize("header", PLACES)
def test_every_family_credential_header_is_scrubbed(header):
    f = tflow.tflow()
    f.request.headers[header] = "Bearer sk-live-secret"
    f.request.headers["content-type"] = "application/json"
    redact_flow(f)
    assert f.request.headers[header] == REDACTED
    assert f.request.headers["content-type"] == "application/json"


@pytest.mark.parametrize("name", ["key", "access_token"])
def test_query_credentials_are_scrubbed_and_other_parameters_stay(name):
    f = tflow.tflow()
    f.request.path = f"/v1beta/models/m:streamGenerateContent?alt=sse&{name}=AIza-secret"
    redact_flow(f)
    assert "AIza-secret" not in f.request.path
    assert f.request.query["alt"] == "sse" and f.request.query[name] == REDACTED


def test_proxy_auth_password_is_scrubbed_and_the_user_kept():
    f = tflow.tflow()
    f.metadata["proxyauth"] = ("alice", "hunter2")
    redact_flow(f)
    assert f.metadata["proxyauth"] == ("alice", REDACTED)


def _in_flight(path: str, **headers: str):  # type: ignore[no-untyped-def]
    f = tflow.tflow()
    f.request.path = path
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    return f


def test_in_flight_credentials_read_as_placeholders_and_go_upstream_as_themselves():
    from mitmproxy import io as mitmio
    from mitmproxy.net.http.http1.assemble import assemble_request
    from mitmproxy.tools.web.app import flow_to_json

    from seatbelt.records.redact import HIDDEN, HIDDEN_QUERY, hide

    secret, query_secret = "sk-real-header-0123456789", "AIzaREALQUERY0123456789"
    f = _in_flight(f"/v1beta/models/m:generateContent?alt=sse&key={query_secret}",
                   authorization=f"Bearer {secret}", x_goog_api_key=secret)
    hide(f.request)
    wire = assemble_request(f.request)
    assert f"Bearer {secret}".encode() in wire and query_secret.encode() in wire
    assert b"alt=sse" in wire
    shown = repr(flow_to_json(f)) + f.request.pretty_url + repr(f.request.headers)
    shown += f.request.headers.get("authorization", "") + f.request.path
    import io

    dumped = io.BytesIO()
    mitmio.FlowWriter(dumped).add(f)  # mitmweb's /flows/dump, -w, the console's export
    for text in (shown, dumped.getvalue().decode("utf-8", "replace")):
        assert secret not in text and query_secret not in text
        assert HIDDEN in text and HIDDEN_QUERY in text
    assert "alt=sse" in f.request.path


def test_unhide_gives_the_request_its_own_values_back():
    from seatbelt.records.redact import hide, unhide

    f = _in_flight("/x?key=abc&y=1", x_api_key="k-1")
    hide(f.request)
    unhide(f.request)
    assert f.request.headers["x-api-key"] == "k-1"
    assert f.request.query["key"] == "abc"
    assert f.request.path == "/x?key=abc&y=1"


def test_hidden_in_flight_then_scrubbed_at_the_end():
    from seatbelt.records.redact import hide

    # Secrets no random flow id can contain (a uuid4 once held "abc")
    f = _in_flight("/x?key=query-secret-zz", authorization="Bearer sk-header-secret-zz")
    hide(f.request)
    redact_flow(f)
    state = repr(f.get_state())
    assert "query-secret-zz" not in state and "sk-header-secret-zz" not in state
    assert f.request.query["key"] == REDACTED
    assert f.request.headers["authorization"] == REDACTED


def test_a_flow_without_credentials_is_left_as_it_is():
    from mitmproxy import http

    from seatbelt.records.redact import hide

    f = _in_flight("/v1/models?limit=5", accept="*/*")
    before = f.request.data
    hide(f.request)
    assert type(f.request.data) is http.RequestData and f.request.data is before
    assert type(f.request.data.path) is bytes


def test_hiding_again_what_unhide_gave_back_takes_the_hidden_fields_it_made():
    """The request hook's unhide/hide round trip: each way one assignment (no new tuple)
    while nothing changed the headers in between."""
    from seatbelt.records.redact import HiddenCredential, hide, unhide

    f = _in_flight("/v1/chat/completions", authorization="Bearer sk-round-trip-0")
    hide(f.request)
    hidden = f.request.headers.fields
    unhide(f.request)
    plain = f.request.headers.fields
    assert not any(isinstance(v, HiddenCredential) for _, v in plain)
    assert f.request.headers["authorization"] == "Bearer sk-round-trip-0"
    hide(f.request)
    assert f.request.headers.fields is hidden
    unhide(f.request)
    assert f.request.headers.fields is plain


def test_a_credential_changed_while_unhidden_is_hidden_as_the_new_one():
    """A virtual key's swap (or any header change) between unhide and hide: the new value
    is hidden and goes upstream; the old fields are never put back."""
    from mitmproxy.net.http.http1.assemble import assemble_request

    from seatbelt.records.redact import HIDDEN, hide, unhide

    f = _in_flight("/v1/chat/completions", authorization="Bearer sk-virtual-0")
    hide(f.request)
    unhide(f.request)
    f.request.headers["authorization"] = "Bearer sk-real-upstream-1"
    hide(f.request)
    wire = assemble_request(f.request)
    assert b"Bearer sk-real-upstream-1" in wire and b"sk-virtual-0" not in wire
    assert f.request.headers["authorization"] == HIDDEN
    unhide(f.request)
    assert f.request.headers["authorization"] == "Bearer sk-real-upstream-1"


def test_a_scrubbed_request_keeps_no_plain_credential_anywhere_on_it():
    from seatbelt.records.redact import hide, unhide

    f = _in_flight("/v1/chat/completions", authorization="Bearer sk-kept-nowhere-9")
    hide(f.request)
    unhide(f.request)
    hide(f.request)
    redact_flow(f)
    assert "sk-kept-nowhere-9" not in repr(vars(f.request)) + repr(f.request.headers.fields)


def test_every_credential_of_a_many_credential_request_stays_hidden_over_round_trips():
    """An agent that sends its key in several places and spellings at once (two credential
    headers, one in odd case, and `key=`): each unhide/hide round trip of the request hook
    hides every one of them again, and every one still goes upstream as itself."""
    from mitmproxy import http
    from mitmproxy.net.http.http1.assemble import assemble_request

    from seatbelt.records.redact import HIDDEN, HIDDEN_QUERY, hide, unhide

    f = tflow.tflow()
    f.request.path = "/v1beta/models/m:generateContent?key=AIza-many-2&alt=sse"
    f.request.headers = http.Headers([(b"AuThOrIzAtIoN", b"Bearer sk-many-0"),
                                      (b"x-goog-api-key", b"AIza-many-1"),
                                      (b"content-type", b"application/json")])
    for _ in range(3):
        hide(f.request)
        shown = repr(f.request.headers) + f.request.path
        for secret in ("sk-many-0", "AIza-many-1", "AIza-many-2"):
            assert secret not in shown
        assert f.request.headers["authorization"] == HIDDEN
        assert f.request.headers["x-goog-api-key"] == HIDDEN
        assert f.request.query["key"] == HIDDEN_QUERY
        wire = assemble_request(f.request)
        for secret in (b"Bearer sk-many-0", b"AIza-many-1", b"key=AIza-many-2"):
            assert secret in wire
        unhide(f.request)
        assert f.request.headers["authorization"] == "Bearer sk-many-0"
        assert f.request.query["key"] == "AIza-many-2"
