"""The one context every admission step reads and writes (seatbelt/admission/steps.py).

A step fills in what it learnt (who sent the request, what it may cost) and records what
it took (a fan-out slot, a token hold, a USD hold) in `taken`, so that whatever happens
later — a refusal, a ledger fault, a bug — `Taken.undo` gives all of it back. Admission
is all or nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from seatbelt.admission.fanout import FanoutLimiter
from seatbelt.admission.refusals import Refusal
from seatbelt.apis.base import ApiFamily, Credentials, RequestFacts, Route
from seatbelt.config.access import Effective
from seatbelt.config.policy import Key, Policy
from seatbelt.ledger.base import Cap, Ledger, LedgerUnavailable
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime
from seatbelt.usd.money import UsdHold

logger = logging.getLogger("seatbelt")

ANONYMOUS = "anonymous"


@dataclass
class Taken:
    """What admission holds for a request that is not forwarded yet."""

    flow_id: str
    fanout: FanoutLimiter
    fanout_slot: bool = False  # a max_concurrent / rpm count
    ledger: Ledger | None = None
    hold_ids: list[str] = field(default_factory=list)  # token hold, then the USD hold

    def hold(self, ledger: Ledger, hold_id: str | None) -> None:
        if hold_id is not None:
            self.ledger = ledger
            self.hold_ids.append(hold_id)

    async def undo(self, rt: Runtime) -> None:
        """Give back everything, in reverse order. A release the ledger cannot take now goes
        to the runtime's retry queue, so a hold is never left counted for nothing."""
        if self.fanout_slot:
            self.fanout.cancel(self.flow_id)
            self.fanout_slot = False
        ledger, ids = self.ledger, self.hold_ids[::-1]
        self.hold_ids = []
        for hold_id in ids:
            assert ledger is not None
            try:
                await ledger.release(hold_id)
            except LedgerUnavailable as e:
                logger.error(f"seatbelt: could not release hold {hold_id} yet (retried): {e}")
                rt.defer_finish(ledger, hold_id, "release", 0, "none")
        if ids:
            rt.mark_budgets_dirty()


@dataclass
class Admission:
    """One request on its way through the steps."""

    rt: Runtime
    metrics: Metrics
    flow: http.HTTPFlow
    route: Route
    policy: Policy
    path: str  # without the query string: what the audit line and refusals name
    taken: Taken
    fail_open: bool = False  # the ledger is down and the operator chose fail-open
    # authenticate
    creds: Credentials | None = None
    fingerprint: str | None = None
    key: Key | None = None
    identity: str | None = None  # "credential", or how operating.identify found the key
    ops: Effective | None = None
    # read_body / estimate
    body: dict[str, Any] | None = None
    # The body's bytes for exact counting (empty for a compressed body the worker read).
    data: bytes = b""
    shallow: bool = False  # read by the worker: large values are RawJSON
    facts: RequestFacts | None = None
    model: str | None = None
    prompt_estimate: int = 0
    prompt_bound: int = 0  # its part from the body (the rest: hidden context); read_body
    amount: int = 0  # the token hold asked for
    write_limit: int | None = None
    # A clamp rewrites the body's limit field: False where there is none to rewrite (a
    # Realtime or Live event, a response the server started by itself).
    limit_writable: bool = True
    body_changed: bool = False
    injected_usage: bool = False
    # reserve
    caps: list[Cap] = field(default_factory=list)
    ledger: Ledger | None = None
    hold_id: str | None = None
    usd: UsdHold | None = None
    unpriced: Refusal | None = None
    headers: dict[str, str] = field(default_factory=dict)  # budget / clamp response headers
    edits: list[str] = field(default_factory=list)
    shadow_edits: list[str] = field(default_factory=list)

    @property
    def family(self) -> ApiFamily:
        return self.route.family

    @property
    def account_id(self) -> str:
        return self.key.account if self.key is not None else ANONYMOUS

    @property
    def key_id(self) -> str:
        return self.key.id if self.key is not None else ANONYMOUS

    @property
    def stream(self) -> bool:
        return self.facts.stream if self.facts is not None else False

    def enforced(self, refusal: Refusal) -> bool:
        """The one shadow-mode rule: True when `refusal` must be answered; in shadow mode
        (`enforce: false`) it is logged and counted instead and the request goes on."""
        if self.ops is None or self.ops.enforce:
            return True
        self.shadow_edits.append(f"shadow_refused:{refusal.code}")
        self.metrics.shadow_refused(account=self.account_id, key=self.key_id,
                                    outcome=refusal.outcome)
        logger.info(f"seatbelt: shadow mode: key {self.key_id} would be refused "
                    f"{refusal.code} ({refusal.status}); forwarded")
        return False
