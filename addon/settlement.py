"""Finishing a request: settle or release once, then metrics, audit line, flow comment."""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from addon import money, pricing, refusals
from addon.apis.base import Route
from addon.audit import audit_record
from addon.contentview import shown_body
from addon.ledger.base import LedgerUnavailable
from addon.meter import Meter, Outcome, decide
from addon.metrics import get_metrics
from addon.runtime import Runtime

logger = logging.getLogger("seatbelt")


def request_was_sent(flow: http.HTTPFlow) -> bool:
    """The upstream connection was up, so the request (and its prompt) reached it."""
    conn = flow.server_conn
    return bool(conn and getattr(conn, "timestamp_start", None))


async def finish(rt: Runtime, meter: Meter, flow: http.HTTPFlow | None, *, completed: bool) -> None:
    """Contract §4.5, exactly once per meter (claim() guards it)."""
    if not meter.claim():
        return
    rt.meters.pop(meter.flow_id, None)
    if meter.fanout_key is not None:
        rt.fanout.release(meter.fanout_key)  # max_concurrent: this request is over
    response = flow.response if flow is not None else None
    status = response.status_code if response is not None else None
    if meter.scanner is not None:
        body = response.raw_content if response is not None else None
        if meter.read_whole and completed and body is not None:
            meter.scanner.scan_whole(body)
        meter.scanner.finish()
    sent = flow is not None and (status is not None or request_was_sent(flow))
    result = decide(meter, status=status, completed=completed, sent=sent)
    overrun = False
    if meter.hold_id is not None and meter.ledger is not None:
        try:
            if result.action == "settle":
                settlement = await meter.ledger.settle(
                    meter.hold_id, result.charge, source=result.source
                )
                overrun = settlement.overrun
                if settlement.already_final:  # an operator released it meanwhile
                    await money.charge_after_release(meter.ledger, meter.caps, result.charge,
                                                     meter.hold_id)
            else:
                await meter.ledger.release(meter.hold_id)
        except LedgerUnavailable as e:
            # The hold stays counted (never free, never lost); the background task retries
            # this finish until the ledger takes it (a dead proxy's: orphaned at lease end).
            rt.set_ledger_up(False, str(e))
            rt.defer_finish(meter.ledger, meter.hold_id, result.action, result.charge,
                            result.source)
            logger.error(f"seatbelt: could not finish flow {meter.flow_id} yet (retried): {e}")
        rt.mark_budgets_dirty()
    cost, usd_overrun = await money.finish_usd(rt, meter, result)  # the USD hold, if any
    overrun = overrun or usd_overrun

    end = time.monotonic()
    scanner = meter.scanner
    first = scanner.first_output_at if scanner is not None else None
    ttft = first - meter.dispatched_at if first is not None else None
    duration = end - meter.dispatched_at
    get_metrics().finished(
        account=meter.account,
        key=meter.key,
        outcome=result.outcome,
        provider=meter.route.provider,
        model=meter.model_label,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        ttft_s=ttft,
        duration_s=duration,
        usage_source=result.source,
        overrun=overrun,
    )
    get_metrics().spent_usd(account=meter.account, key=meter.key, usd=pricing.to_usd(cost))
    write_audit(rt, meter, result, status=_client_status(flow, result), overrun=overrun, ttft=ttft,
                duration=duration, cost_usd=pricing.to_usd(cost))
    if flow is not None:
        flow.comment = comment_for(meter, result, overrun)
        if scanner is not None and response is not None and not response.raw_content:
            # Streamed bodies are not kept by mitmproxy: show the bounded copy in mitmweb,
            # with a marker where it was cut.
            response.raw_content = shown_body(
                scanner.kept_body,
                truncated=scanner.kept_truncated,
                received=scanner.bytes_in,
                content_encoding=response.headers.get("content-encoding", ""),
            )


def _client_status(flow: http.HTTPFlow | None, result: Outcome) -> int | None:
    """The status the client got, or None when the exchange broke before it was answered."""
    if flow is None or flow.response is None:
        return None
    if flow.error is not None and result.outcome != "served":
        return None
    return flow.response.status_code


def comment_for(meter: Meter, result: Outcome, overrun: bool) -> str:
    spent = (
        f"{result.prompt_tokens}+{result.completion_tokens} ({result.source})"
        if result.action == "settle"
        else "0 (released)"
    )
    parts = [
        f"seatbelt: key={meter.key} account={meter.account} reserved={meter.reserved}",
        f"spent={spent}",
    ]
    if overrun:
        parts.append("overrun")
    if result.outcome != "served":
        parts.append(result.outcome)  # aborted / upstream_error
    if meter.edits:
        parts.append("edits=" + ",".join(meter.edits))
    return " ".join(parts)


def write_audit(rt: Runtime, meter: Meter, result: Outcome, *, status: int | None,
                overrun: bool, ttft: float | None, duration: float,
                cost_usd: float | None = None) -> None:
    usage = result.usage
    rt.audit.write(
        audit_record(
            flow_id=meter.flow_id,
            account=meter.account,
            key=meter.key,
            credential_fp=meter.credential_fp,
            provider=meter.route.provider,
            host=meter.host,
            path=meter.path,
            model=meter.model,
            stream=meter.facts.stream,
            reserved=meter.reserved,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            usage_source=result.source,
            overrun=overrun,
            outcome=result.outcome,
            status=status,
            ttft_s=round(ttft, 6) if ttft is not None else None,
            duration_s=round(duration, 6),
            edits=list(meter.edits),
            cost_usd=cost_usd,
        )
    )


def audit_refusal(rt: Runtime, flow: http.HTTPFlow, route: Route, refusal: refusals.Refusal, *,
                  account: str, key: str, fp: str | None, model: str | None,
                  reserved: int | None, stream: bool, path: str) -> None:
    rt.audit.write(
        audit_record(
            flow_id=flow.id,
            account=account,
            key=key,
            credential_fp=fp[:12] if fp else None,
            provider=route.provider,
            host=flow.request.pretty_host,
            path=path,
            model=model,
            stream=stream,
            reserved=reserved,
            prompt_tokens=None,
            completion_tokens=None,
            cached_tokens=None,
            cache_write_tokens=None,
            reasoning_tokens=None,
            usage_source="none",
            overrun=False,
            outcome=refusal.outcome,
            status=refusal.status,
            ttft_s=None,
            duration_s=0.0,
            edits=[],
        )
    )
