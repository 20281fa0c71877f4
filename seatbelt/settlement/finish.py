"""Finishing a request: settle or release once, then metrics, audit line, flow comment."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from mitmproxy import http

from seatbelt.codec.headers import header
from seatbelt.codec.keptbody import shown_body
from seatbelt.ledger.base import (
    Cap,
    FinishAction,
    Ledger,
    LedgerUnavailable,
    Settlement,
    UsageSource,
)
from seatbelt.metering.cutoff import CUT_OFF
from seatbelt.metering.meter import Meter, Outcome, decide
from seatbelt.records import comment
from seatbelt.records.audit import AuditRecord
from seatbelt.runtime import Runtime
from seatbelt.usd import money, pricing

logger = logging.getLogger("seatbelt")


def request_was_sent(flow: http.HTTPFlow) -> bool:
    """The upstream connection was up, so the request (and its prompt) reached it."""
    return flow.server_conn.timestamp_start is not None


async def finish(rt: Runtime, meter: Meter, flow: http.HTTPFlow | None, *, completed: bool) -> None:
    """Contract §4.5, exactly once per meter (claim() guards it).

    The flow's comment and body are set now; the holds are handed to the ledger without
    waiting (Ledger.finish_soon), and the metrics and audit line follow once the ledger
    has taken them, so the audit never runs ahead of the ledger."""
    if not meter.claim():
        return
    rt.meters.pop(meter.flow_id, None)
    if meter.fanout_key is not None:
        rt.fanout.release(meter.fanout_key)  # max_concurrent: this request is over
    response = flow.response if flow is not None else None
    status = response.status_code if response is not None else None
    _finish_scan(meter, response, completed)
    sent = flow is not None and (status is not None or request_was_sent(flow))
    result = decide(meter, status=status, completed=completed, sent=sent)
    if meter.scanner is not None and meter.scanner.cut_off and CUT_OFF not in meter.edits:
        meter.edits.append(CUT_OFF)  # the stream outran its hold and was ended
    cost, overrun = charged(meter, result)
    first = meter.scanner.first_output_at if meter.scanner is not None else None
    ttft = first - meter.dispatched_at if first is not None else None
    duration = time.monotonic() - meter.dispatched_at
    client_status = _client_status(flow, result)
    if flow is not None:
        flow.comment = comment_for(meter, result, overrun)
        _show_kept_body(meter, response)

    def record() -> None:
        record_finished(rt, meter, result, status=client_status, overrun=overrun, ttft=ttft,
                        duration=duration, cost=cost)

    finish_holds(rt, meter.ledger, holds_of(meter, result.charge, cost), result.action,
                 result.source, meter.flow_id, record)


def charged(meter: Meter, result: Outcome) -> tuple[int | None, bool]:
    """(micro-dollars charged, None unpriced; whether the charge overran a hold). An overrun
    is usage above the hold: known here, no need to ask the ledger."""
    overrun = (meter.hold_id is not None and result.action == "settle"
               and result.charge > meter.reserved)
    cost, usd_overrun = money.usd_outcome(meter, result)
    return cost, overrun or usd_overrun


def record_finished(rt: Runtime, meter: Meter, result: Outcome, *, status: int | None,
                    overrun: bool, ttft: float | None, duration: float,
                    cost: int | None) -> None:
    """Metrics and the audit line of a finished request (HTTP, or one socket response)."""
    metrics = rt.metrics  # the runtime's, passed in (tests give their own)
    metrics.finished(
        account=meter.account, key=meter.key, outcome=result.outcome,
        provider=meter.route.provider, model=meter.model_label,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        ttft_s=ttft, duration_s=duration, usage_source=result.source, overrun=overrun)
    metrics.spent_usd(account=meter.account, key=meter.key, usd=pricing.to_usd(cost))
    metrics.ended_early(early_close=result.early_close, cut_off=CUT_OFF in meter.edits,
                              provider=meter.route.provider)
    write_audit(rt, meter, result, status=status, overrun=overrun, ttft=ttft,
                duration=duration, cost_usd=pricing.to_usd(cost))


def _finish_scan(meter: Meter, response: http.Response | None, completed: bool) -> None:
    """The scanner's last word: a body read whole is scanned now; then the end of stream."""
    if meter.scanner is None:
        return
    body = response.raw_content if response is not None else None
    if meter.read_whole and completed and body is not None:
        meter.scanner.scan_whole(body)
    meter.scanner.finish()


