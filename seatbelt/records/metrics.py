"""Prometheus metrics (contract section 8) and the small HTTP endpoint that serves them.

mitmproxy re-executes a `-s` script when it changes, but modules that script imports stay in
`sys.modules`: the registry, the collectors and the HTTP server therefore live here at module
level, so a reloaded addon neither registers collectors twice nor rebinds the port.

Budget gauges use one label convention: a key's own cap is `{account="<account>", key="<id>"}`;
an account-wide cap (shared by all its keys) is `{account="<account>", key="*"}` (`ACCOUNT_KEY`).
`key!="*"` selects per-key series. `*` must not be a key id (the policy loader should reserve it,
as it reserves `anonymous` and `other`), or the two would share series.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger("seatbelt")

# `*_created` series would double every counter and histogram in the text format and show up
# as gauge families the contract does not list; seatbelt is the only exporter in the process.
getattr(prometheus_client, "disable_created_metrics", lambda: None)()

ACCOUNT_KEY = "*"  # the `key` label of an account-wide cap's budget gauges
MAX_LABEL = 128

OUTCOMES = (
    "served",
    "refused_quota",
    "refused_rate",
    "unauthorized",
    "forbidden",
    "rejected",
    "unavailable",
    "upstream_error",
    "aborted",
)
PROVIDERS = ("openai", "azure", "anthropic", "gemini", "ollama")

# LLM latencies run from tens of milliseconds to many minutes (reasoning models, long outputs).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TPS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)

CHARGED_SOURCES = frozenset({"reported", "estimated", "orphaned"})


def clip(value: object) -> str:
    """A label value no caller mistake can turn into an unbounded series name."""
    return ("" if value is None else str(value))[:MAX_LABEL]


MAX_CACHED_CHILDREN = 8192  # remembered series of counters and histograms (see _child)


@dataclass(frozen=True)
class BudgetRow:
    """One cap as the budget gauges show it (key=ACCOUNT_KEY for an account-wide cap)."""

    account: str
    key: str
    cap: int | None
    window_spend: int
    reserved: int
    remaining: int | None
    # The USD caps (`cap_usd`), in USD; None where the key/account has no USD metering.
    cap_usd: float | None = None
    window_spend_usd: float | None = None
    remaining_usd: float | None = None


def budget_rows(report_rows: Iterable[Mapping[str, Any]]) -> list[BudgetRow]:
    """Budget gauge rows from `report.report_rows` output: every key, every account cap once."""
    out: list[BudgetRow] = []
    seen_accounts: set[str] = set()
    for r in report_rows:
        out.append(
            BudgetRow(r["account"], r["key"], r["cap"], r["spent"], r["reserved"], r["remaining"],
                      r.get("cap_usd"), r.get("spent_usd"), r.get("remaining_usd"))
        )
        account = r["account"]
        if account in seen_accounts or r.get("account_spent") is None:
            continue
        seen_accounts.add(account)
        out.append(
            BudgetRow(
                account,
                ACCOUNT_KEY,
                r.get("account_cap"),
                r["account_spent"],
                r.get("account_reserved") or 0,
                r.get("account_remaining"),
                r.get("account_cap_usd"),
                r.get("account_spent_usd"),
                r.get("account_remaining_usd"),
            )
        )
    return out


BUDGET_GAUGES = (
    ("seatbelt_cap_tokens", "Cap in tokens (capped only)."),
    ("seatbelt_window_spend_tokens", "Settled spend inside the current window."),
    ("seatbelt_remaining_tokens", "cap - spend - reserved (capped only; may be < 0)."),
    ("seatbelt_reserved_tokens", "Tokens held by live reservations."),
    ("seatbelt_cap_usd", "USD cap (cap_usd; capped only)."),
    ("seatbelt_window_spend_usd", "Settled USD spend inside the current window."),
    ("seatbelt_remaining_usd", "cap_usd - spend - reserved in USD (capped only)."),
)


def budget_families(rows: Iterable[BudgetRow]) -> list[Metric]:
    """The budget gauges of `rows`; cap and remaining only for capped rows. Pure."""
    families = {name: GaugeMetricFamily(name, text, labels=("account", "key"))
                for name, text in BUDGET_GAUGES}
    seen: set[tuple[str, str]] = set()
    for row in rows:
        labels = [clip(row.account), clip(row.key)]
        if tuple(labels) in seen:  # one series per label pair, whatever the rows say
            continue
        seen.add((labels[0], labels[1]))
        families["seatbelt_reserved_tokens"].add_metric(labels, row.reserved)
        families["seatbelt_window_spend_tokens"].add_metric(labels, row.window_spend)
        if row.cap is not None:
            remaining = row.remaining
            if remaining is None:
                remaining = row.cap - row.window_spend - row.reserved
            families["seatbelt_cap_tokens"].add_metric(labels, row.cap)
            families["seatbelt_remaining_tokens"].add_metric(labels, remaining)
        if row.window_spend_usd is not None:
            families["seatbelt_window_spend_usd"].add_metric(labels, row.window_spend_usd)
        if row.cap_usd is not None:
            families["seatbelt_cap_usd"].add_metric(labels, row.cap_usd)
            if row.remaining_usd is not None:
                families["seatbelt_remaining_usd"].add_metric(labels, row.remaining_usd)
    out: list[Metric] = list(families.values())
    return out


class BudgetCollector:
    """A prometheus_client custom collector: the budget gauges, computed when scraped from
    `source()` (seatbelt/lifecycle/budgets.py: a ledger snapshot at most a second old), so
    they are exact at scrape time and no series lingers after its key left the policy.
    Registered once per registry; a reloaded script only swaps `source`."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[BudgetRow]] = lambda: ()

    def describe(self) -> list[Metric]:
        return budget_families(())

    def collect(self) -> list[Metric]:
        try:
            rows = list(self.source())
        except Exception:  # a scrape must answer with the other series even so
            logger.exception("seatbelt: budget gauges could not be computed")
            rows = []
        return budget_families(rows)


