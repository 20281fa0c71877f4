"""Admission: the request hook's work, from route to reservation (contract §4.1-4.3).

Everything here happens before any byte of the request goes upstream; a refusal is
answered by setting `flow.response`, which mitmproxy sends without contacting the
upstream.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from addon import estimate, refusals
from addon.apis import route_request
from addon.apis.base import BadRequestBody, Route
from addon.apis.openai import UnmeteredRequest
from addon.auth import find_credential
from addon.decoding import BodyTooLarge as DecodedTooLarge
from addon.decoding import decode_request_body
from addon.ledger.base import LedgerUnavailable
from addon.meter import Meter
from addon.metrics import get_metrics
from addon.policy import Policy, fingerprint
from addon.requestbody import (
    MAX_REQUEST_BODY,
    BodyTooLarge,
    UnreadableBody,
    dump_json,
    parse_json_object,
)
from addon.runtime import Runtime
from addon.settlement import audit_refusal

logger = logging.getLogger("seatbelt")

ANONYMOUS = "anonymous"
INTERNAL_HEADER_PREFIX = "x-seatbelt"


def llm_route(flow: http.HTTPFlow, policy: Policy | None = None) -> Route | None:
    """The request's API route; the policy's `routes:` rules may override it per host/path."""
    req = flow.request
    path = req.path.split("?", 1)[0]
    api = policy.route_settings(req.pretty_host, path).api if policy is not None else None
    return route_request(req.method, path, req.headers, api=api)


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


def strip_internal_headers(request: http.Request) -> None:
    """No x-seatbelt-* header reaches upstream, whoever sent it."""
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
    if key is None and policy.require_auth:
        refuse(refusals.unknown_key(fp), fp=fp)
        return
    account_id = key.account if key else ANONYMOUS
    key_id = key.id if key else ANONYMOUS

    if route.kind == "free":
        return
    if route.kind == "unmetered":
        if policy.unmetered_endpoints != "allow" and key is not None:
            refuse(refusals.unmetered(path), account=account_id, key=key_id, fp=fp)
        return

    encoding = req.headers.get("content-encoding", "").strip().lower()
    try:
        raw = req.raw_content or b""
        data = decode_request_body(raw, encoding, MAX_REQUEST_BODY) if encoding else raw
        body = parse_json_object(data)
        facts = family.parse_request(route, body)
    except UnmeteredRequest:  # e.g. a background response: its cost happens out of sight
        if policy.unmetered_endpoints != "allow" and key is not None:
            refuse(refusals.unmetered(path), account=account_id, key=key_id, fp=fp)
        return
    except (BodyTooLarge, DecodedTooLarge) as e:
        refuse(refusals.too_large(str(e)), account=account_id, key=key_id, fp=fp)
        return
    except (UnreadableBody, BadRequestBody, ValueError) as e:
        refuse(refusals.unreadable(str(e)), account=account_id, key=key_id, fp=fp)
        return

    model = facts.model or route.model_from_path
    prompt_est = estimate.prompt_estimate(body)
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
            and policy.route_settings(req.pretty_host, path).stream_options is not False):
        injected = family.request_usage(route, body)
        if injected:
            edits.append("usage_requested")
            # The extra usage frame can only be hidden from an uncompressed stream.
            req.headers["accept-encoding"] = "identity"

    hold_id = None
    ledger = None
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
        if reservation is not None and not reservation.granted:
            windows = {c.subject: c.window for c in caps}
            refuse(refusals.for_caps(reservation.refusals, key.id, windows), account=account_id,
                   key=key_id, fp=fp, model=model, reserved=amount, stream=facts.stream)
            return
        hold_id = reservation.hold_id if reservation is not None else None
        rt.mark_budgets_dirty()

    if edits:
        # set_content re-encodes with the request's own Content-Encoding and fixes the length.
        req.set_content(dump_json(body))
    if fail_open and key is not None:
        edits.append("fail_open")  # forwarded unmetered: the ledger was down
        rt.warn_fail_open()

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
        dispatched_at=time.monotonic(),
        flow=flow,
    )
    rt.meters[flow.id] = meter
    flow.metadata["seatbelt"] = {"key": key_id, "account": account_id, "reserved": meter.reserved}
    flow.comment = f"seatbelt: key={key_id} account={account_id} reserved={meter.reserved}"
