"""The admission steps, in the order a request meets them (contract §4.1-4.3).

Each step reads and fills the request's `Admission` (seatbelt/admission/context.py) and
answers with a `Refusal` (answer it, give back what was taken), `FORWARD` (a route that is
not metered: forward it as it is) or None (go on). A refusal that shadow mode may turn into
a log line goes through `Admission.enforced`, the one shadow rule. Whatever a step takes
(a fan-out slot, a hold) it records in `Admission.taken`, so the gate can give it back.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from typing import Any

from seatbelt.admission import (
    bodyworker,
    budgetheaders,
    counting,
    destination,
    estimate,
    exact,
    operating,
    providercount,
    refusals,
)
from seatbelt.admission.auth import find_credential
from seatbelt.admission.context import Admission
from seatbelt.admission.refusals import Refusal
from seatbelt.apis import METHOD_OVERRIDE
from seatbelt.apis.base import BadRequestBody, UnmeteredRequest
from seatbelt.codec.headers import header
from seatbelt.codec.requestbody import BodyTooLarge, UnreadableBody, parse_json_object
from seatbelt.config.policy import fingerprint
from seatbelt.ledger.base import Cap, LedgerUnavailable, Reservation
from seatbelt.usd import money


class Forward(enum.Enum):
    """A route seatbelt does not meter (free, or unmetered and allowed): forward as is."""

    FORWARD = "forward"


FORWARD = Forward.FORWARD
Verdict = Refusal | Forward | None
Step = Callable[[Admission], Verdict | Awaitable[Verdict]]


def check_route(a: Admission) -> Verdict:
    """A route of kind "refused" is never sent: its path reads differently on different
    servers (seatbelt/apis/paths.py), it names its method in an override header
    (seatbelt/apis/__init__.py), or its Host header names another host than the one it
    goes to (seatbelt/admission/destination.py)."""
    if a.route.kind != "refused":
        return None
    if a.route.endpoint == destination.HOST_MISMATCH:
        why = (f"the Host header names {destination.header_host(a.flow)}, not "
               f"{destination.destination(a.flow)}, where this request goes")
    elif a.route.endpoint == METHOD_OVERRIDE:
        why = "a method override header (X-HTTP-Method-Override) is not accepted here"
    else:
        why = ("this request path is read differently by different servers (a '#', '\\', "
               "';', percent-escape or dot segment); send it in its plain form")
    return Refusal(400, "invalid_request", f"seatbelt: {why}.")


def check_ready(a: Admission) -> Verdict:
    """Nothing is admitted before the policy is loaded and the ledger answers."""
    if a.rt.ready() or a.fail_open:
        return None
    reason = a.rt.config_error or "the ledger is not available"
    return refusals.unavailable(f"seatbelt is not ready ({reason})")


def authenticate(a: Admission) -> Verdict:
    """Credential -> fingerprint -> key (or a connection identity); unknown -> 401."""
    creds = a.creds = find_credential(a.family, a.flow.request)
    if creds.error:
        return refusals.bad_credential(creds.error)
    a.fingerprint = fingerprint(creds.value) if creds.value is not None else None
    a.key = a.policy.key_by_fingerprint(a.fingerprint) if a.fingerprint is not None else None
    a.identity = "credential" if a.key is not None else None
    if a.key is None:  # proxy-auth user, client cert, client address (seatbelt/config/access.py)
        a.key, a.identity = operating.identify(a.policy, a.flow)
    if a.key is None:
        return refusals.unknown_key(a.fingerprint) if a.policy.require_auth else None
    a.ops = a.policy.effective(a.key)
    return None


def check_operator_switches(a: Admission) -> Verdict:
    """Never shadowed: an operator's off switch, and where a real credential may go."""
    if a.key is None or a.ops is None:
        return None
    if a.ops.disabled:
        return refusals.key_disabled(a.key.id)
    if a.key.access.expires is not None and a.key.access.expired(time.time()):
        return refusals.key_expired(a.key.id, a.key.access.expires)
    if a.key.access.upstream_credential is not None:
        ok, host = operating.virtual_host_ok(a.key, a.flow)
        if not ok:
            return refusals.host_not_allowed(a.key.id, host)
        why = operating.unverified_upstream(a.flow)
        if why is not None:  # its real credential goes only where the upstream is proven
            return Refusal(403, "host_not_allowed", f"seatbelt: key {a.key.id!r} is a virtual "
                           f"key; its upstream is not verified ({why}), so nothing was sent.")
    return None


