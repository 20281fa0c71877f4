"""Settling a response on a WebSocket: exactly once, like an HTTP request (contract §4.5).

Reported usage (`response.done`, `response.completed`, Live `usageMetadata`) is charged
as reported. A response the socket lost before its usage (client or upstream gone, proxy
stopping) is charged as an HTTP stream cut short: the prompt estimate plus the output seen.
An error event before the response began releases its hold, like an upstream error status.
The ledger, metrics and audit line are the HTTP ones (seatbelt/settlement/finish.py).
"""

from __future__ import annotations

import logging
import time

from seatbelt.apis.base import Usage
from seatbelt.ledger.base import Cap, Ledger
from seatbelt.metering.meter import Outcome
from seatbelt.runtime import Runtime
from seatbelt.settlement import finish
from seatbelt.settlement.finish import finish_holds, holds_of
from seatbelt.sockets.session import Pending

logger = logging.getLogger("seatbelt")

SOCKET_STATUS = 101  # what the client got: the socket (audit `status`)


def outcome_of(p: Pending, usage: Usage | None, *, failed: bool, released_unsent: bool
               ) -> Outcome:
    """Pure: what one response is charged."""
    if usage is not None:
        return Outcome("settle", usage.prompt_tokens, usage.completion_tokens or 0, usage,
                       "reported", "served")
    if failed:
        return Outcome("release", None, None, Usage(), "none", "upstream_error")
    if released_unsent and not p.created and p.output_tokens == 0:
        return Outcome("release", None, None, Usage(), "none", "aborted")
    return Outcome("settle", p.meter.prompt_estimate, p.output_tokens, Usage(), "estimated",
                   "aborted")


def settle(rt: Runtime, p: Pending, usage: Usage | None, *, failed: bool = False,
           released_unsent: bool = False) -> Outcome | None:
    """Finish one response (None if it was finished already)."""
    meter = p.meter
    if not meter.claim():
        return None
    result = outcome_of(p, usage, failed=failed, released_unsent=released_unsent)
    cost, overrun = finish.charged(meter, result)
    ttft = (p.first_output_at - meter.dispatched_at
            if p.first_output_at is not None else None)
    duration = time.monotonic() - meter.dispatched_at

    def record() -> None:
        finish.record_finished(rt, meter, result, status=SOCKET_STATUS if not failed else None,
                               overrun=overrun, ttft=ttft, duration=duration, cost=cost)

    if p.charge_caps and rt.ledger is not None and result.action == "settle":
        rt.spawn(_charge(rt.ledger, p.charge_caps, result.charge, meter.flow_id))
    finish_holds(rt, meter.ledger, holds_of(meter, result.charge, cost), result.action,
                 result.source, meter.flow_id, record)
    return result


async def _charge(ledger: Ledger, caps: tuple[Cap, ...], amount: int, flow_id: str) -> None:
    """A response no cap could hold (it was cancelled at once): its spend, onto the caps."""
    if amount <= 0:
        return
    for cap in caps:
        await ledger.adjust(cap, amount)
    logger.warning(f"seatbelt: response {flow_id} began upstream without a hold (over cap; "
                   f"cancelled): charged {amount} to {', '.join(c.subject for c in caps)}")
