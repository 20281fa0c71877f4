"""seatbelt: the mitmproxy entry point. It only wires the pieces to mitmproxy's hooks.

    mitmdump -s seatbelt/addon.py [--set seatbelt_policy=...] [--set seatbelt_ledger=...]

request ─► Gate.admit: the ordered steps of seatbelt/admission/steps.py (route, authenticate,
           read, bound, reserve) or one refusal
           (GET /seatbelt/budget: answered by seatbelt/admission/budgetquery.py, never forwarded)
responseheaders ─► flow.response.stream = Scanner (bytes pass through; usage is read);
                   a small JSON document is read whole instead and scanned at the end
response / error ─► settlement.finish (settle or release exactly once; metrics, audit)
WebSocket handshake and websocket_* ─► seatbelt/sockets/hooks.py (a hold per response)

Also: the LLM contentview (seatbelt/ui/contentview.py) and the seatbelt.status / seatbelt.reload
commands (seatbelt/ui/commands.py) for mitmweb's and the console's command bar.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

# A script is loaded by path; make the `seatbelt` package importable from the repo root.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from mitmproxy import ctx, exceptions, http  # noqa: E402

from seatbelt.closed import Closed, given_strings, import_failure  # noqa: E402
from seatbelt.config.options import (  # noqa: E402
    OPTIONS,
    Settings,
    SettingsError,
    read_settings,
    take_given_values,
    unknown_option_error,
    unknown_options,
)

try:  # a missing dependency must not leave mitmproxy proxying without seatbelt
    from seatbelt.admission import bodyworker, budgetheaders, budgetquery, gate  # noqa: E402
    from seatbelt.codec.headers import header  # noqa: E402
    from seatbelt.config import livepolicy  # noqa: E402
    from seatbelt.config.policy import Policy, PolicyError  # noqa: E402
    from seatbelt.ledger import redact  # noqa: E402
    from seatbelt.metering.meter import output_allowance  # noqa: E402
    from seatbelt.metering.scanner import Scanner, read_whole  # noqa: E402
    from seatbelt.metering.upstream import closer  # noqa: E402
    from seatbelt.records.metrics import Metrics, get_metrics, get_server, parse_address  # noqa: E402
    from seatbelt.records.redact import LiveFlows, hide, redact_flow, unhide  # noqa: E402
    from seatbelt.runtime import RUNTIME, Runtime  # noqa: E402
    from seatbelt.settlement import finish as settlement  # noqa: E402
    from seatbelt.settlement import hints  # noqa: E402
    from seatbelt.sockets.hooks import Sockets, is_upgrade  # noqa: E402
    from seatbelt.ui.commands import SeatbeltCommands  # noqa: E402
    from seatbelt.ui.contentview import LLMView  # noqa: E402
except ImportError as e:
    IMPORT_ERROR: ImportError | None = e
else:
    IMPORT_ERROR = None

logger = logging.getLogger("seatbelt")


class Seatbelt:
    def __init__(self, runtime: Runtime | None = None, metrics: Metrics | None = None) -> None:
        self.running_ = False
        self.option_errors: list[str] = []
        # The module-wide runtime by default: it outlives a script reload (seatbelt/runtime.py).
        self.rt = runtime if runtime is not None else RUNTIME
        self.gate = gate.Gate(self.rt, metrics if metrics is not None else get_metrics())
        self.live = LiveFlows()  # scrubbed at shutdown, metered or not
        self.sockets = Sockets(self.gate)  # WebSockets (seatbelt/sockets/hooks.py)

    def load(self, loader) -> None:
        # Before mitmproxy converts them: a value given twice or not at all would make the
        # conversion drop this script silently (seatbelt/config/options.py).
        self.option_errors = take_given_values(loader.master.options.deferred, given_strings)
        for name, (default, help_text) in OPTIONS.items():
            loader.add_option(name, str, default, help_text)

    def configure(self, updated: set[str]) -> None:
        if not any(name in OPTIONS for name in updated) and self.rt.policy is not None:
            return
        if self.option_errors:
            self._fail(self.option_errors[0])
            return
        try:
            settings, policy, seen = _prepare(self.rt)
        except SettingsError as e:
            self._fail(_one_line(e))
            return
        for warning in policy.warnings:
            logger.warning(f"seatbelt: {warning}")
        if settings.ledger_fail_open:
            logger.warning("seatbelt: FAIL-OPEN is on (seatbelt_ledger_fail_open=true): while "
                           "the ledger is unreachable, LLM requests pass UNMETERED and UNCAPPED")
        self.rt.settings = settings
        self.rt.policy = policy
        self.rt.config_error = None
        livepolicy.install(self.rt, settings.policy_path, seen)
        self.rt.ensure_background()
        self.rt.mark_policy_changed()
        logger.info(
            f"seatbelt: policy {settings.policy_path} ({len(policy.keys)} keys), "
            f"ledger {redact(settings.ledger_url)}, "
            f"metrics {settings.metrics_address or 'off'}"
        )

    def _fail(self, message: str) -> None:
        """Start-up: log one line (mitmproxy's errorcheck then exits non-zero) and stay
        closed. Live change: refuse it, keeping the running configuration."""
        if self.running_ and self.rt.policy is not None:
            raise exceptions.OptionsError(message)
        if message == self.rt.config_error:
            return  # said already: a built-in addon is configured again at start
        self.rt.config_error = message
        logger.error(message)

    def running(self) -> None:
        self.running_ = True
        self.rt.tokenizers.log_state()
        bodyworker.WORKER.start()  # large bodies are read there (seatbelt/admission/bodyworker.py)
        unknown = unknown_options(ctx.options.deferred)
        if unknown and self.rt.config_error is None:  # not said twice
            self._fail(str(unknown_option_error(unknown)))

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.live.started(flow)
        self._hide(flow)  # before mitmweb's view shows the new flow (it runs after seatbelt)
        # A streamed request body would reach the upstream before we could refuse it.
        if flow.request.stream and gate.llm_route(flow, self.rt.policy) is not None:
            flow.request.stream = False

    async def request(self, flow: http.HTTPFlow) -> None:
        unhide(flow.request)  # routing and authentication read the credentials themselves
        try:
            await self._request(flow)
        finally:
            self._hide(flow)  # in flight, mitmweb and the console show placeholders

    def _hide(self, flow: http.HTTPFlow) -> None:
        if self.rt.settings is None or self.rt.settings.redact:
            hide(flow.request)

    async def _request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        if is_upgrade(flow.request) and (kind := self.sockets.socket_kind(flow)) is not None:
            await self.sockets.handshake(flow, kind)
            return
        try:
            if budgetquery.asks(flow):  # the proxy's own endpoint, never forwarded
                await budgetquery.answer(self.rt, flow)
                return
            route = gate.llm_route(flow, self.rt.policy)
        except Exception as e:  # mitmproxy would forward it unmetered: refuse instead
            logger.error(f"seatbelt: internal error ({type(e).__name__}) while routing a "
                         f"request to {flow.request.pretty_host}; refused (503)")
            gate.refuse_without_route(flow)
            return
        if route is not None:
            await self.gate.admit(flow, route)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        meter = self.rt.meters.get(flow.id)
        if meter is None or flow.response is None:
            return
        # Budget / clamp headers, set before the body starts so streams carry them too.
        budgetheaders.set_on(flow.response.headers, meter.headers)
        if not 200 <= flow.response.status_code < 300:
            return  # an upstream error: buffered (small), released at the end
        headers = flow.response.headers
        meter.scanner = Scanner(
            meter.family,
            meter.route,
            meter.facts,
            content_type=header(headers, b"content-type"),
            content_encoding=header(headers, b"content-encoding"),
            hide_injected_usage=meter.injected_usage,
            # A held stream that outruns its hold is ended (seatbelt/metering/cutoff.py).
            allowance=output_allowance(meter) if meter.hold_id is not None else None,
            on_cut=closer(flow),
        )
        if read_whole(meter.scanner.framing, headers, flow.response.stream):
            meter.read_whole = True  # a small JSON document: scanned in the response hook
            return
        flow.response.stream = meter.scanner

    async def response(self, flow: http.HTTPFlow) -> None:
        self.sockets.handshake_over(flow)
        meter = self.rt.meters.get(flow.id)
        if meter is not None:
            hints.hint_rejected_stream_options(flow, meter.injected_usage)
            await settlement.finish(self.rt, meter, flow, completed=True)
        self._redact(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        self.sockets.handshake_over(flow)
        meter = self.rt.meters.get(flow.id)
        if meter is not None:
            await settlement.finish(self.rt, meter, flow, completed=False)
        self._redact(flow)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self.sockets.websocket_start(flow)

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        await self.sockets.websocket_message(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self.sockets.websocket_end(flow)
        self._redact(flow)

    def _redact(self, flow: http.HTTPFlow) -> None:
        self.live.ended(flow)
        if self.rt.settings is not None and self.rt.settings.redact:
            redact_flow(flow)

    def done(self):
        """Shutdown: finish every open request, then close. Script reload: touch nothing.

        Deliberately not `async def`: mitmproxy calls `done` synchronously when it reloads
        a script, and awaits what it returns at shutdown.
        """
        if not ctx.master.should_exit.is_set():
            return None
        if self.rt.settings is None or self.rt.settings.redact:
            self.live.redact_all()  # before `-w` saves what is still in flight
        self.sockets.done()  # open sockets: settled before the ledger closes
        bodyworker.WORKER.close()
        return self.rt.shutdown(
            # With its flow: a request already sent upstream is charged, never released.
            lambda meter: self._finish_at_exit(meter)
        )

    async def _finish_at_exit(self, meter) -> None:
        await settlement.finish(self.rt, meter, meter.flow, completed=False)
        if meter.flow is not None:
            self._redact(meter.flow)  # `-w` saves unfinished flows at exit: no credential


def _prepare(rt: Runtime) -> tuple[Settings, Policy, livepolicy.Seen]:
    """Read and apply every option; each failure is one line naming its option and the fix."""
    unknown = unknown_options(ctx.options.deferred)
    if unknown:
        raise unknown_option_error(unknown)
    settings = read_settings(ctx.options)
    try:
        policy, seen = livepolicy.read_policy(settings.policy_path,
                                              hashes_only=settings.hashes_only)
    except PolicyError as e:
        raise SettingsError(f"seatbelt_policy: {e}") from None
    try:
        if parse_address(settings.metrics_address) is None:
            get_server().stop()
        else:
            get_server().ensure(settings.metrics_address, rt.ready)
    except ValueError as e:
        raise SettingsError(f"seatbelt_metrics: {e}") from None
    except OSError as e:
        raise SettingsError(
            f"seatbelt_metrics: cannot listen on {settings.metrics_address} "
            f"({e.strerror or e}); fix: free that port, or --set seatbelt_metrics=HOST:PORT "
            "with another port (empty turns metrics off)"
        ) from None
    try:
        rt.audit.open(settings.audit_path)
    except OSError as e:
        raise SettingsError(
            f"seatbelt_audit: cannot open {settings.audit_path} ({e.strerror or e}); fix: "
            "point --set seatbelt_audit=PATH at a writable file (empty turns the audit off)"
        ) from None
    try:
        rt.use_ledger(settings.ledger_url)
    except ValueError as e:
        raise SettingsError(f"seatbelt_ledger: {e}") from None
    return settings, policy, seen


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class HideFirst:
    """First in the chain under `seatbelt run|web` (seatbelt/cli/main.py), where seatbelt
    itself runs last: hides a new flow's credentials before mitmweb's view shows it
    (`requestheaders`), and gives them back for the `request` event, whose addons (and
    seatbelt, last) read and may rewrite them; seatbelt hides them again at its end."""

    def __init__(self, rt: Callable[[], Runtime]) -> None:
        self._rt = rt

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        settings = self._rt().settings
        if settings is None or settings.redact:
            hide(flow.request)

    def request(self, flow: http.HTTPFlow) -> None:
        unhide(flow.request)


if IMPORT_ERROR is None:
    # The commands look RUNTIME up at each call (tests swap it).
    addons = [Seatbelt(), LLMView(), SeatbeltCommands(lambda: RUNTIME)]
    first = [HideFirst(lambda: RUNTIME)]
else:
    addons = [Closed(import_failure(IMPORT_ERROR))]
    first = []