def _unmetered(a: Admission) -> Verdict:
    """An endpoint whose cost seatbelt cannot see: 403 for a policy key unless allowed."""
    if a.policy.unmetered_endpoints == "allow" or a.key is None:
        return FORWARD
    refusal = refusals.unmetered(a.path)
    return refusal if a.enforced(refusal) else FORWARD


def pass_unmetered_routes(a: Admission) -> Verdict:
    if a.route.kind == "free":
        return FORWARD
    if a.route.kind == "unmetered":
        return _unmetered(a)
    return None


async def read_body(a: Admission) -> Verdict:
    """One JSON object, bounded, decoded; the family reads model, limit, n, stream. A large
    or compressed body is read in the worker process (seatbelt/admission/bodyworker.py),
    so that no body stalls the event loop."""
    req = a.flow.request
    encoding = header(req.headers, b"content-encoding").strip().lower()
    raw = req.raw_content or b""
    if bodyworker.offloaded(raw, encoding):
        read = await bodyworker.WORKER.read(a.route, raw, encoding)
        if read.kind == "unmetered":
            return _unmetered(a)
        if read.kind == "too_large":
            return refusals.too_large(read.message)
        if read.kind != "ok":
            return refusals.unreadable(read.message)
        a.body, a.facts, a.prompt_bound = read.body, read.facts, read.prompt_bound
        a.shallow = True
        a.data = b"" if encoding else raw  # what exact counting may read again
    else:
        try:
            a.body = parse_json_object(raw)
            a.facts = a.family.parse_request(a.route, a.body)
        except UnmeteredRequest:  # e.g. a background response: its cost happens out of sight
            return _unmetered(a)
        except BodyTooLarge as e:
            return refusals.too_large(str(e))
        except (UnreadableBody, BadRequestBody, ValueError) as e:
            return refusals.unreadable(str(e))
        a.prompt_bound = estimate.prompt_bound(a.route, a.body, raw)
        a.data = raw
    assert a.facts is not None
    a.model = a.facts.model or a.route.model_from_path
    return None


def check_model(a: Admission) -> Verdict:
    if a.ops is not None and not a.ops.model_allowed(a.model):
        refusal = refusals.model_not_allowed(a.key_id, a.model)
        if a.enforced(refusal):
            return refusal
    return None


def estimate_hold(a: Admission) -> Verdict:
    """Prompt bound + output limit x n; a request that names no limit gets one written in."""
    assert a.facts is not None and a.body is not None
    a.prompt_estimate = a.prompt_bound
    hidden = a.facts.hidden_context
    if hidden is not None:  # a prompt stored upstream: bounded by the context window
        window = a.policy.model_context_window(a.model) or a.family.context_window(a.model)
        if window is None:
            if a.key is not None and budgetheaders.capped(a.policy.caps_for(a.key)):
                return refusals.unknown_context(a.model, hidden)
        else:
            a.prompt_estimate += window
    a.amount, a.write_limit = estimate.reservation(
        a.facts, a.prompt_estimate, a.policy.model_max_output(a.model),
        a.policy.fallback_max_output)
    if a.write_limit is not None:
        a.family.write_limit(a.route, a.body, a.write_limit)
        a.edits.append("limit_written")
        a.body_changed = True
    return None


