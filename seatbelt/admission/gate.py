"""Admission: the request hook's work, from route to reservation (contract §4.1-4.3).

`Gate.admit` runs the ordered steps of seatbelt/admission/steps.py over one `Admission`
and holds the rules that are the same for every step: one way to refuse (answer, give
back what was taken, count, audit), and all or nothing (a step that fails, for any
reason, leaves no hold, no fan-out slot and no half-edited request behind). Everything
here happens before any byte of the request goes upstream: a refusal sets
`flow.response`, which mitmproxy sends without contacting the upstream.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time

from mitmproxy import http

from seatbelt.admission import destination, refusals
from seatbelt.admission.context import ANONYMOUS, Admission, Taken
from seatbelt.admission.operating import swap_credential
from seatbelt.admission.refusals import Refusal
from seatbelt.admission.steps import FORWARD, STEPS, Step
from seatbelt.apis import FAMILIES, route_request
from seatbelt.apis import UNKNOWN as UNKNOWN_ENDPOINT
from seatbelt.apis.base import Route
from seatbelt.config.policy import Policy
from seatbelt.ledger.base import LedgerUnavailable
from seatbelt.metering.meter import Meter
from seatbelt.records import comment
from seatbelt.records.audit import AuditRecord
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime
from seatbelt.usd import money

logger = logging.getLogger("seatbelt")

INTERNAL_HEADER_PREFIX = "x-seatbelt"


# route_request's answers (~10 us each: every family tries its patterns), remembered.
# Routing reads the method, the request-target, header *names* only (anthropic-version,
# api-key), the destination (for `routes:` rules) and whether it is an LLM host, so those
# are the key; lowercased raw names give the same answers as the families' str.lower() on
# decoded names. Bounded: cleared when full.
_ROUTES: dict[tuple, Route | None] = {}
_ROUTES_MAX = 4096


def llm_route(flow: http.HTTPFlow, policy: Policy | None = None) -> Route | None:
    """The request's API route; the policy's `routes:` rules may override it per host/path
    (the host mitmproxy connects to: seatbelt/admission/destination.py). A Host header
    naming another host, or a path whose readings route differently, gives a route of kind
    "refused" (400, seatbelt/admission/steps.py: check_route)."""
    req = flow.request
    host = destination.destination(flow) if policy is not None and policy.routes else None
    llm_host = destination.on_llm_host(flow, policy)
    key = (req.method, req.path, host, llm_host, policy.digest if policy else None,
           frozenset(name.lower() for name, _ in req.headers.fields))
    try:
        route = _ROUTES[key]
    except KeyError:
        api = ((lambda path: policy.route_settings(host, path).api)
               if policy is not None and host is not None else None)
        route = route_request(req.method, req.path, req.headers, api=api, llm_host=llm_host)
        if (route is not None and route.endpoint == UNKNOWN_ENDPOINT and policy is not None
                and policy.unknown_endpoints == "allow"):
            route = None
        if len(_ROUTES) >= _ROUTES_MAX:
            _ROUTES.clear()
        _ROUTES[key] = route
    if route is not None and route.kind != "refused" and destination.host_mismatch(flow):
        return dataclasses.replace(route, endpoint=destination.HOST_MISMATCH, kind="refused")
    return route


_INTERNAL_PREFIX = INTERNAL_HEADER_PREFIX.encode()


def strip_internal_headers(request: http.Request) -> None:
    """No x-seatbelt-* header reaches upstream, whoever sent it."""
    # A look at the raw names first: decoding every name through Headers.keys() cost
    # ~10 us per request, and almost no request carries such a header.
    n = len(_INTERNAL_PREFIX)
    fields = request.headers.fields
    if all(name.isascii() and name[:n].lower() != _INTERNAL_PREFIX for name, _ in fields):
        return
    for name in list(request.headers.keys()):
        if name.lower().startswith(INTERNAL_HEADER_PREFIX):
            del request.headers[name]




class Gate:
    """Admits a request on an LLM route, or refuses it; dependencies are passed in."""

    def __init__(self, rt: Runtime, metrics: Metrics, steps: tuple[Step, ...] = STEPS) -> None:
        self.rt = rt
        self.metrics = metrics
        self.steps = steps
        # Which steps to await, worked out once: inspect.isawaitable per step and request
        # cost ~25 us (bench/hooks_bench.py).
        self._plan = tuple((step, inspect.iscoroutinefunction(step)) for step in steps)

    async def admit(self, flow: http.HTTPFlow, route: Route) -> None:
        """Run the steps; on success register the request's Meter, else refuse."""
        policy = self.rt.policy
        strip_internal_headers(flow.request)
        taken = Taken(flow.id, self.rt.fanout)
        if policy is None:  # not configured (yet): never forwarded
            reason = self.rt.config_error or "the policy is not loaded"
            await self._refuse_unconfigured(flow, route, taken, reason)
            return
        if not self.rt.ready():
            await self.rt.until_ready()  # at start the ledger may still be opening: wait
        a = Admission(rt=self.rt, metrics=self.metrics, flow=flow, route=route,
                      policy=policy, path=flow.request.path.split("?", 1)[0], taken=taken,
                      fail_open=self.rt.failing_open())
        try:
            verdict = await self._run(a)
        except LedgerUnavailable as e:
            self.rt.set_ledger_up(False, str(e))
            verdict = refusals.unavailable("the ledger is not available")
        except Exception as e:
            _log_internal_error(e, flow)
            verdict = refusals.internal_error()
        if isinstance(verdict, Refusal):
            await self.refuse(a, verdict)
        elif verdict is FORWARD:
            self._forward_as_key(a)
        else:
            try:
                self._open_meter(a)
            except Exception as e:  # the hold is given back: nothing forwarded unmetered
                _log_internal_error(e, flow)
                await self.refuse(a, refusals.internal_error())

    async def _run(self, a: Admission) -> Refusal | object | None:
        for step, is_async in self._plan:
            verdict = step(a)
            if is_async:
                verdict = await verdict  # type: ignore[misc]
            if verdict is not None:
                return verdict
        return None

    async def refuse(self, a: Admission, refusal: Refusal) -> None:
        """The one way to refuse: give back what was taken, answer in the family's shape,
        mark the flow, count and audit it under the identity found so far."""
        await a.taken.undo(self.rt)
        flow = a.flow
        flow.response = refusals.to_response(a.family, refusal)
        reserved = a.amount if a.amount else None
        flow.comment = comment.refused(refusal.code, a.key_id, a.account_id, reserved)
        flow.marked = ":no_entry:"
        try:
            self.metrics.refused(account=a.account_id, key=a.key_id, outcome=refusal.outcome)
            self.rt.audit.write(AuditRecord.refused(
                flow_id=flow.id, account=a.account_id, key=a.key_id,
                credential_fp=a.fingerprint[:12] if a.fingerprint else None,
                provider=a.route.provider, host=destination.destination(flow), path=a.path,
                model=a.model, stream=a.stream, reserved=reserved, outcome=refusal.outcome,
                status=refusal.status, edits=tuple(a.shadow_edits)))
        except Exception:  # recording must never undo the refusal
            logger.error("seatbelt: could not record a refusal")

    async def _refuse_unconfigured(self, flow: http.HTTPFlow, route: Route, taken: Taken,
                                   reason: str) -> None:
        flow.response = refusals.to_response(
            route.family, refusals.unavailable(f"seatbelt is not ready ({reason})"))
        flow.comment = comment.refused("ledger_unavailable", ANONYMOUS, ANONYMOUS, None)
        flow.marked = ":no_entry:"
        self.metrics.refused(account=ANONYMOUS, key=ANONYMOUS, outcome="unavailable")

    def _forward_as_key(self, a: Admission) -> None:
        """Last step before forwarding: a virtual key's real credential goes in."""
        if a.key is not None and a.creds is not None and swap_credential(
                a.key, a.family, a.flow.request, a.creds):
            a.edits.append("credential_swapped")

    def _open_meter(self, a: Admission) -> None:
        """Forward: the request now belongs to its Meter, which settles it exactly once."""
        assert a.facts is not None
        self._forward_as_key(a)  # headers/query only: the body bytes are not touched again
        flow = a.flow
        meter = Meter(
            flow_id=flow.id, family=a.family, route=a.route, facts=a.facts,
            account=a.account_id, key=a.key_id,
            credential_fp=a.fingerprint[:12] if a.fingerprint else None,
            model=a.model, model_label=a.policy.model_label(a.model),
            host=destination.destination(flow),
            path=a.path, reserved=a.amount if a.hold_id is not None else 0,
            prompt_estimate=a.prompt_estimate, ledger=a.ledger if a.hold_id else None,
            hold_id=a.hold_id, edits=a.edits + a.shadow_edits,
            injected_usage=a.injected_usage, headers=a.headers,
            fanout_key=self.rt.fanout.commit(flow.id), dispatched_at=time.monotonic(),
            flow=flow)
        a.taken.fanout_slot = False  # committed: released when the meter finishes
        money.attach(meter, a.policy, a.key, a.usd)
        self.rt.meters[flow.id] = meter
        a.taken.hold_ids = []  # the meter owns the holds now
        flow.metadata["seatbelt"] = {"key": a.key_id, "account": a.account_id,
                                     "reserved": meter.reserved, "identity": a.identity}
        flow.comment = comment.admitted(a.key_id, a.account_id, meter.reserved, a.identity)


def _log_internal_error(e: Exception, flow: http.HTTPFlow) -> None:
    """Only the exception's type and place are logged: its text may quote a secret."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
    logger.error(f"seatbelt: internal error ({type(e).__name__} at {where}) while "
                 f"admitting a request to {flow.request.pretty_host}; refused (503)")


def refuse_without_route(flow: http.HTTPFlow) -> None:
    """Routing itself failed: refuse in the most common shape rather than forward."""
    flow.response = refusals.to_response(FAMILIES[-1], refusals.internal_error())
