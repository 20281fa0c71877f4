"""Admission with the operating fields, through the addon entry with taddons/tflow:
shadow mode, budget headers, clamp, virtual keys, allow-lists, identities, fan-out, live policy."""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.net.http.http1.assemble import assemble_request_head
from mitmproxy.test import taddons, tflow
from mitmproxy.tools.web.app import flow_to_json
from mitmproxy.utils.strutils import bytes_to_escaped_str

import seatbelt.addon as entry
from seatbelt.config.policy import fingerprint
from seatbelt.records.metrics import get_metrics
from seatbelt.runtime import Runtime
from seatbelt.ui.commands import SeatbeltCommands

REAL = "sk-real-upstream-0123456789"

POLICY = """\
version: 1
accounts:
  team: {}
  quiet: {enforce: false}
keys:
  - id: capped
    account: team
    credential_sha256: %(capped)s
    cap: 1000
    window: daily
  - id: shadow
    account: quiet
    credential_sha256: %(shadow)s
    cap: 100
    models: [gpt-4o-mini]
    max_concurrent: 1
  - id: clamp
    account: team
    credential_sha256: %(clamp)s
    cap: 600
    over_cap: clamp
    min_output: 50
  - id: picky
    account: team
    credential_sha256: %(picky)s
    models: ["gpt-4o*"]
  - id: halted
    account: team
    credential_sha256: %(halted)s
    disabled: true
  - id: virtual
    account: team
    credential_sha256: %(virtual)s
    upstream_credential_env: SEATBELT_TEST_UPSTREAM
    upstream_hosts: [api.example.com]
  - id: fan
    account: team
    credential_sha256: %(fan)s
    max_concurrent: 2
    rpm: 3
  - id: byuser
    account: team
    proxy_auth_user: alice
  - id: bycert
    account: team
    client_cert_sha256: %(cert)s
  - id: bynet
    account: team
    client_cidr: [192.0.2.0/24]
"""
NAMES = ("capped", "shadow", "clamp", "picky", "halted", "virtual", "fan")


@pytest.fixture
def runtime(monkeypatch):
    rt = Runtime()
    monkeypatch.setattr(entry, "RUNTIME", rt)
    monkeypatch.setenv("SEATBELT_TEST_UPSTREAM", REAL)
    return rt


def policy_text(cert_fp: str = "cd" * 32) -> str:
    return POLICY % ({n: fingerprint(f"sk-{n}") for n in NAMES} | {"cert": cert_fp})


@pytest.fixture
def files(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text())
    return policy, tmp_path / "audit.jsonl"


def flow_for(body: dict, key: str | None, host: str = "api.example.com"):
    f = tflow.tflow()
    f.request.scheme, f.request.port = "https", 443  # a verified upstream (virtual keys)
    f.request.host = host
    f.request.headers["host"] = host
    f.request.method = "POST"
    f.request.path = "/v1/chat/completions"
    f.request.headers["content-type"] = "application/json"
    if key:
        f.request.headers["authorization"] = f"Bearer {key}"
    f.request.set_content(json.dumps(body).encode())
    f.response = None
    return f


def chat(max_tokens: int | None = 10, model: str = "gpt-4o-mini", **kw) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def configured(tctx, sb, files):
    policy, audit = files
    tctx.configure(sb, seatbelt_policy=str(policy), seatbelt_ledger="memory://",
                   seatbelt_metrics="", seatbelt_audit=str(audit))
    for _ in range(100):
        if entry.RUNTIME.ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not ready: {entry.RUNTIME.config_error}")


