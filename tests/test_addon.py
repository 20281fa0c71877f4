"""The addon entry, driven through mitmproxy's own test helpers (taddons, tflow)."""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

import seatbelt.addon as entry
from seatbelt.config.policy import fingerprint
from seatbelt.runtime import Runtime

POLICY = """\
version: 1
require_auth: true
keys:
  - id: alice
    account: team
    credential_sha256: {fp}
    cap: 100000
"""


@pytest.fixture
def runtime(monkeypatch):
    rt = Runtime()
    monkeypatch.setattr(entry, "RUNTIME", rt)
    return rt


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(fp=fingerprint("sk-alice")))
    return str(path)


def chat_flow(body: dict, key: str | None = "sk-alice"):
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = "/v1/chat/completions"
    f.request.headers["content-type"] = "application/json"
    if key:
        f.request.headers["authorization"] = f"Bearer {key}"
    f.request.headers["x-seatbelt-key"] = "forged"
    f.request.set_content(json.dumps(body).encode())
    f.response = None
    return f


async def configured(tctx, sb, policy_file, **extra):
    tctx.configure(sb, seatbelt_policy=policy_file, seatbelt_ledger="memory://",
                   seatbelt_metrics="", seatbelt_audit="", **extra)
    for _ in range(50):  # the ledger opens in the background
        if entry.RUNTIME.ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not ready: {entry.RUNTIME.config_error}")


def test_admits_reserves_writes_limit_and_settles(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            f = chat_flow({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            await sb.request(f)
            assert f.response is None
            assert "x-seatbelt-key" not in f.request.headers
            sent = json.loads(f.request.content)
            assert sent["max_tokens"] == 4096  # fallback_max_output, written in
            meter = runtime.meters[f.id]
            assert meter.reserved > 0 and "limit_written" in meter.edits
            holds = await runtime.ledger.holds()
            assert [h.amount for h in holds] == [meter.reserved]
            # the upstream answers with usage
            f.response = tflow.tresp(status_code=200, headers=(
                (b"content-type", b"application/json"),), content=b"")
            sb.responseheaders(f)
            scanner = f.response.stream
            body = json.dumps({"choices": [{"message": {"content": "hello"}}],
                               "usage": {"prompt_tokens": 7, "completion_tokens": 3}}).encode()
            assert scanner(body) == body
            scanner(b"")
            await sb.response(f)
            assert f.id not in runtime.meters
            assert await runtime.ledger.holds() == []
            policy = runtime.policy
            [state] = await runtime.ledger.snapshot(policy.caps_for(policy.keys[0])[:1])
            assert state.spent == 10
            assert "spent=7+3 (reported)" in f.comment
            # a second finish (error after response) changes nothing
            await sb.error(f)
            [state] = await runtime.ledger.snapshot(policy.caps_for(policy.keys[0])[:1])
            assert state.spent == 10
            assert f.request.headers["authorization"] != "Bearer sk-alice"  # redacted

    asyncio.run(go())


def test_unknown_key_is_refused_in_openai_shape(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            f = chat_flow({"model": "m", "messages": []}, key="sk-mallory")
            await sb.request(f)
            assert f.response.status_code == 401
            assert json.loads(f.response.content)["error"]["code"] == "invalid_api_key"
            assert f.marked and "refused invalid_api_key" in f.comment
            assert "sk-mallory" not in f.response.text and "sk-mallory" not in f.comment

    asyncio.run(go())


def test_over_cap_is_refused_before_dispatch(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            f = chat_flow({"model": "m", "max_tokens": 200000, "messages": []})
            await sb.request(f)
            assert f.response.status_code == 429
            assert f.response.headers["x-seatbelt-refused"] == "insufficient_quota"
            assert f.id not in runtime.meters

    asyncio.run(go())


def test_bad_body_is_400(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            f = chat_flow({})
            f.request.set_content(b'{"model": "m", "max_tokens": "lots"}')
            await sb.request(f)
            assert f.response.status_code == 400
            assert f.response.headers["x-should-retry"] == "false"

    asyncio.run(go())


def test_not_configured_refuses_llm_but_passes_other_traffic(runtime, tmp_path):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            tctx.configure(sb, seatbelt_policy=str(tmp_path / "missing.yaml"),
                           seatbelt_ledger="memory://", seatbelt_metrics="", seatbelt_audit="")
            assert runtime.config_error and "missing.yaml" in runtime.config_error
            assert "\n" not in runtime.config_error
            f = chat_flow({"model": "m", "messages": []})
            await sb.request(f)
            assert f.response.status_code == 503
            other = tflow.tflow()
            other.request.path = "/index.html"
            await sb.request(other)
            assert other.response is None

    asyncio.run(go())


def test_failed_live_change_keeps_running_configuration(runtime, policy_file, tmp_path):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            sb.running()
            broken = tmp_path / "broken.yaml"
            broken.write_text("version: 2\n")
            with pytest.raises(exceptions.OptionsError):
                tctx.configure(sb, seatbelt_policy=str(broken))
            assert runtime.ready() and runtime.policy.path == policy_file
            with pytest.raises(exceptions.OptionsError):
                tctx.configure(sb, seatbelt_inject_usage="maybe")
            assert runtime.settings.inject_usage is True

    asyncio.run(go())


def test_script_reload_done_keeps_in_flight_meters(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            f = chat_flow({"model": "m", "max_tokens": 10, "messages": []})
            await sb.request(f)
            assert not tctx.master.should_exit.is_set()
            assert sb.done() is None  # a reload: nothing finished
            assert f.id in runtime.meters
            fresh = entry.Seatbelt()  # the reloaded instance finishes the flow
            f.response = tflow.tresp(status_code=500)
            await fresh.response(f)
            assert f.id not in runtime.meters and await runtime.ledger.holds() == []

    asyncio.run(go())


def test_shutdown_done_finishes_in_flight(runtime, policy_file):
    async def go():
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            f = chat_flow({"model": "m", "max_tokens": 10, "messages": []})
            await sb.request(f)
            tctx.master.should_exit.set()
            await sb.done()
            assert runtime.meters == {}
            assert runtime.ledger_open  # closed ledger keeps its flag; holds were finished
            assert await runtime.ledger.holds() == []

    asyncio.run(go())
