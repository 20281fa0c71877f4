"""The meter: one per admitted LLM request, the only thing that settles or releases it.

It lives in the runtime's table keyed by flow id (not in flow.metadata, which must stay
plain data for `-w`). `claim()` makes a double finish impossible: the first caller wins,
synchronously, before any await.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from seatbelt.admission import estimate
from seatbelt.apis.base import ApiFamily, RequestFacts, Route, Usage
from seatbelt.ledger.base import Cap, FinishAction, Ledger, UsageSource
from seatbelt.usd.pricing import Price

if TYPE_CHECKING:
    from seatbelt.metering.scanner import Scanner


@dataclass
class Meter:
    flow_id: str
    family: ApiFamily
    route: Route
    facts: RequestFacts
    account: str
    key: str
    credential_fp: str | None
    model: str | None
    model_label: str
    host: str
    path: str
    reserved: int
    prompt_estimate: int
    ledger: Ledger | None  # None for anonymous traffic: it touches no key's ledger
    hold_id: str | None
    edits: list[str] = field(default_factory=list)
    injected_usage: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # budget / clamp response headers
    fanout_key: str | None = None  # counted by the runtime's FanoutLimiter until finished
    dispatched_at: float = field(default_factory=time.monotonic)
    scanner: Scanner | None = None
    read_whole: bool = False  # mitmproxy reads the body whole; finish() scans it (scanner.py)
    flow: Any = field(default=None, repr=False)  # the HTTPFlow: shutdown settles with it
    # USD budgets (seatbelt/usd/money.py): the model's price (None: unpriced), the second hold.
    price: Price | None = None
    usd_hold_id: str | None = None
    usd_reserved: int = 0  # micro-dollars
    caps: tuple[Cap, ...] = ()  # the token hold's caps, and the USD hold's: an operator
    usd_caps: tuple[Cap, ...] = ()  # release is charged onto them (money.charge_after_release)
    _finished: bool = False

    def claim(self) -> bool:
        """True exactly once: the caller that gets True finishes the request."""
        if self._finished:
            return False
        self._finished = True
        return True


EarlyClose = Literal["charged_hold", "charged_output_bound"]


def output_allowance(meter: Meter) -> int:
    """The output tokens the hold reserved (all choices): the hold less its prompt bound."""
    return max(meter.reserved - meter.prompt_estimate, 0)


@dataclass(frozen=True)
class Outcome:
    """What a finished request is charged, and how it is reported."""

    action: FinishAction
    prompt_tokens: int | None
    completion_tokens: int | None
    usage: Usage
    source: UsageSource
    outcome: str  # metrics outcome: served | upstream_error | aborted
    # How an unfinished request with no usage frame was charged (docs/metering.md): the
    # `path` label of seatbelt_early_close_total, None when it did not end that way.
    early_close: EarlyClose | None = None

    @property
    def charge(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def decide(meter: Meter, *, status: int | None, completed: bool, sent: bool) -> Outcome:
    """Contract §4.5 as one pure function.

    status: the upstream's HTTP status when a response started, else None.
    completed: the response ended normally (the `response` hook), not by an error.
    sent: the request reached the upstream (its connection was established).
    """
    scanner = meter.scanner
    usage = scanner.usage if scanner is not None else Usage()
    if status is not None and not 200 <= status < 300:
        return Outcome("release", None, None, usage, "none", "upstream_error")
    if scanner is not None and scanner.cut_off:
        # Ended by seatbelt past its allowance: it generated the allowance at least, and
        # is charged no more unless the upstream's own count says so.
        completion = max(output_allowance(meter), usage.completion_tokens or 0)
        prompt = usage.prompt_tokens if usage.prompt_tokens is not None else meter.prompt_estimate
        source: UsageSource = "reported" if usage.completion_tokens is not None else "estimated"
        return Outcome("settle", prompt, completion, usage, source, "aborted")
    reported = (
        scanner is not None
        and not scanner.usage_invalid
        and usage.prompt_tokens is not None
        and (usage.completion_tokens is not None or not meter.facts.produces_output)
    )
    if reported:
        # Served even when the `error` hook fired: a client that stops reading at the end
        # marker ([DONE], message_stop) and closes before the upstream's end of body got the
        # whole answer, usage included.
        completion = usage.completion_tokens or 0
        return Outcome("settle", usage.prompt_tokens, completion, usage, "reported", "served")
    outcome = "served" if completed else "aborted"
    if meter.read_whole and scanner is not None and not scanner.whole_seen and sent:
        # A body mitmproxy was reading whole broke off (or another addon took it): none of
        # it was seen, and the upstream may have generated up to the limit. Charge the hold.
        bound = max(meter.reserved - meter.prompt_estimate, 0)
        return Outcome("settle", meter.prompt_estimate, bound, usage, "estimated", outcome)
    if not completed and sent and meter.facts.produces_output:
        return left_early(meter, usage, scanner)
    if scanner is not None and meter.facts.produces_output and unread(scanner):
        # A 2xx body none of which read as output, usage or an error (a format seatbelt
        # does not frame): the upstream may have generated up to its limit. Charge the hold.
        prompt = max(meter.prompt_estimate, usage.prompt_tokens or 0)
        return Outcome("settle", prompt, output_allowance(meter), usage, "estimated", outcome)
    if scanner is not None and (scanner.output_seen or status is not None):
        prompt = usage.prompt_tokens if usage.prompt_tokens is not None else meter.prompt_estimate
        if usage.completion_tokens is not None:
            completion = usage.completion_tokens
        else:
            completion = estimate.completion_estimate(scanner.output_chars)
        return Outcome("settle", prompt, completion, usage, "estimated", outcome)
    if sent:
        return Outcome("settle", meter.prompt_estimate, 0, usage, "estimated", outcome)
    return Outcome("release", None, None, usage, "none", outcome)


def unread(scanner: Scanner) -> bool:
    """Bytes came back and nothing in them read as output text, an output count or an
    upstream error."""
    return (scanner.bytes_in > 0 and not scanner.output_seen
            and scanner.usage.completion_tokens is None and scanner.upstream_error is None)


def left_early(meter: Meter, usage: Usage, scanner: Scanner | None) -> Outcome:
    """An unfinished request with no usage frame (the client left, the connection broke).

    The upstream bills what it generated, hidden reasoning included, and nothing reads its
    usage any more (mitmproxy closes the upstream with the client: docs/metering.md). A
    model that can reason out of sight is charged its hold; any other the prompt bound
    and an output bound from the bytes seen (each token covers one byte at least), never
    below the chars/4 estimate nor, while the upstream obeys its limit, above the hold."""
    prompt = max(meter.prompt_estimate, usage.prompt_tokens or 0)
    allowance = output_allowance(meter)
    if meter.facts.hidden_reasoning:
        completion = max(allowance, usage.completion_tokens or 0)
        return Outcome("settle", prompt, completion, usage, "estimated", "aborted",
                       "charged_hold")
    seen_bytes = scanner.output_bytes if scanner is not None else 0
    chars = scanner.output_chars if scanner is not None else 0
    bound = min(seen_bytes, allowance) if meter.hold_id is not None else seen_bytes
    completion = max(bound, estimate.completion_estimate(chars), usage.completion_tokens or 0)
    return Outcome("settle", prompt, completion, usage, "estimated", "aborted",
                   "charged_output_bound")