def _show_kept_body(meter: Meter, response: http.Response | None) -> None:
    """Streamed bodies are not kept by mitmproxy: show the bounded copy in mitmweb, with a
    marker where it was cut."""
    scanner = meter.scanner
    if scanner is None or response is None or response.raw_content:
        return
    response.raw_content = shown_body(
        scanner.kept_body, truncated=scanner.kept_truncated, received=scanner.bytes_in,
        content_encoding=header(response.headers, b"content-encoding"))


def holds_of(meter: Meter, charge: int, cost: int | None
              ) -> list[tuple[str, int, tuple[Cap, ...]]]:
    """(hold, what to charge it, its caps) for the token hold and the USD hold."""
    holds: list[tuple[str, int, tuple[Cap, ...]]] = []
    if meter.ledger is not None:
        if meter.hold_id is not None:
            holds.append((meter.hold_id, charge, meter.caps))
        if meter.usd_hold_id is not None:
            holds.append((meter.usd_hold_id, cost or 0, meter.usd_caps))
    return holds


def finish_holds(rt: Runtime, ledger: Ledger | None, holds: list[tuple[str, int, tuple[Cap, ...]]],
                 action: FinishAction, source: UsageSource, flow_id: str,
                 then: Callable[[], None]) -> None:
    """Hand each (hold, charge, caps) to the ledger; `then` runs once all have landed or
    failed. A failed one is queued for retry (the hold stays counted meanwhile); one an
    operator released while its request ran is charged onto its caps afterwards."""
    if ledger is None or not holds:
        then()
        return
    left = [len(holds)]

    def landed(hold_id: str, charge: int, caps: tuple[Cap, ...],
               settled: Settlement | None, error: Exception | None) -> None:
        if isinstance(error, LedgerUnavailable):
            # The background task retries it until the ledger takes it (a dead proxy's:
            # orphaned at lease end).
            rt.set_ledger_up(False, str(error))
            rt.defer_finish(ledger, hold_id, action, charge, source)
            logger.error(f"seatbelt: could not finish flow {flow_id} yet (retried): {error}")
        elif error is not None:
            logger.error(f"seatbelt: finishing hold {hold_id} of flow {flow_id} failed "
                         f"({type(error).__name__})")
        elif settled is not None and settled.already_final:
            rt.spawn(money.charge_after_release(ledger, caps, charge, hold_id))
        left[0] -= 1
        if left[0] == 0:
            rt.mark_budgets_dirty()
            then()

    for hold_id, charge, caps in holds:
        ledger.finish_soon(hold_id, action, charge, source=source,
                           done=functools.partial(landed, hold_id, charge, caps))


def _client_status(flow: http.HTTPFlow | None, result: Outcome) -> int | None:
    """The status the client got, or None when the exchange broke before it was answered."""
    if flow is None or flow.response is None:
        return None
    if flow.error is not None and result.outcome != "served":
        return None
    return flow.response.status_code


def comment_for(meter: Meter, result: Outcome, overrun: bool) -> str:
    return comment.finished(meter.key, meter.account, meter.reserved,
                            settled=result.action == "settle",
                            prompt=result.prompt_tokens or 0,
                            completion=result.completion_tokens or 0, source=result.source,
                            overrun=overrun, outcome=result.outcome, edits=meter.edits)


def write_audit(rt: Runtime, meter: Meter, result: Outcome, *, status: int | None,
                overrun: bool, ttft: float | None, duration: float,
                cost_usd: float | None = None) -> None:
    usage = result.usage
    rt.audit.write(AuditRecord.finished(
        flow_id=meter.flow_id, account=meter.account, key=meter.key,
        credential_fp=meter.credential_fp, provider=meter.route.provider, host=meter.host,
        path=meter.path, model=meter.model, stream=meter.facts.stream,
        reserved=meter.reserved, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens, cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens, reasoning_tokens=usage.reasoning_tokens,
        usage_source=result.source, overrun=overrun, outcome=result.outcome, status=status,
        ttft_s=round(ttft, 6) if ttft is not None else None,
        duration_s=round(duration, 6), edits=tuple(meter.edits), cost_usd=cost_usd))
