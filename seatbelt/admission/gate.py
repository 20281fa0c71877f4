"""Admission: the request hook's work, from route to reservation (contract §4.1-4.3).

Everything here happens before any byte of the request goes upstream; a refusal is
answered by setting `flow.response`, which mitmproxy sends without contacting the
upstream.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from seatbelt.admission import budgetheaders, estimate, operating, refusals
from seatbelt.admission.auth import find_credential
from seatbelt.apis import route_request
from seatbelt.apis.base import BadRequestBody, Route, UnmeteredRequest
from seatbelt.codec.decoding import BodyTooLarge as DecodedTooLarge
from seatbelt.codec.decoding import decode_request_body
from seatbelt.codec.requestbody import (
    MAX_REQUEST_BODY,
    BodyTooLarge,
    UnreadableBody,
    dump_json,
    parse_json_object,
)
from seatbelt.config.policy import Policy, fingerprint
from seatbelt.ledger.base import Cap, LedgerUnavailable
from seatbelt.metering.meter import Meter
from seatbelt.records.metrics import get_metrics
from seatbelt.runtime import Runtime
from seatbelt.settlement.finish import audit_refusal
from seatbelt.usd import money

logger = logging.getLogger("seatbelt")

ANONYMOUS = "anonymous"
INTERNAL_HEADER_PREFIX = "x-seatbelt"


# route_request's answers (~10 us each: every family tries its patterns), remembered.
# Routing reads the method, the path and header *names* only (anthropic-version, api-key),
# so those are the key; lowercased raw names give the same answers as the families'
# str.lower() on decoded names. Bounded: cleared when full.
_ROUTES: dict[tuple[str, str, str | None, frozenset[bytes]], Route | None] = {}
_ROUTES_MAX = 4096


def llm_route(flow: http.HTTPFlow, policy: Policy | None = None) -> Route | None:
    """The request's API route; the policy's `routes:` rules may override it per host/path."""
    req = flow.request
    path = req.path.split("?", 1)[0]
    # (pretty_host parses the Host header: only worth it when a routes: rule may match)
    api = (policy.route_settings(req.pretty_host, path).api
           if policy is not None and policy.routes else None)
    key = (req.method, path, api, frozenset(name.lower() for name, _ in req.headers.fields))
    try:
        return _ROUTES[key]
    except KeyError:
        pass
    route = route_request(req.method, path, req.headers, api=api)
    if len(_ROUTES) >= _ROUTES_MAX:
        _ROUTES.clear()
    _ROUTES[key] = route
    return route


_hinted: set[str] = set()


def hint_rejected_stream_options(flow: http.HTTPFlow, injected: bool) -> None:
    """Log, once per host, how to opt out when an upstream rejects the stream_options
    seatbelt added (older Azure API versions answer 400 "Unrecognized request argument")."""
    resp = flow.response
    if not injected or resp is None or resp.status_code != 400:
        return
    try:
        text = (resp.get_text(strict=False) or "")[:4000]
    except ValueError:
        return
    host = flow.request.pretty_host
    if "stream_options" not in text or host in _hinted or len(_hinted) > 1000:
        return
    _hinted.add(host)
    logger.warning(
        f"seatbelt: {host} answered 400 to a stream where seatbelt added "
        "stream_options.include_usage; if this upstream does not accept stream_options "
        "(older Azure OpenAI API versions do not), add to the policy `routes: [{host: "
        f"{host}, stream_options: false}}]`: its streams are then metered from an estimate"
    )


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


async def admit(rt: Runtime, flow: http.HTTPFlow, route: Route) -> None:
    """Authenticate, estimate, reserve; on success register a Meter, else refuse."""
    req = flow.request
    strip_internal_headers(req)
    family = route.family
    path = req.path.split("?", 1)[0]
    policy = rt.policy

    def refuse(refusal: refusals.Refusal, *, account: str = ANONYMOUS, key: str = ANONYMOUS,
               fp: str | None = None, model: str | None = None, reserved: int | None = None,
               stream: bool = False) -> None:
        rt.fanout.cancel(flow.id)  # a max_concurrent / rpm count taken for this request
        flow.response = refusals.to_response(family, refusal)
        flow.comment = f"seatbelt: refused {refusal.code} key={key} account={account}" + (
            f" reserved={reserved}" if reserved is not None else ""
        )
        flow.marked = ":no_entry:"
        get_metrics().refused(account=account, key=key, outcome=refusal.outcome)
        audit_refusal(rt, flow, route, refusal, account=account, key=key, fp=fp,
                      model=model, reserved=reserved, stream=stream, path=path)

    fail_open = rt.failing_open()
    if policy is None or not (rt.ready() or fail_open):
        reason = rt.config_error or "the ledger is not available"
        refuse(refusals.unavailable(f"seatbelt is not ready ({reason})"))
        return

    creds = find_credential(family, req)
    if creds.error:
        refuse(refusals.bad_credential(creds.error))
        return
    fp = fingerprint(creds.value) if creds.value is not None else None
    key = policy.key_by_fingerprint(fp) if fp is not None else None
    identity = "credential" if key is not None else None
    if key is None:  # proxy-auth user, client cert, client address (seatbelt/config/access.py)
        key, identity = operating.identify(policy, flow)
    if key is None and policy.require_auth:
        refuse(refusals.unknown_key(fp), fp=fp)
        return
    account_id = key.account if key else ANONYMOUS
    key_id = key.id if key else ANONYMOUS
    ops = operating.effective_for(policy, key) if key is not None else None
    early_edits: list[str] = []

    def would_refuse(refusal: refusals.Refusal, **kw) -> bool:
        """Refuse, or in shadow mode (enforce: false) log, count and go on."""
        if ops is None or ops.enforce:
            refuse(refusal, account=account_id, key=key_id, fp=fp, **kw)
            return True
        early_edits.append(f"shadow_refused:{refusal.code}")
        get_metrics().shadow_refused(account=account_id, key=key_id, outcome=refusal.outcome)
        logger.info(f"seatbelt: shadow mode: key {key_id} would be refused {refusal.code} "
                    f"({refusal.status}); forwarded")
        return False

    if key is not None and ops is not None:
        # Not shadowed: an operator's off switch, and where a real credential may go.
        if ops.disabled:
            refuse(refusals.key_disabled(key_id), account=account_id, key=key_id, fp=fp)
            return
        if key.access.upstream_credential is not None:
            ok, host = operating.virtual_host_ok(key, flow)
            if not ok:
                refuse(refusals.host_not_allowed(key_id, host), account=account_id,
                       key=key_id, fp=fp)
                return

    def forward_as_key() -> None:
        """Last step before forwarding: a virtual key's real credential goes in."""
        if key is not None and operating.swap_credential(key, family, req, creds):
            early_edits.append("credential_swapped")

    if route.kind == "free":
        forward_as_key()
        return
    if route.kind == "unmetered":
        if (policy.unmetered_endpoints != "allow" and key is not None
                and would_refuse(refusals.unmetered(path))):
            return
        forward_as_key()
        return

    encoding = req.headers.get("content-encoding", "").strip().lower()
    try:
        raw = req.raw_content or b""
        data = decode_request_body(raw, encoding, MAX_REQUEST_BODY) if encoding else raw
        body = parse_json_object(data)
        facts = family.parse_request(route, body)
    except UnmeteredRequest:  # e.g. a background response: its cost happens out of sight
        if (policy.unmetered_endpoints != "allow" and key is not None
                and would_refuse(refusals.unmetered(path))):
            return
        forward_as_key()
        return
    except (BodyTooLarge, DecodedTooLarge) as e:
        refuse(refusals.too_large(str(e)), account=account_id, key=key_id, fp=fp)
        return
    except (UnreadableBody, BadRequestBody, ValueError) as e:
        refuse(refusals.unreadable(str(e)), account=account_id, key=key_id, fp=fp)
        return

    model = facts.model or route.model_from_path
    if (ops is not None and not ops.model_allowed(model)
            and would_refuse(refusals.model_not_allowed(key_id, model), model=model,
                             stream=facts.stream)):
        return
    prompt_est = estimate.prompt_estimate(body, data)
    amount, write_limit = estimate.reservation(
        facts, prompt_est, policy.model_max_output(model), policy.fallback_max_output
    )
    edits: list[str] = []
    if write_limit is not None:
        family.write_limit(route, body, write_limit)
        edits.append("limit_written")
    injected = False
    settings = rt.settings
    if (facts.stream and not facts.wants_usage and settings is not None and settings.inject_usage
            and (not policy.routes
                 or policy.route_settings(req.pretty_host, path).stream_options is not False)):
        injected = family.request_usage(route, body)
        if injected:
            edits.append("usage_requested")
            # The extra usage frame can only be hidden from an uncompressed stream.
            req.headers["accept-encoding"] = "identity"

    limits = key.access if key is not None else None
    if limits is not None and (limits.max_concurrent is not None or limits.rpm is not None):
        over = rt.fanout.check(key_id, limits.max_concurrent, limits.rpm)
        if over is not None and would_refuse(
                refusals.fanout(key_id, over.what, over.retry_after), model=model,
                reserved=amount, stream=facts.stream):
            return
        rt.fanout.acquire(key_id, flow.id)  # counted until the request is over

    # USD budgets (seatbelt/usd/money.py): an unpriced model under a USD cap is never free.
    unpriced = money.check_priced(policy, key, model) if key is not None else None
    if unpriced is not None and would_refuse(unpriced, model=model, stream=facts.stream):
        return
    usd = None

    hold_id = None
    ledger = None
    headers: dict[str, str] = {}
    if key is not None and not fail_open:
        ledger = rt.ledger
        caps = policy.caps_for(key)
        try:
            assert ledger is not None
            reservation = await ledger.reserve(caps, amount)
        except LedgerUnavailable as e:
            rt.set_ledger_up(False, str(e))
            if not rt.failing_open():
                refuse(refusals.unavailable("the ledger is not available"), account=account_id,
                       key=key_id, fp=fp, model=model, reserved=amount, stream=facts.stream)
                return
            ledger, fail_open, reservation = None, True, None
        try:
            if (reservation is not None and not reservation.granted and ops is not None
                    and ops.clamp and facts.produces_output):
                current = facts.max_output if facts.max_output is not None else write_limit
                new = operating.clamp_output(reservation.refusals, prompt_est,
                                             facts.multiplier, ops.min_output, current or 0)
                if new is not None:  # over_cap: clamp -- forward what the budget can pay
                    smaller = prompt_est + new * facts.multiplier
                    again = await ledger.reserve(caps, smaller)
                    if again.granted:
                        reservation, amount = again, smaller
                        operating.write_clamp(family, route, body, new)
                        edits.append("clamped")
                        headers[budgetheaders.CLAMPED] = f"{current}->{new}"
            if reservation is not None and not reservation.granted:
                windows = {c.subject: c.window for c in caps}
                if would_refuse(refusals.for_caps(reservation.refusals, key.id, windows),
                                model=model, reserved=amount, stream=facts.stream):
                    return
                # Shadow mode: hold on uncapped twins of the caps, so the spend is metered.
                reservation = await ledger.reserve(
                    [Cap(c.subject, None, c.window) for c in caps], amount)
            if reservation is not None and budgetheaders.capped(caps):
                headers.update(await budgetheaders.read_headers(ledger, caps, reservation))
        except LedgerUnavailable as e:
            rt.set_ledger_up(False, str(e))
            if reservation is not None and reservation.granted:
                rt.spawn(_release_quietly(ledger, reservation.hold_id))
            refuse(refusals.unavailable("the ledger is not available"), account=account_id,
                   key=key_id, fp=fp, model=model, reserved=amount, stream=facts.stream)
            return
        hold_id = reservation.hold_id if reservation is not None else None
        rt.mark_budgets_dirty()
        if hold_id is not None and unpriced is None:  # the second hold: USD, after tokens
            usd, usd_refusal = await money.admit(rt, ledger, policy, key, model, prompt_est,
                                                 amount)
            if usd_refusal is not None and (
                    usd_refusal.status == 503 or would_refuse(
                        usd_refusal, model=model, reserved=amount, stream=facts.stream)):
                if usd_refusal.status == 503:
                    refuse(usd_refusal, account=account_id, key=key_id, fp=fp, model=model,
                           reserved=amount, stream=facts.stream)
                await money.release_quietly(ledger, hold_id, rt.defer_finish)
                return

    if edits:
        # set_content re-encodes with the request's own Content-Encoding and fixes the length.
        req.set_content(dump_json(body))
    if fail_open and key is not None:
        edits.append("fail_open")  # forwarded unmetered: the ledger was down
        rt.warn_fail_open()
    forward_as_key()  # headers/query only: the body bytes are not touched again
    edits.extend(early_edits)

    meter = Meter(
        flow_id=flow.id,
        family=family,
        route=route,
        facts=facts,
        account=account_id,
        key=key_id,
        credential_fp=fp[:12] if fp else None,
        model=model,
        model_label=policy.model_label(model),
        host=req.pretty_host,
        path=path,
        reserved=amount if hold_id is not None else 0,
        prompt_estimate=prompt_est,
        ledger=ledger,
        hold_id=hold_id,
        edits=edits,
        injected_usage=injected,
        headers=headers,
        fanout_key=rt.fanout.commit(flow.id),
        dispatched_at=time.monotonic(),
        flow=flow,
    )
    money.attach(meter, policy, key, usd)
    rt.meters[flow.id] = meter
    flow.metadata["seatbelt"] = {"key": key_id, "account": account_id, "reserved": meter.reserved,
                                 "identity": identity}
    flow.comment = f"seatbelt: key={key_id} account={account_id} reserved={meter.reserved}" + (
        f" identity={identity}" if identity not in (None, "credential") else "")


async def _release_quietly(ledger, hold_id: str | None) -> None:
    """A hold granted just before the ledger failed: drop it if the ledger lets us (else it
    lapses with its lease and is charged as orphaned, never lost)."""
    if ledger is None or hold_id is None:
        return
    try:
        await ledger.release(hold_id)
    except LedgerUnavailable:
        pass
