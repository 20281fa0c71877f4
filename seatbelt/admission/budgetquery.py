"""`GET /seatbelt/budget`: a client asks, with its own credential, what it has left.

Answered by the proxy itself on any host and under any mode (the path is seatbelt's, no LLM
API has it), never forwarded. The figures are the budget headers' (seatbelt/admission/
budgetheaders.py) per cap, tokens and USD, read from one ledger snapshot:

    {"key": "agent-zero", "account": "research",
     "remaining_tokens": 1410, "reset_s": 3600,     # the binding cap, as the headers say
     "remaining_usd": 4.25,                          # null without a USD cap
     "caps": [{"subject": "key:agent-zero", "unit": "tokens", "cap": 200000,
               "window": "rolling:3600", "spent": ..., "reserved": ..., "remaining": ...,
               "reset_s": 3600}, ...]}

An unknown, missing or expired credential gets the same 401 an LLM request would get
(OpenAI shape): it learns nothing about any key.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mitmproxy import http

from seatbelt.admission import budgetheaders, refusals
from seatbelt.admission.auth import find_in
from seatbelt.apis import FAMILIES
from seatbelt.apis.openai import OpenAI
from seatbelt.config.policy import Key, Policy, fingerprint
from seatbelt.ledger.base import CapState, LedgerUnavailable
from seatbelt.runtime import Runtime
from seatbelt.usd.pricing import to_usd

PATHS = frozenset({"/seatbelt/budget", "/v1/seatbelt/budget"})
_SHAPE = OpenAI()  # the error shape of the answer's refusals
# Every place any family reads a credential from, each once.
_HEADERS = tuple(dict.fromkeys(h for f in FAMILIES for h in f.credential_headers))
_QUERY = tuple(dict.fromkeys(q for f in FAMILIES for q in f.credential_query))


def asks(flow: http.HTTPFlow) -> bool:
    """Is this request the budget endpoint (GET, the path without its query)?"""
    req = flow.request
    return req.method in ("GET", "HEAD") and req.path.split("?", 1)[0] in PATHS


async def answer(rt: Runtime, flow: http.HTTPFlow) -> None:
    """Set flow.response: the key's budget, or the refusal an LLM request would get."""
    refusal, key, states = await _look_up(rt, flow)
    if refusal is not None:
        flow.response = refusals.to_response(_SHAPE, refusal)
    else:
        assert key is not None
        body = budget_body(key, states, time.time())
        headers = {"content-type": "application/json", "cache-control": "no-store",
                   **budgetheaders.headers_for([s for s in states
                                                if not s.subject.startswith("usd:")])}
        flow.response = http.Response.make(200, json.dumps(body).encode(), headers)
    flow.comment = f"seatbelt: budget query {flow.response.status_code}" + (
        f" key={key.id}" if key is not None else "")


async def _look_up(rt: Runtime, flow: http.HTTPFlow
                   ) -> tuple[refusals.Refusal | None, Key | None, list[CapState]]:
    policy, ledger = rt.policy, rt.ledger
    if policy is None or ledger is None or not rt.ready():
        reason = rt.config_error or "the ledger is not available"
        return refusals.unavailable(f"seatbelt is not ready ({reason})"), None, []
    creds = find_in(flow.request, _HEADERS, _QUERY)
    if creds.error:
        return refusals.bad_credential(creds.error), None, []
    fp = fingerprint(creds.value) if creds.value is not None else None
    key = policy.key_by_fingerprint(fp) if fp is not None else None
    if key is None:
        return refusals.unknown_key(fp), None, []
    if key.access.expired(time.time()):
        assert key.access.expires is not None
        return refusals.key_expired(key.id, key.access.expires), None, []
    try:
        states = await ledger.snapshot(_caps(policy, key))
    except LedgerUnavailable:
        return refusals.unavailable("the ledger is not available"), None, []
    return None, key, states


def _caps(policy: Policy, key: Key) -> list[Any]:
    return [*policy.caps_for(key), *policy.usd_caps_for(key)]


def budget_body(key: Key, states: list[CapState], now: float) -> dict[str, Any]:
    """The answer's JSON (pure): every cap, and the binding figures like the headers'."""
    caps = [_cap_entry(s, now) for s in states]
    tokens = [c for c in caps if c["unit"] == "tokens" and c["remaining"] is not None]
    usd = [c for c in caps if c["unit"] == "usd" and c["remaining"] is not None]
    binding = min(tokens, key=lambda c: c["remaining"], default=None)
    return {
        "key": key.id,
        "account": key.account,
        "remaining_tokens": max(0, binding["remaining"]) if binding else None,
        "reset_s": binding["reset_s"] if binding else None,
        "remaining_usd": max(0.0, min(c["remaining"] for c in usd)) if usd else None,
        "caps": caps,
    }


def _cap_entry(state: CapState, now: float) -> dict[str, Any]:
    usd = state.subject.startswith("usd:")
    figure = to_usd if usd else (lambda v: v)
    return {
        "subject": state.subject.removeprefix("usd:"),
        "unit": "usd" if usd else "tokens",
        "cap": figure(state.limit),
        "window": state.window.label(),
        "spent": figure(state.spent),
        "reserved": figure(state.reserved),
        "remaining": figure(state.remaining),
        "reset_s": budgetheaders.reset_seconds(state.window, now),
    }
