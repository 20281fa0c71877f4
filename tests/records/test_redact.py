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
