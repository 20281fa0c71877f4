"""`GET /seatbelt/budget` (seatbelt/admission/budgetquery.py): which requests ask, the answer
from one snapshot, and the 401/503 an LLM request would get. Through a real proxy:
tests/e2e/test_budget_endpoint.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import tflow
from prometheus_client import CollectorRegistry

from seatbelt.admission import budgetquery
from seatbelt.admission.budgetheaders import REMAINING, RESET
from seatbelt.config.policy import fingerprint, load_policy
from seatbelt.ledger import open_ledger
from seatbelt.ledger.base import CapState, Window
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime

POLICY = """\
version: 1
accounts:
  research: {{cap: 5000, window: daily}}
keys:
  - id: agent-zero
    account: research
    credential_sha256: {fp}
    cap: 2000
    window: rolling:3600
"""


def ask(path: str = "/seatbelt/budget", method: str = "GET",
        credential: str | None = "sk-zero") -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = method, path
    if credential is not None:
        flow.request.headers["authorization"] = f"Bearer {credential}"
    return flow


def test_only_a_get_or_head_of_the_budget_path_asks() -> None:
    assert budgetquery.asks(ask())
    assert budgetquery.asks(ask("/v1/seatbelt/budget?x=1", "HEAD"))
    assert not budgetquery.asks(ask(method="POST"))
    assert not budgetquery.asks(ask("/seatbelt/budget/more"))
    assert not budgetquery.asks(ask("/v1/chat/completions"))


def test_the_body_names_every_cap_and_the_binding_figures(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY.format(fp=fingerprint("sk-zero")))
    key = load_policy(str(tmp_path / "policy.yaml")).keys[0]
    states = [
        CapState("key:agent-zero", 2000, Window("rolling", 3600), spent=500, reserved=90),
        CapState("account:research", 5000, Window("daily"), spent=4800, reserved=90),
        CapState("usd:key:agent-zero", 5_000_000, Window("balance"), spent=750_000, reserved=0),
    ]
    body = budgetquery.budget_body(key, states, now=86400 * 3 + 3600)
    assert (body["key"], body["account"], body["remaining_tokens"], body["reset_s"],
            body["remaining_usd"]) == ("agent-zero", "research", 110, 86400 - 3600, 4.25)
    assert body["caps"][2] == {"subject": "key:agent-zero", "unit": "usd", "cap": 5.0,
                               "window": "balance", "spent": 0.75, "reserved": 0.0,
                               "remaining": 4.25, "reset_s": None}
    assert body["caps"][0]["window"] == "rolling:3600" and body["caps"][0]["reset_s"] == 3600
    uncapped = budgetquery.budget_body(key, [CapState("key:agent-zero", None, Window(), 9, 0)], 0)
    assert (uncapped["remaining_tokens"], uncapped["reset_s"], uncapped["remaining_usd"]) == (
        None, None, None)


def answered(tmp_path: Path, flow: http.HTTPFlow, *, ready: bool = True) -> http.HTTPFlow:
    (tmp_path / "policy.yaml").write_text(POLICY.format(fp=fingerprint("sk-zero")))
    rt = Runtime(metrics=Metrics(CollectorRegistry()))

    async def go() -> None:
        rt.policy = load_policy(str(tmp_path / "policy.yaml"))
        rt.ledger = open_ledger("memory://")
        if ready:
            await rt.open_ledger()
            caps = rt.policy.caps_for(rt.policy.keys[0])
            hold = (await rt.ledger.reserve(caps, 300)).hold_id
            await rt.ledger.settle(str(hold), 100, source="reported")
        await budgetquery.answer(rt, flow)

    asyncio.run(go())
    return flow


def test_a_known_credential_gets_its_budget_never_forwarded(tmp_path: Path) -> None:
    flow = answered(tmp_path, ask())
    assert flow.response is not None and flow.response.status_code == 200
    body = json.loads(flow.response.get_text() or "")
    assert (body["key"], body["remaining_tokens"]) == ("agent-zero", 1900)
    assert flow.response.headers[REMAINING] == "1900" and flow.response.headers[RESET] == "3600"
    assert flow.response.headers["cache-control"] == "no-store"
    assert flow.comment == "seatbelt: budget query 200 key=agent-zero"


def test_an_unknown_or_missing_credential_learns_nothing(tmp_path: Path) -> None:
    for credential in ("sk-someone-else", None):
        flow = answered(tmp_path, ask(credential=credential))
        assert flow.response is not None and flow.response.status_code == 401
        text = flow.response.get_text() or ""
        assert "agent-zero" not in text and "research" not in text
        assert flow.comment == "seatbelt: budget query 401"


def test_before_the_ledger_answers_the_answer_is_503(tmp_path: Path) -> None:
    flow = answered(tmp_path, ask(), ready=False)
    assert flow.response is not None and flow.response.status_code == 503
    assert "seatbelt is not ready" in (flow.response.get_text() or "")