def request_usage(a: Admission) -> Verdict:
    """Ask an OpenAI-style stream for its usage frame when the client did not."""
    assert a.facts is not None and a.body is not None
    settings = a.rt.settings
    if not (a.facts.stream and not a.facts.wants_usage and settings is not None
            and settings.inject_usage):
        return None
    req = a.flow.request
    if (a.policy.routes
            and a.policy.route_settings(destination.destination(a.flow),
                                        a.path).stream_options is False):
        return None
    a.injected_usage = a.family.request_usage(a.route, a.body)
    if a.injected_usage:
        a.edits.append("usage_requested")
        a.body_changed = True
        # The extra usage frame can only be hidden from an uncompressed stream.
        req.headers["accept-encoding"] = "identity"
    return None


def limit_fanout(a: Admission) -> Verdict:
    """max_concurrent / rpm: counted from here until the request is over."""
    limits = a.key.access if a.key is not None else None
    if limits is None or (limits.max_concurrent is None and limits.rpm is None):
        return None
    over = a.rt.fanout.check(a.key_id, limits.max_concurrent, limits.rpm)
    if over is not None:
        refusal = refusals.fanout(a.key_id, over.what, over.retry_after)
        if a.enforced(refusal):
            return refusal
    a.rt.fanout.acquire(a.key_id, a.flow.id)
    a.taken.fanout_slot = True
    return None


def check_priced(a: Admission) -> Verdict:
    """A model without a price under a USD cap is never free (seatbelt/usd/money.py)."""
    if a.key is None:
        return None
    a.unpriced = money.check_priced(a.policy, a.key, a.model)
    if a.unpriced is not None and a.enforced(a.unpriced):
        return a.unpriced
    return None


async def reserve_tokens(a: Admission) -> Verdict:
    """The token hold on every cap of the key, atomically; a clamp may shrink the output."""
    if a.key is None or a.fail_open:
        return None
    ledger = a.ledger = a.rt.ledger
    assert ledger is not None
    a.caps = a.policy.caps_for(a.key)
    try:
        reservation = await ledger.reserve(a.caps, a.amount)
    except LedgerUnavailable as e:
        a.rt.set_ledger_up(False, str(e))
        if not a.rt.failing_open():
            return refusals.unavailable("the ledger is not available")
        a.fail_open, a.ledger = True, None
        return None
    a.taken.hold(ledger, reservation.hold_id)
    if not reservation.granted:
        reservation = await _recount(a, reservation)
    if not reservation.granted:
        reservation = await _clamp(a, reservation)
    if not reservation.granted:
        windows = {c.subject: c.window for c in a.caps}
        refusal = refusals.for_caps(reservation.refusals, a.key.id, windows)
        if a.enforced(refusal):
            return refusal
        # Shadow mode: hold on uncapped twins of the caps, so the spend is metered.
        reservation = await ledger.reserve([Cap(c.subject, None, c.window) for c in a.caps],
                                           a.amount)
        a.taken.hold(ledger, reservation.hold_id)
    a.hold_id = reservation.hold_id
    if budgetheaders.capped(a.caps):
        a.headers.update(await budgetheaders.read_headers(ledger, a.caps, reservation))
    a.rt.mark_budgets_dirty()
    return None


async def _recount(a: Admission, reservation: Reservation) -> Reservation:
    """The bound does not fit: count the prompt exactly where it can be (only here, so a
    request that fits never pays for it), and ask again with the smaller hold."""
    assert a.ledger is not None
    counted = await _count_prompt(a)
    if counted is None or counted >= a.prompt_bound:
        return reservation
    saved = a.prompt_bound - counted
    a.prompt_bound = counted
    a.prompt_estimate -= saved
    a.amount -= saved
    a.edits.append("prompt_counted")
    again = await a.ledger.reserve(a.caps, a.amount)
    a.taken.hold(a.ledger, again.hold_id)
    return again


