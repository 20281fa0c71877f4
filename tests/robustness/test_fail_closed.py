"""A bug inside seatbelt must never let an LLM request through unmetered (fail closed).

mitmproxy logs an exception raised by an addon's `request` hook and then forwards the
request as if nothing happened: without a guard, any unexpected error in admission (a
family module choking on an odd body, a ledger backend raising something unforeseen)
would be a free pass to the upstream.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy.test import taddons, tflow

import seatbelt.addon as entry
from seatbelt.admission import estimate, gate
from seatbelt.runtime import Runtime
from tests.test_addon import chat_flow, configured, policy_file  # noqa: F401


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Runtime:
    rt = Runtime()
    monkeypatch.setattr(entry, "RUNTIME", rt)
    return rt


def boom(*args: object, **kw: object) -> None:
    raise RuntimeError("a bug sk-secret-in-args")


@pytest.mark.parametrize("where", ["route", "estimate", "reserve"])
def test_internal_error_in_admission_refuses(runtime: Runtime, policy_file: str,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch,
                                             where: str, tmp_path) -> None:
    async def go() -> None:
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            await configured(tctx, sb, policy_file)
            audit = tmp_path / "audit.jsonl"
            tctx.configure(sb, seatbelt_audit=str(audit))
            if where == "route":
                monkeypatch.setattr(gate, "route_request", boom)
                monkeypatch.setattr(gate, "_ROUTES", {})  # routes are remembered per shape
            elif where == "estimate":
                monkeypatch.setattr(estimate, "prompt_bound", boom)
            else:
                assert runtime.ledger is not None
                monkeypatch.setattr(runtime.ledger, "reserve", boom)
            f = chat_flow({"model": "m", "messages": [], "max_tokens": 5})
            await sb.request(f)
            assert f.response is not None, "an internal error let the request through"
            assert f.response.status_code == 503
            assert f.response.headers["x-seatbelt-refused"] == "internal_error"
            assert "sk-" not in f.response.text
            assert json.loads(f.response.content)["error"]["code"] == "internal_error"
            if where != "route":  # the route is known: the refusal is audited like any other
                (line,) = [json.loads(x) for x in audit.read_text().splitlines()]
                assert (line["outcome"], line["status"], line["provider"]) == (
                    "unavailable", 503, "openai")
                assert "sk-" not in audit.read_text()
            await sb.response(f)
            assert runtime.meters == {}
            assert runtime.ledger is not None
            assert await runtime.ledger.holds() == []

    asyncio.run(go())


def test_a_settle_lost_to_a_passing_ledger_fault_is_retried(
    runtime: Runtime, tmp_path, policy_file: str  # noqa: F811
) -> None:
    """The proxy lives on, so its lease never lapses: without a retry, a settle that met a
    locked ledger would leave the hold counted until the maximum hold age (an hour)."""
    import sqlite3

    db = tmp_path / "ledger.db"

    async def go() -> None:
        sb = entry.Seatbelt()
        with taddons.context(sb) as tctx:
            tctx.configure(sb, seatbelt_policy=policy_file, seatbelt_ledger=f"sqlite:///{db}",
                           seatbelt_metrics="", seatbelt_audit="")
            for _ in range(100):  # the ledger opens in the background
                if runtime.ready():
                    break
                await asyncio.sleep(0.01)
            f = chat_flow({"model": "m", "messages": [], "max_tokens": 5})
            await sb.request(f)
            assert f.response is None and runtime.ledger is not None
            assert len(await runtime.ledger.holds()) == 1
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                f.response = tflow.tresp(status_code=500)  # release on an upstream error
                await sb.response(f)  # handed over; it meets the lock for 2 s, then is queued
                for _ in range(200):
                    if runtime.unfinished:
                        break
                    await asyncio.sleep(0.02)
                assert runtime.unfinished and not runtime.ready()
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            for _ in range(300):
                if not runtime.unfinished and not await runtime.ledger.holds():
                    break
                await asyncio.sleep(0.02)
            assert runtime.unfinished == []
            assert await runtime.ledger.holds() == []

    asyncio.run(go())