async def serve(sb, f, prompt=5, completion=5, stream=False):
    """Answer the flow as the upstream would (buffered JSON or one SSE stream)."""
    ctype = b"text/event-stream" if stream else b"application/json"
    f.response = tflow.tresp(status_code=200, headers=((b"content-type", ctype),), content=b"")
    sb.responseheaders(f)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    if stream:
        body = (b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n' + b"data: "
                + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")
    else:
        body = json.dumps({"choices": [{"message": {"content": "x"}}], "usage": usage}).encode()
    if callable(f.response.stream):
        f.response.stream(body)
        f.response.stream(b"")
    await sb.response(f)


def audit_lines(files) -> list[dict]:
    path = files[1]
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def shadow_count(key: str, outcome: str) -> float:
    return get_metrics().shadow_refusals.labels("quiet", key, outcome)._value.get()


def run(go):
    asyncio.run(go())


def test_shadow_mode_meters_logs_counts_and_refuses_nothing(runtime, files):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, files)
            before_rate = shadow_count("shadow", "refused_quota")
            before_model = shadow_count("shadow", "forbidden")
            f = flow_for(chat(max_tokens=500, model="gpt-4.1"), "sk-shadow")  # over cap 100
            await sb.request(f)
            assert f.response is None  # forwarded
            meter = runtime.meters[f.id]
            assert meter.hold_id is not None  # metered: a hold on the key's subjects
            await serve(sb, f, prompt=40, completion=90)
            line = [a for a in audit_lines(files) if a["flow_id"] == f.id][0]
            assert line["outcome"] == "served" and line["status"] == 200
            assert "shadow_refused:insufficient_quota" in line["edits"]
            assert "shadow_refused:model_not_allowed" in line["edits"]
            assert shadow_count("shadow", "refused_quota") == before_rate + 1
            assert shadow_count("shadow", "forbidden") == before_model + 1
            caps = runtime.policy.caps_for(runtime.policy.keys[1])
            [state, _] = await runtime.ledger.snapshot(caps)
            assert state.spent == 130 and state.reserved == 0  # over the cap: recorded whole
            # The headers still tell the truth about the (overspent) budget.
            assert f.response.headers["x-seatbelt-remaining-tokens"] == "0"

    run(go)


def test_budget_headers_on_buffered_and_streamed_responses(runtime, files):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, files)
            f = flow_for(chat(max_tokens=100), "sk-capped")
            await sb.request(f)
            reserved = runtime.meters[f.id].reserved
            await serve(sb, f, prompt=7, completion=3)
            h = f.response.headers
            assert int(h["x-seatbelt-remaining-tokens"]) == 1000 - reserved  # own hold counted
            assert 1 <= int(h["x-seatbelt-reset"]) <= 86400  # daily window
            g = flow_for(chat(max_tokens=100, stream=True), "sk-capped")
            await sb.request(g)
            reserved = runtime.meters[g.id].reserved
            await serve(sb, g, stream=True)
            assert callable(g.response.stream)  # really streamed
            assert int(g.response.headers["x-seatbelt-remaining-tokens"]) == 1000 - 10 - reserved
            # An uncapped key gets neither header.
            u = flow_for(chat(), "sk-picky")
            await sb.request(u)
            await serve(sb, u)
            assert "x-seatbelt-remaining-tokens" not in u.response.headers
            assert "x-seatbelt-reset" not in u.response.headers

    run(go)


def test_clamp_lowers_the_limit_or_refuses_below_min_output(runtime, files):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, files)
            f = flow_for(chat(max_tokens=5000), "sk-clamp")
            await sb.request(f)
            assert f.response is None
            sent = json.loads(f.request.content)
            meter = runtime.meters[f.id]
            assert 50 <= sent["max_tokens"] < 5000
            assert meter.reserved <= 600 and meter.reserved == meter.prompt_estimate + \
                sent["max_tokens"]
            assert "clamped" in meter.edits
            await serve(sb, f, prompt=10, completion=10)
            assert f.response.headers["x-seatbelt-clamped"] == f"5000->{sent['max_tokens']}"
            # 600 - 20 spent: a request that cannot get 50 output tokens is refused (a model
            # with no public tokenizer: its prompt is held at its byte bound).
            big = flow_for(dict(chat(max_tokens=5000, model="house-model"),
                                messages=[{"role": "user", "content": "x" * 2200}]), "sk-clamp")
            await sb.request(big)
            assert big.response.status_code == 429
            assert json.loads(big.request.content)["max_tokens"] == 5000  # untouched

    run(go)


