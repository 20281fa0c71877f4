"""Explicit-proxy mode: SDKs reach an HTTPS API through mitmdump with its CA, no app change."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import (
    Key,
    Proxy,
    anthropic_client,
    chat,
    http_module,
    openai_client,
    policy_text,
    tag,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

SDK = Key("sdk")
ENV = Key("env")


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("explicit", policy_text([SDK, ENV]), mode="regular",
                         options={"ssl_insecure": "true"})


def proxied(proxy: Proxy) -> Any:
    """An SDK http_client that uses the proxy and trusts only mitmproxy's CA."""
    ctx = ssl.create_default_context(cafile=str(proxy.ca_path))
    return http_module().Client(proxy=proxy.url, verify=ctx, timeout=30)


def test_sdk_through_explicit_proxy_is_metered(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    base = standin.tls_url
    oa = openai_client(base + "/v1", SDK, http_client=proxied(proxy))
    oa.chat.completions.create(**chat(f"{t} #len:5", max_tokens=9))
    list(oa.chat.completions.create(**chat(f"{t} #gzip", max_tokens=9), stream=True))
    an = anthropic_client(base, SDK, http_client=proxied(proxy))
    with an.messages.stream(model="claude-sonnet-4-0", max_tokens=9,
                            messages=[{"role": "user", "content": f"{t} #cache-read:3"}]) as s:
        s.get_final_message()
    upstream = standin.received(t)
    assert len(upstream) == 3 and all(r.tls for r in upstream)
    assert all(r.usage_reported for r in upstream)
    lines = proxy.wait_audit(SDK.id, 3)
    assert {a["host"] for a in lines} == {"127.0.0.1"}
    assert {a["usage_source"] for a in lines} == {"reported"}
    row = proxy.row(SDK.id)
    assert row["spent"] == sum(r.spend for r in upstream) and row["reserved"] == 0


def test_unknown_credential_refused_over_tls(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(standin.tls_url + "/v1", "sk-nobody-" + "1" * 20,
                           http_client=proxied(proxy))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**chat(t, max_tokens=5))
    client2 = anthropic_client(standin.tls_url, "sk-nobody-" + "2" * 20,
                               http_client=proxied(proxy))
    with pytest.raises(anthropic.AuthenticationError):
        client2.messages.create(model="claude-sonnet-4-0", max_tokens=5,
                                messages=[{"role": "user", "content": t}])
    assert standin.received(t) == []


SCRIPT = textwrap.dedent("""
    import json, sys, openai
    client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
    resp = client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=6, messages=[{"role": "user", "content": sys.argv[3]}])
    print(json.dumps({"prompt": resp.usage.prompt_tokens,
                      "completion": resp.usage.completion_tokens}))
""")


def test_unmodified_app_with_https_proxy_environment(proxy: Proxy, standin: StandIn) -> None:
    """HTTPS_PROXY + SSL_CERT_FILE, the SDK's default client: the app itself is unchanged."""
    t = tag()
    env = {k: v for k, v in os.environ.items() if k.lower() not in
           ("no_proxy", "http_proxy", "https_proxy", "all_proxy")}
    env.update(HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(proxy.ca_path))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, standin.tls_url + "/v1", ENV.credential, t],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    usage = json.loads(out.stdout)
    (up,) = standin.received(t)
    assert up.tls
    assert usage == {"prompt": up.usage["prompt_tokens"],
                     "completion": up.usage["completion_tokens"]}
    (line,) = proxy.wait_audit(ENV.id, 1)
    assert line["prompt_tokens"] + line["completion_tokens"] == up.spend
    assert proxy.row(ENV.id)["spent"] == up.spend
