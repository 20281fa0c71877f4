"""Admission on a WebSocket: the handshake once, then every response on it.

Both reuse the HTTP steps (seatbelt/admission/steps.py) over an `Admission`, so the
credential rules, operator switches, model allow-lists, token and USD holds, shadow mode
and fail-open behave exactly as for HTTP. What differs is how a refusal is answered: the
handshake is refused with an HTTP error before the upstream is contacted (Gate.refuse);
a response is refused in-band, with the API's own error event, and its message dropped.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from mitmproxy import http

from seatbelt.admission import estimate, operating, refusals, steps
from seatbelt.admission.context import Admission, Taken
from seatbelt.admission.gate import Gate, strip_internal_headers
from seatbelt.admission.operating import swap_credential
from seatbelt.admission.refusals import Refusal
from seatbelt.apis.base import RequestFacts, Route
from seatbelt.apis.openai import provider_of
from seatbelt.ledger.base import Cap, LedgerUnavailable
from seatbelt.metering.meter import Meter
from seatbelt.records.audit import AuditRecord
from seatbelt.runtime import Runtime
from seatbelt.sockets.events import FAMILY_OF, Kind, family_named
from seatbelt.sockets.session import Pending, Session
from seatbelt.usd import money

logger = logging.getLogger("seatbelt")

HANDSHAKE_STEPS: tuple[steps.Step, ...] = (
    steps.check_ready,
    steps.authenticate,
    steps.check_operator_switches,
    steps.limit_fanout,  # max_concurrent / rpm count sockets: the slot lasts the socket
)
RESPONSE_STEPS: tuple[steps.Step, ...] = (
    steps.check_ready,
    steps.check_operator_switches,
    steps.check_model,
    steps.check_priced,
    steps.reserve_tokens,
    steps.reserve_usd,
)


def socket_route(kind: Kind, request: http.Request) -> Route:
    family = family_named(FAMILY_OF[kind])
    provider = "gemini" if kind is Kind.LIVE else provider_of(None, request.headers)
    return Route(family, provider, kind.value, "metered")


async def run(a: Admission, chain: tuple[steps.Step, ...]) -> Refusal | None:
    """The steps in order; any failure is a refusal (never a forward: nothing is free)."""
    try:
        for step in chain:
            verdict = step(a)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if isinstance(verdict, Refusal):
                return verdict
    except LedgerUnavailable as e:
        a.rt.set_ledger_up(False, str(e))
        return refusals.unavailable("the ledger is not available")
    except Exception as e:
        logger.error(f"seatbelt: internal error ({type(e).__name__}) while admitting on a "
                     f"WebSocket to {a.flow.request.pretty_host}; refused")
        return refusals.internal_error()
    return None


async def handshake(gate: Gate, flow: http.HTTPFlow, kind: Kind) -> Session | None:
    """Authenticate the Upgrade request; on a refusal it is answered with the family's
    HTTP error (401, 403, 503...) and no byte reaches the upstream."""
    rt, req = gate.rt, flow.request
    route = socket_route(kind, req)
    strip_internal_headers(req)
    policy = rt.policy
    if policy is None:
        reason = rt.config_error or "the policy is not loaded"
        flow.response = refusals.to_response(
            route.family, refusals.unavailable(f"seatbelt is not ready ({reason})"))
        return None
    if not rt.ready():
        await rt.until_ready()  # at start the ledger may still be opening: wait, as HTTP does
    a = Admission(rt=rt, metrics=gate.metrics, flow=flow, route=route, policy=policy,
                  path=req.path.split("?", 1)[0], taken=Taken(flow.id, rt.fanout),
                  fail_open=rt.failing_open())
    refusal = await run(a, HANDSHAKE_STEPS)
    if refusal is not None:
        await gate.refuse(a, refusal)
        return None
    if a.key is not None and a.creds is not None and swap_credential(
            a.key, a.family, req, a.creds):
        flow.metadata["seatbelt_socket_swapped"] = True
    fanout_key = rt.fanout.commit(flow.id) if a.taken.fanout_slot else None
    model = req.query.get("model") or req.query.get("deployment")
    flow.comment = f"seatbelt: socket key={a.key_id} account={a.account_id}"
    return Session(flow=flow, kind=kind, route=route, policy=policy, key=a.key, ops=a.ops,
                   fingerprint=a.fingerprint, identity=a.identity, model=model,
                   beta="realtime=v1" in req.headers.get("openai-beta", ""),
                   fanout_key=fanout_key)


def follow_policy(rt: Runtime, s: Session) -> Refusal | None:
    """A socket outlives policy reloads: each response is admitted under the policy in
    force, its key looked up again (removed: 401 under require_auth; disabled: 403)."""
    policy = rt.policy
    if policy is None or policy is s.policy:
        return None
    if s.identity == "credential" and s.fingerprint is not None:
        key = policy.key_by_fingerprint(s.fingerprint)
    else:
        key = operating.identify(policy, s.flow)[0]
    s.policy, s.key = policy, key
    s.ops = policy.effective(key) if key is not None else None
    if key is None and policy.require_auth:
        return refusals.unknown_key(s.fingerprint)
    return None


async def admit_response(rt: Runtime, gate: Gate, s: Session, body: dict[str, Any],
                         facts: RequestFacts, prompt: int) -> Pending | Refusal:
    """A hold for one response (prompt bound + output limit), or the refusal."""
    refusal = follow_policy(rt, s)
    a = _admission(rt, gate, s, body, facts, prompt)
    if refusal is None:
        refusal = await run(a, RESPONSE_STEPS)
    policy = s.policy
    if refusal is not None:
        await a.taken.undo(rt)
        record_refusal(rt, gate, s, a, refusal)
        return refusal
    meter = _meter(s, a.taken.flow_id, facts, a.model, prompt,
                   reserved=a.amount if a.hold_id is not None else 0,
                   hold=(a.ledger, a.hold_id) if a.hold_id else None,
                   edits=a.edits + a.shadow_edits)
    money.attach(meter, policy, s.key, a.usd)
    a.taken.hold_ids = []  # the meter owns the holds now
    return Pending(meter, limit=a.write_limit)


def unheld_meter(s: Session, facts: RequestFacts, prompt: int) -> Meter:
    """The meter of a response that runs without a hold (cancelled: no cap could hold it)."""
    meter = _meter(s, s.next_id(), facts, facts.model or s.model, prompt, reserved=0,
                   hold=None, edits=["cancelled_over_cap"])
    money.attach(meter, s.policy, None, None)
    return meter


def _meter(s: Session, flow_id: str, facts: RequestFacts, model: str | None, prompt: int,
           *, reserved: int, hold: tuple[Any, str] | None, edits: list[str]) -> Meter:
    return Meter(
        flow_id=flow_id, family=s.route.family, route=s.route, facts=facts,
        account=s.account_id, key=s.key_id,
        credential_fp=s.fingerprint[:12] if s.fingerprint else None, model=model,
        model_label=s.policy.model_label(model), host=s.flow.request.pretty_host,
        path=s.flow.request.path.split("?", 1)[0], reserved=reserved,
        prompt_estimate=prompt, ledger=hold[0] if hold else None,
        hold_id=hold[1] if hold else None, edits=edits, dispatched_at=time.monotonic())


def _admission(rt: Runtime, gate: Gate, s: Session, body: dict[str, Any],
               facts: RequestFacts, prompt: int) -> Admission:
    policy = s.policy
    a = Admission(rt=rt, metrics=gate.metrics, flow=s.flow, route=s.route, policy=policy,
                  path=s.flow.request.path.split("?", 1)[0],
                  taken=Taken(s.next_id(), rt.fanout), fail_open=rt.failing_open())
    a.key, a.fingerprint, a.identity = s.key, s.fingerprint, s.identity
    a.ops = s.ops
    # Clamping rewrites the limit in the HTTP body's field; only the Responses body has it.
    a.limit_writable = s.kind is Kind.RESPONSES
    a.body, a.facts, a.model = body, facts, facts.model or s.model
    a.prompt_estimate = prompt
    a.amount, a.write_limit = estimate.reservation(
        facts, prompt, policy.model_max_output(a.model), policy.fallback_max_output)
    if a.write_limit is not None:
        a.edits.append("limit_written")
    return a


def caps_to_charge(rt: Runtime, s: Session) -> tuple[Cap, ...]:
    """A response the server began by itself that no cap can hold is cancelled, but what it
    spent must still land on the key's caps: these."""
    if s.key is None or rt.ledger is None:
        return ()
    return tuple(s.policy.caps_for(s.key))


def record_refusal(rt: Runtime, gate: Gate, s: Session, a: Admission,
                   refusal: Refusal) -> None:
    """Count and audit an in-band refusal like an HTTP one (Gate.refuse)."""
    try:
        gate.metrics.refused(account=a.account_id, key=a.key_id, outcome=refusal.outcome)
        rt.audit.write(AuditRecord.refused(
            flow_id=a.taken.flow_id, account=a.account_id, key=a.key_id,
            credential_fp=a.fingerprint[:12] if a.fingerprint else None,
            provider=s.route.provider, host=s.flow.request.pretty_host, path=a.path,
            model=a.model, stream=True, reserved=a.amount or None, outcome=refusal.outcome,
            status=refusal.status, edits=tuple(a.shadow_edits)))
    except Exception:  # recording must never undo the refusal
        logger.error("seatbelt: could not record a refusal")