async def _count_prompt(a: Admission) -> int | None:
    """The prompt's exact bound by its public tokenizer, else the provider's count where
    the policy opts in (seatbelt/admission/counting.py), else None: the bound stands.
    A body the worker read is shallow (its large values are JSON text): counting reads it
    whole (_whole_body)."""
    assert a.body is not None
    info = a.policy.model_info(a.model)
    encoding = exact.encoding_for(a.route, a.model, info.tokenizer if info else None)
    if encoding is None and (info is None or info.count_tokens != "provider"):
        return None
    body = await _whole_body(a)
    if body is None:
        return None
    if encoding is not None:
        return await counting.count_locally(a.rt.tokenizers, encoding, a.route, body,
                                            a.data)
    request = a.flow.request.copy()  # the credential the upstream takes, as it will be sent
    if a.key is not None and a.creds is not None:
        operating.swap_credential(a.key, a.family, request, a.creds)
    ask = providercount.count_request(a.route, request.url,
                                      providercount.header_values(request.headers.fields),
                                      body, a.model)
    n = await counting.count_at_provider(ask, a.route) if ask is not None else None
    return min(n, a.prompt_bound) if n is not None else None


async def _whole_body(a: Admission) -> dict[str, Any] | None:
    """The whole body for counting: a shallow one (read by the worker) is parsed again in a
    thread, up to what counting takes; None when it cannot be had (compressed, too big)."""
    if not a.shallow:
        return a.body
    if not a.data or len(a.data) > counting.EXACT_MAX_BYTES:
        return None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, parse_json_object, a.data)


async def _clamp(a: Admission, reservation):  # type: ignore[no-untyped-def]
    """over_cap: clamp, or a limit seatbelt wrote itself (a request is never refused for
    seatbelt's own default): forward what the budget can pay, if at least min_output."""
    assert a.facts is not None and a.body is not None and a.ledger is not None
    if (a.ops is None or not (a.ops.clamp or a.write_limit is not None)
            or not a.facts.produces_output or not a.limit_writable):
        return reservation
    current = a.facts.max_output if a.facts.max_output is not None else a.write_limit
    new = operating.clamp_output(reservation.refusals, a.prompt_estimate, a.facts.multiplier,
                                 a.ops.min_output, current or 0)
    if new is None:
        return reservation
    smaller = a.prompt_estimate + new * a.facts.multiplier
    again = await a.ledger.reserve(a.caps, smaller)
    if not again.granted:
        return reservation
    a.taken.hold(a.ledger, again.hold_id)
    a.amount = smaller
    operating.write_clamp(a.family, a.route, a.body, new)
    a.body_changed = True
    a.edits.append("clamped")
    a.headers[budgetheaders.CLAMPED] = f"{current}->{new}"
    return again


async def reserve_usd(a: Admission) -> Verdict:
    """The second hold, in micro-dollars, after the token hold (seatbelt/usd/money.py)."""
    if a.key is None or a.hold_id is None or a.unpriced is not None or a.ledger is None:
        return None
    a.usd, refusal = await money.admit(a.rt, a.ledger, a.policy, a.key, a.model,
                                       a.prompt_estimate, a.amount)
    if a.usd is not None:
        a.taken.hold(a.ledger, a.usd.hold_id)
    if refusal is not None and (refusal.status == 503 or a.enforced(refusal)):
        return refusal
    return None


def encode_body(a: Admission) -> Verdict:
    """The edited body, re-encoded with the request's own Content-Encoding. A string the
    client sent as a lone-surrogate escape ("\\ud800") cannot be UTF-8: it is written
    escaped again, as the client wrote it, so the upstream reads what was checked. A
    shallow body from the worker has its large values spliced in as their JSON text."""
    if not a.body_changed:
        return None
    assert a.body is not None
    a.flow.request.set_content(bodyworker.dump(a.body))  # fixes Content-Length, keeps C-E
    return None


def mark_fail_open(a: Admission) -> Verdict:
    if a.fail_open and a.key is not None:
        a.edits.append("fail_open")  # forwarded unmetered: the ledger was down
        a.rt.warn_fail_open()
    return None


STEPS: tuple[Step, ...] = (
    check_route,
    check_ready,
    authenticate,
    check_operator_switches,
    pass_unmetered_routes,
    read_body,
    check_model,
    estimate_hold,
    request_usage,
    limit_fanout,
    check_priced,
    reserve_tokens,
    reserve_usd,
    encode_body,
    mark_fail_open,
)
