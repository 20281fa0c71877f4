"""One WebSocket's metering state: who it belongs to, what its responses may read, and
the responses that hold budget now.

A socket is admitted once, at its handshake (the same steps as an HTTP request up to the
credential, seatbelt/admission/steps.py); each response on it is admitted again, with a
hold of its own: the prompt bound (the session's settings + every input sent so far + the
output of earlier responses, which the conversation feeds back) plus its output limit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from mitmproxy import http

from seatbelt.apis.base import Route
from seatbelt.config.access import Effective
from seatbelt.config.policy import Key, Policy
from seatbelt.ledger.base import Cap
from seatbelt.metering.meter import Meter
from seatbelt.sockets.events import Kind

_IDS = itertools.count(1)


@dataclass
class Pending:
    """A response that holds budget: admitted, not yet settled."""

    meter: Meter
    limit: int | None = None  # the output limit to write into the message (none named)
    event_id: str | None = None  # the client's create event, which an error event names
    response_id: str | None = None  # known once the server announced the response
    created: bool = False
    output_tokens: int = 0  # estimated from the output seen, for a socket cut short
    first_output_at: float | None = None
    # A response the server began by itself (voice activity) that no cap could hold: it
    # was cancelled; what it spent is charged onto these caps when it ends.
    charge_caps: tuple[Cap, ...] = ()


@dataclass
class Session:
    flow: http.HTTPFlow
    kind: Kind
    route: Route
    policy: Policy
    key: Key | None
    ops: Effective | None
    fingerprint: str | None
    identity: str | None
    model: str | None  # from the handshake (Realtime ?model=) or the Live setup
    beta: bool = False  # Realtime beta (`OpenAI-Beta: realtime=v1`): other field names
    fixed_tokens: int = 0  # the session's settings (instructions, tools), sent each turn
    conversation_tokens: int = 0  # every input so far + earlier responses' output
    session_limit: int | None = None  # the session-wide output limit, when one is set
    pending: list[Pending] = field(default_factory=list)
    fanout_key: str | None = None  # max_concurrent: the socket counts until it ends
    setup_seen: bool = False  # Live: the first message must be `setup`
    closed: bool = False  # sealed: a message could not be metered (hooks.Sockets._close)

    @property
    def account_id(self) -> str:
        return self.key.account if self.key is not None else "anonymous"

    @property
    def key_id(self) -> str:
        return self.key.id if self.key is not None else "anonymous"

    def next_id(self) -> str:
        """A flow-like id per response: the audit line's `flow_id`."""
        return f"{self.flow.id}/{next(_IDS)}"

    def bound(self) -> int:
        return self.fixed_tokens + self.conversation_tokens

    def find(self, response_id: str | None) -> Pending | None:
        """The response an event names; else the oldest one still open."""
        for p in self.pending:
            if response_id is not None and p.response_id == response_id:
                return p
        return self.pending[0] if self.pending else None

    def announce(self, response_id: str | None) -> Pending | None:
        """`response.created`: the oldest admitted response not yet announced is it."""
        for p in self.pending:
            if not p.created:
                p.created, p.response_id = True, response_id
                return p
        return None

    def failed(self, cause: str | None) -> Pending | None:
        """The response an error event ends: the create it names (an error about another
        event ends none), else the oldest one not begun."""
        unstarted = [p for p in self.pending if not p.created]
        if cause is not None:
            return next((p for p in unstarted if p.event_id == cause), None)
        return unstarted[0] if unstarted else None

    def current(self) -> Pending | None:
        """The response output belongs to: the newest one announced (else the oldest)."""
        created = [p for p in self.pending if p.created]
        return created[-1] if created else (self.pending[0] if self.pending else None)