class Metrics:
    """Every seatbelt series, bound to one registry (the process-wide one in production)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ak = ("account", "key")
        pm = ("provider", "model")
        r = self.registry
        self.spend = Counter(
            "seatbelt_spend_tokens", "Tokens charged (prompt + completion).", ak, registry=r
        )
        self.spend_prompt = Counter(
            "seatbelt_spend_prompt_tokens", "Prompt tokens charged.", ak, registry=r
        )
        self.spend_completion = Counter(
            "seatbelt_spend_completion_tokens", "Completion tokens charged.", ak, registry=r
        )
        self.spend_usd = Counter(
            "seatbelt_spend_usd", "USD charged for priced models (policy `prices:`).", ak,
            registry=r,
        )
        self.requests = Counter(
            "seatbelt_requests", "Finished LLM requests by outcome.", (*ak, "outcome"), registry=r
        )
        self.prompt_tokens = Counter(
            "seatbelt_prompt_tokens", "Prompt tokens by provider and model.", pm, registry=r
        )
        self.completion_tokens = Counter(
            "seatbelt_completion_tokens", "Completion tokens by provider and model.", pm,
            registry=r,
        )
        self.ttft = Histogram(
            "seatbelt_time_to_first_token_seconds",
            "From dispatch to the first frame carrying content.",
            pm, buckets=TTFT_BUCKETS, registry=r,
        )
        self.tps = Histogram(
            "seatbelt_tokens_per_second",
            "Completion tokens per second after the first token.",
            pm, buckets=TPS_BUCKETS, registry=r,
        )
        self.duration = Histogram(
            "seatbelt_request_duration_seconds",
            "From dispatch to the end of the response.",
            pm, buckets=DURATION_BUCKETS, registry=r,
        )
        # The budget gauges: computed at scrape time from a ledger snapshot (BudgetCollector).
        self.budgets = BudgetCollector()
        r.register(self.budgets)
        self.settlements = Counter(
            "seatbelt_settlements", "Settlements by usage source and overrun.",
            ("usage_source", "overrun"), registry=r,
        )
        self.early_close = Counter(
            "seatbelt_early_close", "Unfinished requests with no usage frame, by how they "
            "were charged (docs/metering.md): charged_hold | charged_output_bound.",
            ("path",), registry=r,
        )
        self.cut_off = Counter(
            "seatbelt_cut_off", "Streams ended because their output passed the hold's "
            "output allowance (docs/metering.md), by provider.", ("provider",), registry=r,
        )
        self.ledger_up = Gauge("seatbelt_ledger_up", "1 when the ledger answers.", registry=r)
        self.shadow_refusals = Counter(
            "seatbelt_shadow_refusals", "Would-be refusals of keys in shadow mode "
            "(enforce: false), by the outcome they would have had.", (*ak, "outcome"),
            registry=r,
        )
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}  # see _child

    def finished(
        self,
        *,
        account: str,
        key: str,
        outcome: str,
        provider: str,
        model: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        ttft_s: float | None,
        duration_s: float | None,
        usage_source: str,
        overrun: bool,
    ) -> None:
        """A request that was dispatched has ended and been settled (or released)."""
        child = self._child
        child(self.requests, account, key, outcome).inc()
        child(self.settlements, usage_source, "true" if overrun else "false").inc()
        if usage_source in CHARGED_SOURCES:
            p = max(prompt_tokens or 0, 0)
            c = max(completion_tokens or 0, 0)
            if prompt_tokens is not None or completion_tokens is not None:
                child(self.spend, account, key).inc(p + c)
                child(self.spend_prompt, account, key).inc(p)
                child(self.spend_completion, account, key).inc(c)
                child(self.prompt_tokens, provider, model).inc(p)
                child(self.completion_tokens, provider, model).inc(c)
        if ttft_s is not None and ttft_s >= 0:
            child(self.ttft, provider, model).observe(ttft_s)
        if duration_s is not None and duration_s >= 0:
            child(self.duration, provider, model).observe(duration_s)
        tps = tokens_per_second(completion_tokens, ttft_s, duration_s)
        if tps is not None:
            child(self.tps, provider, model).observe(tps)

    def _child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), remembered: labels() costs a few microseconds and every
        request touches ten series. Only for counters and histograms, which are never
        removed (a cached child of a removed series would count into the void); bounded
        like the label values themselves."""
        found = self._children.get((metric, labels))
        if found is None:
            found = metric.labels(*(clip(v) for v in labels))
            if len(self._children) >= MAX_CACHED_CHILDREN:
                self._children.clear()
            self._children[(metric, labels)] = found
        return found

    def ended_early(self, *, early_close: str | None, cut_off: bool, provider: str) -> None:
        """How a request that did not end with its usage frame was charged."""
        if early_close is not None:
            self._child(self.early_close, early_close).inc()
        if cut_off:
            self._child(self.cut_off, provider).inc()

    def spent_usd(self, *, account: str, key: str, usd: float | None) -> None:
        """USD charged by one finished request (None: unpriced model; 0: released)."""
        if usd is not None and usd > 0:
            self._child(self.spend_usd, account, key).inc(usd)

    def orphaned(self, *, account: str, key: str, tokens: int | None, usd: float | None,
                 owned: bool) -> None:
        """A hold reclaimed whole (seatbelt/lifecycle/orphans.py): a token hold is one
        orphaned settlement. Unless a live request of this proxy owns it (`owned`: its own
        finish counts the request and its real spend later), the charge is spend and the
        request ended `aborted`."""
        if tokens is not None:
            self._child(self.settlements, "orphaned", "false").inc()
        if owned:
            return
        if tokens is not None:
            self._child(self.spend, account, key).inc(max(tokens, 0))
            self._child(self.requests, account, key, "aborted").inc()
        self.spent_usd(account=account, key=key, usd=usd)

    def declare_keys(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Create each policy key's spend and request counters at 0, so `rate()` and
        `increase()` see its very first request (a counter that appears at 1 hides it).
        Bounded: policy keys x the fixed outcomes."""
        for account, key in pairs:
            account, key = clip(account), clip(key)
            for counter in (self.spend, self.spend_prompt, self.spend_completion):
                counter.labels(account, key)
            for outcome in OUTCOMES:
                self.requests.labels(account, key, outcome)

    def refused(self, *, account: str, key: str, outcome: str) -> None:
        """A request answered by seatbelt itself; nothing was dispatched or settled."""
        self._child(self.requests, account, key, outcome).inc()

    def shadow_refused(self, *, account: str, key: str, outcome: str) -> None:
        """A refusal shadow mode did not make: the request went on, metered."""
        self.shadow_refusals.labels(clip(account), clip(key), clip(outcome)).inc()

    def set_ledger_up(self, up: bool) -> None:
        self.ledger_up.set(1 if up else 0)


def tokens_per_second(
    completion_tokens: int | None, ttft_s: float | None, duration_s: float | None
) -> float | None:
    """Generation speed after the first token; None when it cannot be measured."""
    if not completion_tokens or completion_tokens <= 0:
        return None
    if ttft_s is None or duration_s is None or ttft_s <= 0 or duration_s <= 0:
        return None
    gen = duration_s - ttft_s
    return completion_tokens / gen if gen > 0 else None


def parse_address(value: str) -> tuple[str, int] | None:
    """`HOST:PORT` / `[V6]:PORT` -> (host, port); "" -> None (metrics off)."""
    value = (value or "").strip()
    if not value:
        return None
    fix = (
        f"seatbelt_metrics: {value!r} is not HOST:PORT;"
        " use e.g. 127.0.0.1:9464 or [::1]:9464, or '' to turn the endpoint off"
    )
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(fix)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(fix) from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host or ":" in host or any(c.isspace() for c in host):
            raise ValueError(fix)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(fix)
    return host, int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            try:
                ready = bool(self.server.owner.ready())
            except Exception:  # a broken probe must answer "not ready", not kill the thread
                logger.exception("seatbelt: readiness check failed")
                ready = False
            if ready:
                self._send(200, b"ready\n")
            else:
                self._send(503, b"not ready\n")
        else:
            self._send(404, b"not found\n")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds must not flood mitmproxy's output."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], owner: MetricsServer, registry: Any) -> None:
        self.owner = owner
        self.registry = registry
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, _Handler)


class MetricsServer:
    """The /metrics, /healthz and /readyz endpoint, served from a daemon thread."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else _REGISTRY
        self.ready: Callable[[], bool] = lambda: False
        self._lock = threading.Lock()
        self._address: tuple[str, int] | None = None  # as requested (port may be 0)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def bound(self) -> tuple[str, int] | None:
        """The (host, port) actually listened on, e.g. the real port after asking for 0."""
        if self._httpd is None:
            return None
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def ensure(self, address: str, ready: Callable[[], bool]) -> None:
        """Serve on `address` ("" = off). Idempotent; rebinds only when the address changes.

        Raises ValueError for a malformed address and OSError when it cannot be bound; the
        endpoint that was running before then keeps running.
        """
        addr = parse_address(address)
        with self._lock:
            self.ready = ready
            if addr == self._address and (addr is None or self._httpd is not None):
                return
            if addr is None:
                self._stop_locked()
                return
            try:
                new = _Server(addr, self, self.registry)
            except OSError:
                # The old endpoint may hold the same port on another host: free it and retry.
                if self._httpd is None or self._address is None or self._address[1] != addr[1]:
                    raise
                old = self._address
                self._stop_locked()
                try:
                    new = _Server(addr, self, self.registry)
                except OSError:
                    try:
                        self._start_locked(_Server(old, self, self.registry), old)
                    except OSError:
                        logger.error("seatbelt: metrics endpoint could not be restored on %s", old)
                    raise
            self._stop_locked()
            self._start_locked(new, addr)

    def _start_locked(self, httpd: _Server, addr: tuple[str, int]) -> None:
        self._httpd, self._address = httpd, addr
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="seatbelt-metrics", daemon=True,
        )
        self._thread.start()
        logger.info("seatbelt: metrics on http://%s:%d/metrics", *(self.bound or addr))

    def _stop_locked(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = self._address = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()


# Process-wide state: created once per process, survives addon script reloads.
_REGISTRY = CollectorRegistry()
_METRICS = Metrics(_REGISTRY)
_SERVER = MetricsServer(_REGISTRY)


def get_metrics() -> Metrics:
    """The process-wide Metrics (its registry is the one the server exports)."""
    return _METRICS


def get_server() -> MetricsServer:
    """The process-wide metrics endpoint."""
    return _SERVER