def test_virtual_key_swaps_only_on_its_hosts_and_is_redacted(runtime, files):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, files)
            f = flow_for(chat(), "sk-virtual")
            await sb.request(f)
            assert f.response is None
            # What goes upstream: the bytes mitmproxy writes (HTTP/1 and HTTP/2 alike join
            # the header fields) carry the real key ...
            assert f"authorization: Bearer {REAL}".encode() in assemble_request_head(
                f.request)
            # ... while mitmweb's /flows and WebSocket (flow_to_json) and the console
            # (bytes_to_escaped_str of each field) show a placeholder while in flight.
            assert REAL not in json.dumps(flow_to_json(f))
            shown = [bytes_to_escaped_str(v) for _, v in f.request.headers.fields]
            assert not any(REAL in v for v in shown) and "hidden" in " ".join(shown)
            assert REAL not in f.request.headers["authorization"]
            meter = runtime.meters[f.id]
            assert "credential_swapped" in meter.edits
            assert REAL not in (f.comment or "") and REAL not in json.dumps(f.metadata)
            await serve(sb, f)
            assert REAL not in f.request.headers["authorization"]  # redacted once over
            assert REAL not in files[1].read_text()
            # Elsewhere: 403, nothing forwarded, the real key never written in.
            g = flow_for(chat(), "sk-virtual", host="evil.example")
            await sb.request(g)
            assert g.response.status_code == 403
            assert g.response.headers["x-seatbelt-refused"] == "host_not_allowed"
            assert REAL not in g.request.headers["authorization"]
            # A spoofed Host header naming the allowed host does not help: it names another
            # host than the destination, refused 400 before any credential is looked at.
            h = flow_for(chat(), "sk-virtual", host="evil.example")
            h.request.headers["host"] = "api.example.com"
            await sb.request(h)
            assert h.response.status_code == 400
            assert REAL not in h.request.headers["authorization"]
            # An upstream whose certificate is not verified never gets the real key:
            # under ssl_insecure, or over plain HTTP to anything but loopback.
            tctx.options.ssl_insecure = True
            i = flow_for(chat(), "sk-virtual")
            await sb.request(i)
            assert i.response.status_code == 403
            assert "ssl_insecure" in i.response.text
            assert REAL not in i.request.headers["authorization"]
            tctx.options.ssl_insecure = False
            j = flow_for(chat(), "sk-virtual")
            j.request.scheme, j.request.port = "http", 80
            await sb.request(j)
            assert j.response.status_code == 403
            assert REAL not in j.request.headers["authorization"]
            assert REAL not in h.request.headers["authorization"]

    run(go)


def test_allow_list_and_disabled_key(runtime, files):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, files)
            ok = flow_for(chat(model="gpt-4o-2024"), "sk-picky")
            await sb.request(ok)
            assert ok.response is None
            no = flow_for(chat(model="claude-3"), "sk-picky")
            await sb.request(no)
            assert no.response.status_code == 403
            assert json.loads(no.response.content)["error"]["code"] == "model_not_allowed"
            assert no.response.headers["x-should-retry"] == "false"
            off = flow_for(chat(), "sk-halted")
            await sb.request(off)
            assert off.response.status_code == 403
            assert json.loads(off.response.content)["error"]["code"] == "key_disabled"
            lines = {a["flow_id"]: a for a in audit_lines(files)}
            assert lines[no.id]["outcome"] == "forbidden" and lines[no.id]["key"] == "picky"
            assert lines[off.id]["status"] == 403

    run(go)


