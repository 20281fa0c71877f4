"""The WebSocket hooks: handshake, every message both ways, the socket's end.

request (Upgrade on a socket path) ─► admit.handshake: authenticated like HTTP, or refused
websocket_message, client ─► a create gets a hold first (limit written in) or is dropped
                             and answered with the API's error event; unknown events close
websocket_message, server ─► responses announced, output counted, usage settled
websocket_end / done ─► whatever is still open is settled as a stream cut short
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from mitmproxy import ctx, http

from seatbelt.admission import estimate, refusals
from seatbelt.admission.gate import Gate
from seatbelt.admission.refusals import Refusal
from seatbelt.apis.base import BadRequestBody, RequestFacts, UnmeteredRequest
from seatbelt.codec.headers import header
from seatbelt.codec.requestbody import MAX_DEPTH, over_depth_limit
from seatbelt.sockets import admit, events
from seatbelt.sockets.events import Act, Kind, Seen
from seatbelt.sockets.session import Pending, Session
from seatbelt.sockets.settle import settle

logger = logging.getLogger("seatbelt")


def is_upgrade(request: http.Request) -> bool:
    return "websocket" in header(request.headers, b"upgrade").lower()


class Sockets:
    """State: one Session per admitted socket, by flow id."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.rt = gate.rt
        self.sessions: dict[str, Session] = {}
        self.unadmitted: set[str] = set()  # sockets on LLM paths that skipped the handshake

    def socket_kind(self, flow: http.HTTPFlow) -> Kind | None:
        """The API of an Upgrade request this addon meters (a `routes: api: none` rule
        takes a host off the LLM routes, sockets included)."""
        req = flow.request
        path = req.path.split("?", 1)[0]
        kind = events.socket_kind(path)
        policy = self.rt.policy
        if kind is not None and policy is not None and policy.routes \
                and policy.route_settings(req.pretty_host, path).api == "none":
            return None
        return kind

    async def handshake(self, flow: http.HTTPFlow, kind: Kind) -> None:
        session = await admit.handshake(self.gate, flow, kind)
        if session is not None:
            self.sessions[flow.id] = session

    def handshake_over(self, flow: http.HTTPFlow) -> None:
        """The upstream refused the Upgrade (no 101) or the handshake broke: no socket, so
        nothing will end it; give its slot back now."""
        if flow.id not in self.sessions:
            return
        upgraded = flow.response is not None and flow.response.status_code == 101
        if not upgraded or (flow.error is not None and flow.websocket is None):
            self.end(self.sessions.pop(flow.id))

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self.sessions and self.socket_kind(flow) is not None:
            # Upgraded without passing the handshake (never expected): fail closed.
            logger.error("seatbelt: a WebSocket on an LLM path opened unadmitted; every "
                         "message on it is dropped")
            self.unadmitted.add(flow.id)

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        s = self.sessions.get(flow.id)
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if flow.id in self.unadmitted:
            message.drop()
            return
        if s is None or message.injected:
            return
        if s.closed:  # nothing more passes either way; open responses still settle
            message.drop()
            if not message.from_client:
                await self._server(s, message)
            return
        try:
            if message.from_client:
                await self._client(s, message)
            else:
                await self._server(s, message)
        except Exception as e:  # fail closed: never let a message through unmetered
            logger.error(f"seatbelt: internal error ({type(e).__name__}) on a WebSocket to "
                         f"{flow.request.pretty_host}; closed")
            message.drop()
            self._close(s, "seatbelt: internal error; the socket was closed")

    # ---------------------------------------------------------------- client side

    async def _client(self, s: Session, message: Any) -> None:
        event = events.parse_message(message.content)
        if event is None:
            message.drop()
            self._close(s, "seatbelt: a message that is not one JSON object cannot be "
                        "metered; the socket was closed")
            return
        if over_depth_limit(message.content, event):
            message.drop()
            self._close(s, f"seatbelt: a message nested deeper than {MAX_DEPTH} levels "
                        "cannot be metered; the socket was closed")
            return
        act = events.client_act(s.kind, event)
        if s.kind is Kind.LIVE and not s.setup_seen and act is not Act.CONFIG:
            act = Act.UNKNOWN  # Live: `setup` comes first, with the model and the limit
        if act is Act.UNKNOWN:
            message.drop()
            name = event.get("type") if s.kind is not Kind.LIVE else ",".join(event)
            self._close(s, f"seatbelt: client event {str(name)[:60]!r} cannot be metered; "
                        "the socket was closed")
            return
        if act is Act.CONFIG:
            self._configure(s, event)
        elif act is Act.CONTENT:
            s.conversation_tokens += events.content_tokens(s.kind, event)
            return
        elif act is Act.CREATE:
            if not await self._create(s, event):
                message.drop()
                return
        else:
            return
        message.content = events.dump(event)

    def _configure(self, s: Session, event: dict[str, Any]) -> None:
        """Session settings: the output limit every later response gets (written in when
        absent), and the instructions and tools every response reads again."""
        policy = s.policy
        if s.kind is Kind.LIVE:
            setup = event["setup"] if isinstance(event.get("setup"), dict) else {}
            model = setup.get("model")
            s.model = model.removeprefix("models/") if isinstance(model, str) else s.model
            s.setup_seen = True
            limit = events.live_limit(setup)
            if limit is None:
                limit = policy.model_max_output(s.model) or policy.fallback_max_output
                events.write_live_limit(setup, limit)
            s.fixed_tokens = events.content_tokens(s.kind, setup)
        else:
            session = event.get("session")
            session = session if isinstance(session, dict) else {}
            if isinstance(session.get("model"), str):
                s.model = session["model"]
            limit = events.session_limit(event, s.beta)
            if limit is None:
                limit = policy.model_max_output(s.model) or policy.fallback_max_output
                session[events.realtime_limit_field(s.beta)] = limit
                event["session"] = session
            s.fixed_tokens = events.content_tokens(s.kind, session)
        s.session_limit = limit

    async def _create(self, s: Session, event: dict[str, Any]) -> bool:
        """A hold for the output this event asks for; False: refused (message dropped)."""
        if s.kind is Kind.LIVE:
            s.conversation_tokens += events.content_tokens(s.kind, event)
            if "realtimeInput" in event and s.pending:
                return True  # more input to the turn already held
        try:
            body, facts, prompt = self._facts(s, event)
        except UnmeteredRequest:
            self._refuse(s, refusals.unmetered(s.flow.request.path.split("?", 1)[0]))
            return False
        except (BadRequestBody, ValueError) as e:
            self._refuse(s, refusals.unreadable(str(e)))
            return False
        verdict = await admit.admit_response(self.rt, self.gate, s, body, facts, prompt)
        if isinstance(verdict, Refusal):
            self._refuse(s, verdict)
            return False
        if verdict.limit is not None:
            self._write_limit(s, event, body, verdict.limit)
        cause = event.get("event_id")
        verdict.event_id = cause if isinstance(cause, str) else None
        s.pending.append(verdict)
        return True

    def _facts(self, s: Session, event: dict[str, Any]
               ) -> tuple[dict[str, Any], RequestFacts, int]:
        if s.kind is Kind.RESPONSES:
            body = events.responses_body(event)
            facts = events.RESPONSES.parse_request(s.route, body)
            facts = RequestFacts(facts.model, True, facts.max_output, wants_usage=True)
            return body, facts, estimate.prompt_bound(s.route, body)
        if s.kind is Kind.REALTIME:
            limit = events.realtime_limit(event, s.session_limit, s.beta)
            prompt = s.bound() + events.content_tokens(s.kind, event)
            return event, RequestFacts(s.model, True, limit), prompt
        return event, RequestFacts(s.model, True, s.session_limit), s.bound()

    def _write_limit(self, s: Session, event: dict[str, Any], body: dict[str, Any],
                     limit: int) -> None:
        if s.kind is Kind.RESPONSES:
            events.RESPONSES.write_limit(s.route, body, limit)
            event.update(body)
        elif s.kind is Kind.REALTIME:
            events.write_realtime_limit(event, limit, s.beta)
        # Live: the limit was written into `setup`, which bounds every turn

    # ---------------------------------------------------------------- server side

    async def _server(self, s: Session, message: Any) -> None:
        event = events.parse_message(message.content)
        if event is None:
            return
        ev = events.server_event(s.kind, event)
        if ev.seen is Seen.CREATED:
            if s.announce(ev.response_id) is None:
                await self._unrequested(s, ev.response_id)
        elif ev.seen is Seen.OUTPUT:
            p = s.current()
            if p is None:
                p = await self._unrequested(s, None)
            p.created = True
            p.output_tokens += ev.output_tokens
            if p.first_output_at is None and ev.output_tokens:
                p.first_output_at = time.monotonic()
        elif ev.seen is Seen.DONE:
            p = s.find(ev.response_id)
            if p is not None:
                self._settle(s, p, ev.usage)
        elif ev.seen is Seen.ERROR:
            p = s.failed(ev.cause)
            if p is not None:
                self._settle(s, p, None, failed=True)

    async def _unrequested(self, s: Session, response_id: str | None) -> Pending:
        """A response the server began by itself (Realtime voice activity, a Live turn on
        streamed audio): held now, with the session's limit. The hold cannot come first, so
        a response no cap can hold is cancelled at once and what it spent still charged."""
        facts = RequestFacts(s.model, True, s.session_limit)
        verdict = await admit.admit_response(self.rt, self.gate, s, {}, facts, s.bound())
        if isinstance(verdict, Refusal):
            p = Pending(admit.unheld_meter(s, facts, s.bound()), response_id=response_id,
                        created=True, charge_caps=admit.caps_to_charge(self.rt, s))
            s.pending.append(p)
            if s.kind is Kind.REALTIME and response_id is not None:
                self._send(s, {"type": "response.cancel", "response_id": response_id},
                           to_client=False)
            self._refuse(s, verdict)
            return p
        verdict.created, verdict.response_id = True, response_id
        s.pending.append(verdict)
        return verdict

    def _settle(self, s: Session, p: Pending, usage: Any, *, failed: bool = False) -> None:
        if p in s.pending:
            s.pending.remove(p)
        result = settle(self.rt, p, usage, failed=failed)
        if result is not None and s.kind is not Kind.RESPONSES and result.action == "settle":
            s.conversation_tokens += result.completion_tokens or 0  # fed back as input

    # ---------------------------------------------------------------- the end

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self.unadmitted.discard(flow.id)
        s = self.sessions.pop(flow.id, None)
        if s is None:
            return
        self.end(s)

    def end(self, s: Session) -> None:
        """Settle what is still open, as an HTTP stream cut short; free the socket's slot."""
        for p in list(s.pending):
            s.pending.remove(p)
            settle(self.rt, p, None, released_unsent=s.kind is Kind.LIVE)
        if s.fanout_key is not None:
            self.rt.fanout.release(s.fanout_key)

    def done(self) -> None:
        """Shutdown: open sockets are settled before the ledger closes (listed first)."""
        for s in list(self.sessions.values()):
            self.end(s)
        self.sessions.clear()

    # ---------------------------------------------------------------- answers

    def _refuse(self, s: Session, refusal: Refusal) -> None:
        """The API's own error event; Live has none (it closes), so it is sent, then closed."""
        body = json.loads(refusals.to_response(s.route.family, refusal).content or b"{}")
        if s.kind is Kind.LIVE:
            self._send(s, body)
            s.closed = True  # Live answers errors by closing: nothing more passes
            return
        error = dict(body.get("error") or {})
        error.setdefault("type", "invalid_request_error")
        event: dict[str, Any] = {"type": "error", "error": error}
        if s.kind is Kind.RESPONSES:
            event["status"] = refusal.status
        else:
            event["event_id"] = f"seatbelt_{s.next_id().rsplit('/', 1)[-1]}"
        self._send(s, event)

    def _close(self, s: Session, text: str) -> None:
        """What cannot be metered: an error the client can read, then nothing more passes.

        mitmproxy 11 and 12 give an addon no way to close a WebSocket (`flow.kill()` does
        nothing to one): the socket is sealed instead, every later message dropped."""
        self._refuse(s, refusals.Refusal(400, "invalid_request", text))
        s.closed = True

    def _send(self, s: Session, event: dict[str, Any], to_client: bool = True) -> None:
        ctx.master.commands.call("inject.websocket", s.flow, to_client, events.dump(event))
