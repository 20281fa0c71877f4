from __future__ import annotations

import http.client
import socket

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from seatbelt.records import metrics as m
from seatbelt.records.metrics import (
    ACCOUNT_KEY,
    BudgetRow,
    Metrics,
    MetricsServer,
    budget_rows,
    get_metrics,
    get_server,
    parse_address,
    tokens_per_second,
)
from tests.e2e.conftest import free_port


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """The exposition text, parsed the way a Prometheus server reads it."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, frozenset(labels.items())))


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [dict(lbl) for (n, lbl) in samples(registry) if n == name]


@pytest.fixture
def met() -> Metrics:
    return Metrics(CollectorRegistry())


def finish(met: Metrics, **kw) -> None:
    args = dict(
        account="research", key="agent-zero", outcome="served", provider="openai",
        model="gpt-4o-mini", prompt_tokens=100, completion_tokens=50, ttft_s=0.5,
        duration_s=1.5, usage_source="reported", overrun=False,
    )
    args.update(kw)
    met.finished(**args)


CONTRACT = {
    "seatbelt_spend_tokens": ("counter", {"account", "key"}),
    "seatbelt_spend_prompt_tokens": ("counter", {"account", "key"}),
    "seatbelt_spend_completion_tokens": ("counter", {"account", "key"}),
    "seatbelt_reserved_tokens": ("gauge", {"account", "key"}),
    "seatbelt_requests": ("counter", {"account", "key", "outcome"}),
    "seatbelt_prompt_tokens": ("counter", {"provider", "model"}),
    "seatbelt_completion_tokens": ("counter", {"provider", "model"}),
    "seatbelt_time_to_first_token_seconds": ("histogram", {"provider", "model"}),
    "seatbelt_tokens_per_second": ("histogram", {"provider", "model"}),
    "seatbelt_request_duration_seconds": ("histogram", {"provider", "model"}),
    "seatbelt_cap_tokens": ("gauge", {"account", "key"}),
    "seatbelt_window_spend_tokens": ("gauge", {"account", "key"}),
    "seatbelt_remaining_tokens": ("gauge", {"account", "key"}),
    "seatbelt_settlements": ("counter", {"usage_source", "overrun"}),
    "seatbelt_ledger_up": ("gauge", set()),
    "seatbelt_early_close": ("counter", {"path"}),
    "seatbelt_cut_off": ("counter", {"provider"}),
    "seatbelt_shadow_refusals": ("counter", {"account", "key", "outcome"}),  # shadow mode
    "seatbelt_spend_usd": ("counter", {"account", "key"}),  # extension: USD budgets
    "seatbelt_cap_usd": ("gauge", {"account", "key"}),
    "seatbelt_window_spend_usd": ("gauge", {"account", "key"}),
    "seatbelt_remaining_usd": ("gauge", {"account", "key"}),
}


def test_names_types_and_labels_match_the_contract(met):
    finish(met)
    met.refused(account="research", key="agent-zero", outcome="refused_quota")
    met.shadow_refused(account="research", key="agent-zero", outcome="refused_rate")
    met.spent_usd(account="research", key="agent-zero", usd=0.25)
    met.ended_early(early_close="charged_hold", cut_off=True, provider="openai")
    show(met, [BudgetRow("research", "agent-zero", 1000, 150, 10, 840, 5.0, 1.0, 4.0)])
    met.set_ledger_up(True)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(met.registry).decode())
    }
    assert set(families) == set(CONTRACT)
    for name, (kind, labels) in CONTRACT.items():
        fam = families[name]
        assert fam.type == kind, name
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(kind, "")
        main = [s for s in fam.samples if s.name == name + suffix]
        assert main, name
        for s in main:
            assert set(s.labels) - {"le"} == labels, name


def test_finished_charges_spend_tokens_and_outcome(met):
    finish(met)
    finish(met, prompt_tokens=7, completion_tokens=3, usage_source="estimated", overrun=True)
    r = met.registry
    assert value(r, "seatbelt_spend_tokens_total", account="research", key="agent-zero") == 160
    assert value(r, "seatbelt_spend_prompt_tokens_total", account="research",
                 key="agent-zero") == 107
    assert value(r, "seatbelt_spend_completion_tokens_total", account="research",
                 key="agent-zero") == 53
    assert value(r, "seatbelt_prompt_tokens_total", provider="openai", model="gpt-4o-mini") == 107
    assert value(r, "seatbelt_completion_tokens_total", provider="openai",
                 model="gpt-4o-mini") == 53
    assert value(r, "seatbelt_requests_total", account="research", key="agent-zero",
                 outcome="served") == 2
    assert value(r, "seatbelt_settlements_total", usage_source="reported", overrun="false") == 1
    assert value(r, "seatbelt_settlements_total", usage_source="estimated", overrun="true") == 1


def test_released_request_charges_nothing_but_counts(met):
    # released: nothing charged, even when the error body carried usage numbers
    finish(met, outcome="upstream_error", prompt_tokens=12, completion_tokens=None,
           ttft_s=None, usage_source="none")
    r = met.registry
    assert series(r, "seatbelt_spend_tokens_total") == []
    assert series(r, "seatbelt_prompt_tokens_total") == []
    assert value(r, "seatbelt_requests_total", account="research", key="agent-zero",
                 outcome="upstream_error") == 1
    assert value(r, "seatbelt_settlements_total", usage_source="none", overrun="false") == 1
    assert value(r, "seatbelt_time_to_first_token_seconds_count", provider="openai",
                 model="gpt-4o-mini") is None
    assert value(r, "seatbelt_request_duration_seconds_count", provider="openai",
                 model="gpt-4o-mini") == 1


def test_orphaned_settlement_is_spend(met):
    finish(met, outcome="aborted", prompt_tokens=400, completion_tokens=None,
           usage_source="orphaned", ttft_s=None, duration_s=None)
    assert value(met.registry, "seatbelt_spend_tokens_total", account="research",
                 key="agent-zero") == 400


def test_refused_counts_request_only(met):
    met.refused(account="anonymous", key="anonymous", outcome="unauthorized")
    met.refused(account="anonymous", key="anonymous", outcome="unauthorized")
    r = met.registry
    assert value(r, "seatbelt_requests_total", account="anonymous", key="anonymous",
                 outcome="unauthorized") == 2
    assert series(r, "seatbelt_settlements_total") == []
    assert series(r, "seatbelt_spend_tokens_total") == []


def test_policy_keys_start_at_zero_so_rate_sees_the_first_request(met):
    met.declare_keys([("research", "agent-zero")])
    r = met.registry
    assert value(r, "seatbelt_spend_tokens_total", account="research", key="agent-zero") == 0
    assert value(r, "seatbelt_requests_total", account="research", key="agent-zero",
                 outcome="refused_quota") == 0
    assert len(series(r, "seatbelt_requests_total")) == len(m.OUTCOMES)
    finish(met)
    assert value(r, "seatbelt_spend_tokens_total", account="research", key="agent-zero") == 150


def test_histograms_land_in_the_right_buckets(met):
    # 50 tokens over (1.5 - 0.5) s = 50 tokens/s
    finish(met, ttft_s=0.5, duration_s=1.5, completion_tokens=50)
    finish(met, ttft_s=90.0, duration_s=500.0, completion_tokens=4100)  # 10 tokens/s
    r, pm = met.registry, {"provider": "openai", "model": "gpt-4o-mini"}
    ttft = "seatbelt_time_to_first_token_seconds_bucket"
    assert value(r, ttft, le="0.25", **pm) == 0
    assert value(r, ttft, le="0.5", **pm) == 1
    assert value(r, ttft, le="60.0", **pm) == 1
    assert value(r, ttft, le="120.0", **pm) == 2
    dur = "seatbelt_request_duration_seconds_bucket"
    assert value(r, dur, le="1.0", **pm) == 0
    assert value(r, dur, le="2.5", **pm) == 1
    assert value(r, dur, le="300.0", **pm) == 1
    assert value(r, dur, le="600.0", **pm) == 2
    tps = "seatbelt_tokens_per_second_bucket"
    assert value(r, tps, le="5.0", **pm) == 0
    assert value(r, tps, le="10.0", **pm) == 1
    assert value(r, tps, le="50.0", **pm) == 2
    assert value(r, "seatbelt_tokens_per_second_sum", **pm) == pytest.approx(60.0)


def test_bucket_bounds_fit_llm_latencies():
    assert (m.TTFT_BUCKETS[0], m.TTFT_BUCKETS[-1]) == (0.05, 120.0)
    assert (m.DURATION_BUCKETS[0], m.DURATION_BUCKETS[-1]) == (0.1, 600.0)
    assert (m.TPS_BUCKETS[0], m.TPS_BUCKETS[-1]) == (1.0, 2000.0)


@pytest.mark.parametrize(
    ("completion", "ttft", "duration", "expected"),
    [
        (100, 1.0, 3.0, 50.0),
        (0, 1.0, 3.0, None),
        (None, 1.0, 3.0, None),
        (100, None, 3.0, None),
        (100, 0.0, 3.0, None),
        (100, 1.0, None, None),
        (100, 3.0, 3.0, None),  # whole body arrived with the first token
        (100, 4.0, 3.0, None),
    ],
)
def test_tokens_per_second(completion, ttft, duration, expected):
    assert tokens_per_second(completion, ttft, duration) == expected


def test_label_values_are_clipped(met):
    long_model = "m" * 500
    finish(met, model=long_model, key="k" * 300)
    r = met.registry
    models = {s["model"] for s in series(r, "seatbelt_prompt_tokens_total")}
    keys = {s["key"] for s in series(r, "seatbelt_spend_tokens_total")}
    assert models == {"m" * 128}
    assert keys == {"k" * 128}


def show(met: Metrics, rows: list[BudgetRow]) -> None:
    """What the runtime's budget snapshot hands the collector at the next scrape."""
    met.budgets.source = lambda: rows


