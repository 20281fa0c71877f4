"""The gate's rules over the steps: all or nothing, one refusal rule, the key's own identity.

A failure is injected after every admission step in turn (the step runs, takes what it
takes, then something breaks): the request must be refused 503, leave no hold, no fan-out
slot and no meter behind, and be recorded under the identity found so far.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mitmproxy.test import taddons

import seatbelt.addon as entry
from seatbelt.admission import gate, steps
from seatbelt.config.policy import fingerprint
from seatbelt.runtime import Runtime
from tests.test_addon import chat_flow, configured

POLICY = """\
version: 1
require_auth: true
prices:
  m: {{input: 1.0, output: 2.0}}
keys:
  - id: alice
    account: team
    credential_sha256: {fp}
    cap: 100000
    cap_usd: 10
    max_concurrent: 4
"""

AUTHENTICATED_AT = steps.STEPS.index(steps.authenticate)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Runtime:
    rt = Runtime()
    monkeypatch.setattr(entry, "RUNTIME", rt)
    return rt


@pytest.fixture
def policy_file(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(fp=fingerprint("sk-alice")))
    return str(path)


class Injected(RuntimeError):
    pass


def failing_after(step: steps.Step) -> steps.Step:
    async def wrapper(a):  # type: ignore[no-untyped-def]
        verdict = step(a)
        if asyncio.iscoroutine(verdict):
            await verdict
        raise Injected("after " + step.__name__)

    return wrapper


@pytest.mark.parametrize("index", range(len(steps.STEPS)),
                         ids=[s.__name__ for s in steps.STEPS])
def test_a_failure_after_any_step_gives_everything_back(runtime: Runtime, policy_file: str,
                                                        tmp_path: Path, index: int) -> None:
    audit = tmp_path / "audit.jsonl"

    async def go() -> None:
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            runtime.audit.open(str(audit))
            chain = list(steps.STEPS)
            chain[index] = failing_after(chain[index])
            sb.gate = gate.Gate(runtime, sb.gate.metrics, tuple(chain))
            # a request that takes everything: a written limit, a fan-out slot, two holds
            f = chat_flow({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            await sb.request(f)
            assert f.response is not None and f.response.status_code == 503
            assert f.response.headers["x-seatbelt-refused"] == "internal_error"
            assert f.id not in runtime.meters
            assert await runtime.ledger.holds() == []
            assert runtime.fanout.in_flight == {} and runtime.fanout.pending == {}
            # the key's slot is free again: a normal request of the same key is admitted
            sb.gate = gate.Gate(runtime, sb.gate.metrics)
            ok = chat_flow({"model": "m", "messages": []})
            await sb.request(ok)
            assert ok.response is None and ok.id in runtime.meters

    asyncio.run(go())
    [line] = [json.loads(x) for x in audit.read_text().splitlines()]
    assert line["outcome"] == "unavailable" and line["status"] == 503
    expected = "alice" if index >= AUTHENTICATED_AT else "anonymous"
    assert (line["key"], line["account"]) == (expected, "team" if expected == "alice"
                                              else "anonymous")


def test_a_body_with_a_lone_surrogate_is_forwarded_as_the_client_wrote_it(
        runtime: Runtime, policy_file: str) -> None:
    """A lone surrogate cannot be UTF-8: the edited body is re-encoded escaped instead of
    failing after the hold was taken (which stranded the hold until its maximum age)."""
    async def go() -> None:
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            f = chat_flow({})
            f.request.set_content(
                b'{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}')
            await sb.request(f)
            assert f.response is None, f.response and f.response.content
            sent = f.request.content
            assert b"\\ud800" in sent and json.loads(sent)["max_tokens"] > 0
            assert len(await runtime.ledger.holds()) == 2  # tokens and USD

    asyncio.run(go())


def test_a_refusal_after_the_token_hold_releases_it(runtime: Runtime, tmp_path: Path) -> None:
    """The USD cap refuses after the token hold was granted: the token hold goes back."""
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(fp=fingerprint("sk-alice")).replace("cap_usd: 10",
                                                                       "cap_usd: 0.000001"))

    async def go() -> None:
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, str(path))
            f = chat_flow({"model": "m", "messages": []})
            await sb.request(f)
            assert f.response is not None and f.response.status_code == 429
            assert await runtime.ledger.holds() == []
            assert runtime.fanout.in_flight == {}

    asyncio.run(go())