def test_identity_by_proxy_auth_cert_and_address_never_by_header(runtime, tmp_path):
    async def go():
        from mitmproxy import certs

        store = certs.CertStore.from_store(tmp_path / "ca", "mitmproxy", 2048)
        client_cert = store.get_cert("client.example", []).cert
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text(client_cert.fingerprint().hex()))
        files = (policy, tmp_path / "audit.jsonl")
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, files)

            def key_of(f):
                return f.metadata["seatbelt"]["key"], f.metadata["seatbelt"]["identity"]

            a = flow_for(chat(), "sk-shared-provider-key")
            a.metadata["proxyauth"] = ("alice", "pw")
            await sb.request(a)
            assert key_of(a) == ("byuser", "proxy_auth")
            await serve(sb, a)
            assert a.metadata["proxyauth"][0] == "alice"
            assert "pw" not in a.metadata["proxyauth"]  # the proxy password is not kept
            c = flow_for(chat(), None)
            c.client_conn.certificate_list = [client_cert]
            await sb.request(c)
            assert key_of(c) == ("bycert", "client_cert")
            n = flow_for(chat(), None)
            n.client_conn.peername = ("192.0.2.7", 5000)
            await sb.request(n)
            assert key_of(n) == ("bynet", "client_cidr")
            # The credential wins over every other identity.
            both = flow_for(chat(), "sk-picky")
            both.metadata["proxyauth"] = ("alice", "pw")
            await sb.request(both)
            assert key_of(both) == ("picky", "credential")
            # Headers never identify: not a forged proxy-auth, not X-Forwarded-For.
            forged = flow_for(chat(), None)
            forged.request.headers["proxy-authorization"] = "Basic YWxpY2U6cHc="
            forged.request.headers["x-forwarded-for"] = "192.0.2.7"
            forged.request.headers["x-seatbelt-key"] = "byuser"
            await sb.request(forged)
            assert forged.response.status_code == 401

    run(go)


def test_max_concurrent_and_rpm(runtime, files):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, files)
            first, second = flow_for(chat(), "sk-fan"), flow_for(chat(), "sk-fan")
            await sb.request(first)
            await sb.request(second)
            third = flow_for(chat(), "sk-fan")
            await sb.request(third)
            assert third.response.status_code == 429
            assert third.response.headers["retry-after"] == "1"
            assert "max_concurrent" in json.loads(third.response.content)["error"]["message"]
            await serve(sb, first)  # one slot frees; the refused one never counted
            fourth = flow_for(chat(), "sk-fan")
            await sb.request(fourth)
            assert fourth.response is None  # 3rd request of this minute: rpm 3 reached
            await serve(sb, second)
            await serve(sb, fourth)
            fifth = flow_for(chat(), "sk-fan")
            await sb.request(fifth)
            assert fifth.response.status_code == 429
            assert "rpm" in json.loads(fifth.response.content)["error"]["message"]
            assert 1 <= int(fifth.response.headers["retry-after"]) <= 60
            assert runtime.fanout.in_flight == {} and runtime.fanout.pending == {}

    run(go)


def test_live_policy_file_change_and_command_are_audited(runtime, files):
    async def go():
        policy, _ = files
        sb = entry.Seatbelt()
        cmds = SeatbeltCommands(lambda: entry.RUNTIME)
        with taddons.context(sb, cmds) as tctx:
            await configured(tctx, sb, files)
            first = runtime.policy
            spend = flow_for(chat(max_tokens=100), "sk-capped")
            await sb.request(spend)
            await serve(sb, spend, prompt=30, completion=20)
            runtime.policy_watch.poll(runtime)  # nothing changed: nothing happens
            assert runtime.policy is first
            policy.write_text(policy.read_text().replace("cap: 1000", "cap: 2000"))
            runtime.policy_watch.poll(runtime)
            second = runtime.policy
            assert second is not first and second.keys[0].cap == 2000
            caps = second.caps_for(second.keys[0])
            assert (await runtime.ledger.snapshot(caps))[0].spent == 50  # ledger kept
            policy.write_text("version: 1\nkeys:\n  - id: x\n    cap: -1\n")
            runtime.policy_watch.poll(runtime)
            runtime.policy_watch.poll(runtime)  # the same broken version: reported once
            assert runtime.policy is second
            with pytest.raises(exceptions.CommandError, match="stays in force"):
                tctx.master.commands.execute("seatbelt.reload")
            events = [a for a in audit_lines(files) if a["outcome"].startswith("policy_")]
            assert [(e["outcome"], e["trigger"]) for e in events] == [
                ("policy_reloaded", "file_changed"), ("policy_rejected", "file_changed"),
                ("policy_rejected", "command")]
            ok, bad = events[0], events[1]
            assert ok["policy_digest"] == second.digest[:12] and ok["error"] is None
            assert ok["key"] is None and ok["flow_id"] is None and ok["edits"] == []
            assert "keys[0]" in bad["error"] and "\n" not in bad["error"]
            assert bad["policy_digest"] is None

    run(go)