def test_budget_gauges_show_each_scrapes_rows_and_caps_only_for_capped_rows(met):
    show(met, [
        BudgetRow("research", "agent-zero", 1000, 300, 100, 600),
        BudgetRow("research", ACCOUNT_KEY, 5000, 900, 100, 4000),
        BudgetRow("sandbox", "free", None, 42, 7, None),
    ])
    r = met.registry
    assert value(r, "seatbelt_cap_tokens", account="research", key="agent-zero") == 1000
    assert value(r, "seatbelt_remaining_tokens", account="research", key=ACCOUNT_KEY) == 4000
    assert value(r, "seatbelt_window_spend_tokens", account="sandbox", key="free") == 42
    assert value(r, "seatbelt_reserved_tokens", account="sandbox", key="free") == 7
    assert value(r, "seatbelt_cap_tokens", account="sandbox", key="free") is None
    assert value(r, "seatbelt_remaining_tokens", account="sandbox", key="free") is None

    # a negative remaining (after an overrun) is exported as is; a dropped key disappears
    show(met, [BudgetRow("research", "agent-zero", 1000, 1200, 0, -200)])
    assert value(r, "seatbelt_remaining_tokens", account="research", key="agent-zero") == -200
    for name in ("seatbelt_cap_tokens", "seatbelt_window_spend_tokens",
                 "seatbelt_reserved_tokens", "seatbelt_remaining_tokens"):
        assert series(r, name) == [{"account": "research", "key": "agent-zero"}], name


def test_budget_gauges_are_computed_at_each_scrape(met):
    """The collector asks its source at every scrape: no gauge lags a settle."""
    calls: list[int] = []

    def source() -> list[BudgetRow]:
        calls.append(1)
        return [BudgetRow("research", "a", 100, 10 * len(calls), 0, None)]

    met.budgets.source = source
    r = met.registry
    assert value(r, "seatbelt_window_spend_tokens", account="research", key="a") == 10
    assert value(r, "seatbelt_window_spend_tokens", account="research", key="a") == 20
    assert value(r, "seatbelt_remaining_tokens", account="research", key="a") == 100 - 30


def test_a_failing_budget_source_leaves_the_other_series(met, caplog):
    def broken() -> list[BudgetRow]:
        raise RuntimeError("no ledger")

    met.budgets.source = broken
    finish(met)
    r = met.registry
    assert series(r, "seatbelt_cap_tokens") == []
    assert value(r, "seatbelt_requests_total", account="research", key="agent-zero",
                 outcome="served") == 1
    assert "budget gauges could not be computed" in caplog.text


def test_orphaned_charge_counts_a_settlement_and_spend_unless_a_live_request_owns_it(met):
    r = met.registry
    met.orphaned(account="research", key="a", tokens=300, usd=None, owned=False)
    assert value(r, "seatbelt_settlements_total", usage_source="orphaned", overrun="false") == 1
    assert value(r, "seatbelt_spend_tokens_total", account="research", key="a") == 300
    assert value(r, "seatbelt_requests_total", account="research", key="a",
                 outcome="aborted") == 1
    # a live request's hold that passed the maximum age: its own finish counts the rest
    met.orphaned(account="research", key="a", tokens=50, usd=None, owned=True)
    assert value(r, "seatbelt_settlements_total", usage_source="orphaned", overrun="false") == 2
    assert value(r, "seatbelt_spend_tokens_total", account="research", key="a") == 300
    # a USD hold: dollars, no second settlement for the same request
    met.orphaned(account="research", key="a", tokens=None, usd=0.5, owned=False)
    assert value(r, "seatbelt_settlements_total", usage_source="orphaned", overrun="false") == 2
    assert value(r, "seatbelt_spend_usd_total", account="research", key="a") == 0.5


def test_budget_rows_from_report_rows():
    rows = [
        {"account": "research", "key": "a", "cap": 100, "spent": 10, "reserved": 5,
         "remaining": 85, "account_cap": 1000, "account_spent": 30, "account_remaining": 960,
         "account_reserved": 10},
        {"account": "research", "key": "b", "cap": None, "spent": 20, "reserved": 5,
         "remaining": None, "account_cap": 1000, "account_spent": 30, "account_remaining": 960,
         "account_reserved": 10},
    ]
    assert budget_rows(rows) == [
        BudgetRow("research", "a", 100, 10, 5, 85),
        BudgetRow("research", ACCOUNT_KEY, 1000, 30, 10, 960),
        BudgetRow("research", "b", None, 20, 5, None),
    ]


def test_ledger_up(met):
    met.set_ledger_up(True)
    assert value(met.registry, "seatbelt_ledger_up") == 1
    met.set_ledger_up(False)
    assert value(met.registry, "seatbelt_ledger_up") == 0


def test_singletons_share_one_registry():
    assert get_metrics() is get_metrics()
    assert get_server() is get_server()
    assert get_server().registry is get_metrics().registry
    # registering the same collectors again would fail: why the state lives in the module
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(get_metrics().registry)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["9464", "127.0.0.1", ":9464", "127.0.0.1:x", "127.0.0.1:70000", "::1:9464",
             "[::1]9464", "[nothost]:9464", "a b:1"],
)
def test_parse_address_rejects_with_a_fix(text):
    with pytest.raises(ValueError) as e:
        parse_address(text)
    msg = str(e.value)
    assert "\n" not in msg and "seatbelt_metrics" in msg and "127.0.0.1:9464" in msg


# --- the HTTP endpoint ---------------------------------------------------------------------


def get(addr: tuple[str, int], path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def server():
    met = Metrics(CollectorRegistry())
    srv = MetricsServer(met.registry)
    yield srv, met
    srv.stop()


def test_server_answers_metrics_healthz_readyz(server):
    srv, met = server
    state = {"ready": False}
    srv.ensure("127.0.0.1:0", lambda: state["ready"])
    addr = srv.bound
    assert addr is not None and addr[1] != 0
    finish(met)
    status, body = get(addr, "/metrics")
    assert status == 200
    fams = {f.name for f in text_string_to_metric_families(body)}
    assert "seatbelt_spend_tokens" in fams
    assert get(addr, "/healthz") == (200, "ok\n")
    assert get(addr, "/readyz")[0] == 503
    state["ready"] = True  # re-read on every request
    assert get(addr, "/readyz")[0] == 200
    assert get(addr, "/nope")[0] == 404


def test_readyz_is_503_when_the_probe_raises(server):
    srv, _ = server

    def broken() -> bool:
        raise RuntimeError("boom")

    srv.ensure("127.0.0.1:0", broken)
    assert get(srv.bound, "/readyz")[0] == 503
    assert get(srv.bound, "/healthz")[0] == 200


def test_ensure_is_idempotent_and_swaps_ready(server):
    srv, _ = server
    srv.ensure("127.0.0.1:0", lambda: False)
    first = srv.bound
    srv.ensure("127.0.0.1:0", lambda: True)  # a reloaded addon: same address, new probe
    assert srv.bound == first
    assert get(first, "/readyz")[0] == 200


def test_ensure_rebinds_on_address_change_and_turns_off(server):
    srv, _ = server
    srv.ensure("127.0.0.1:0", lambda: True)
    old = srv.bound
    port = free_port()
    srv.ensure(f"127.0.0.1:{port}", lambda: True)
    assert srv.bound == ("127.0.0.1", port)
    assert get(srv.bound, "/healthz")[0] == 200
    with pytest.raises(OSError):
        get(old, "/healthz")
    srv.ensure("", lambda: True)
    assert srv.bound is None
    with pytest.raises(OSError):
        get(("127.0.0.1", port), "/healthz")


def test_port_in_use_raises_and_keeps_the_running_endpoint(server):
    srv, _ = server
    srv.ensure("127.0.0.1:0", lambda: True)
    running = srv.bound
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            srv.ensure(f"127.0.0.1:{busy.getsockname()[1]}", lambda: True)
    assert srv.bound == running
    assert get(running, "/healthz")[0] == 200


def test_rebind_same_port_other_host(server):
    srv, _ = server
    port = free_port()
    srv.ensure(f"127.0.0.1:{port}", lambda: True)
    srv.ensure(f"0.0.0.0:{port}", lambda: True)
    assert srv.bound == ("0.0.0.0", port)
    assert get(("127.0.0.1", port), "/healthz")[0] == 200


def test_ipv6_loopback(server):
    srv, _ = server
    srv.ensure("[::1]:0", lambda: True)
    host, port = srv.bound
    assert host == "::1"
    assert get(("::1", port), "/healthz") == (200, "ok\n")


def test_spend_usd_counts_only_what_was_charged(met):
    met.spent_usd(account="research", key="agent-zero", usd=0.125)
    met.spent_usd(account="research", key="agent-zero", usd=0.0)  # released
    met.spent_usd(account="research", key="agent-zero", usd=None)  # unpriced model
    value = met.registry.get_sample_value(
        "seatbelt_spend_usd_total", {"account": "research", "key": "agent-zero"})
    assert value == 0.125


def test_remembered_series_stay_bounded_and_keep_counting(met, monkeypatch):
    monkeypatch.setattr(m, "MAX_CACHED_CHILDREN", 16)
    for i in range(40):  # many keys: the memory of series is cleared, never grows past 16
        finish(met, key=f"k{i % 20}")
        assert len(met._children) <= 16
    assert value(met.registry, "seatbelt_spend_tokens_total", account="research",
                 key="k3") == 2 * 150
    assert value(met.registry, "seatbelt_requests_total", account="research", key="k19",
                 outcome="served") == 2
    long_key = "x" * 500  # clipped once, on the way into the registry
    finish(met, key=long_key)
    finish(met, key=long_key)
    assert value(met.registry, "seatbelt_spend_tokens_total", account="research",
                 key="x" * m.MAX_LABEL) == 300


def test_usd_budget_gauges_for_usd_capped_rows_only(met):
    rows = [
        {"account": "money", "key": "a", "cap": None, "spent": 10, "reserved": 0,
         "remaining": None, "cap_usd": 5.0, "spent_usd": 1.25, "remaining_usd": 3.5,
         "account_cap": None, "account_spent": 10, "account_remaining": None,
         "account_reserved": 0, "account_cap_usd": None, "account_spent_usd": None,
         "account_remaining_usd": None},
        {"account": "money", "key": "b", "cap": 100, "spent": 10, "reserved": 0,
         "remaining": 90},
    ]
    show(met, budget_rows(rows))
    r = met.registry
    assert value(r, "seatbelt_cap_usd", account="money", key="a") == 5.0
    assert value(r, "seatbelt_window_spend_usd", account="money", key="a") == 1.25
    assert value(r, "seatbelt_remaining_usd", account="money", key="a") == 3.5
    for name in ("seatbelt_cap_usd", "seatbelt_window_spend_usd", "seatbelt_remaining_usd"):
        assert series(r, name) == [{"account": "money", "key": "a"}], name
    show(met, budget_rows(rows[1:]))
    assert series(r, "seatbelt_cap_usd") == []


def test_early_close_and_cut_off_count_each_path(met):
    met.ended_early(early_close="charged_hold", cut_off=False, provider="openai")
    met.ended_early(early_close="charged_output_bound", cut_off=False, provider="openai")
    met.ended_early(early_close=None, cut_off=True, provider="anthropic")
    met.ended_early(early_close=None, cut_off=False, provider="gemini")
    r = met.registry
    assert value(r, "seatbelt_early_close_total", path="charged_hold") == 1
    assert value(r, "seatbelt_early_close_total", path="charged_output_bound") == 1
    assert value(r, "seatbelt_cut_off_total", provider="anthropic") == 1
    assert series(r, "seatbelt_cut_off_total") == [{"provider": "anthropic"}]
