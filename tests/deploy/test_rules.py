"""deploy/: the alert rules under Debian's promtool, the dashboard against the metrics seatbelt
really exports, and a real Prometheus scraping a running seatbelt.

Metric names are never listed here: they come from `seatbelt.records.metrics` itself (every
series it can export, with its labels), so renaming a metric or a label breaks these tests until
the rules and the dashboard follow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics import MetricWrapperBase

from seatbelt.records.metrics import BudgetRow, Metrics
from tests.e2e.conftest import (
    Key,
    Proxy,
    chat,
    free_port,
    http_get,
    openai_client,
    policy_text,
    tag,
    wait_for,
)
from tests.standin import StandIn

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
SAMPLE_CONFIG = PROM_DIR / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "seatbelt.json"

TARGET_LABELS = frozenset({"instance", "job"})  # added by Prometheus to every scraped series
# Series from Prometheus itself that the rules may use, with their labels.
PROMETHEUS_SERIES = {"up": TARGET_LABELS}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


# --------------------------------------------------------------------------- binaries


def binary(name: str) -> str:
    """The path of a Prometheus binary: a failure under CI (it installs them), else a skip."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found on PATH (Debian: apt-get install prometheus)"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{msg}; .ci/run installs it, so CI must have it")
    pytest.skip(msg)


def promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


# --------------------------------------------------------------------------- exported metrics


@cache
def exported() -> dict[str, frozenset[str]]:
    """Every sample name seatbelt exports -> its label names, read from seatbelt.records.metrics.

    Each metric of a fresh `Metrics` gets one child and one observation, then the registry's
    own exposition is read: sample names (`_total`, `_bucket`, ...) and labels are exactly what
    a scrape shows, whatever metrics are added later. A family left silent fails here.
    """
    m = Metrics(CollectorRegistry())
    # scrape-time budget gauges, USD ones included
    m.budgets.source = lambda: [BudgetRow("x", "x", 1, 1, 1, 1, 1.0, 1.0, 1.0)]
    for metric in vars(m).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labelnames = getattr(metric, "_labelnames", ())
        child = metric.labels(*["x"] * len(labelnames)) if labelnames else metric
        if isinstance(child, Counter):
            child.inc()
        elif isinstance(child, Gauge):
            child.set(1)
        elif isinstance(child, Histogram | Summary):
            child.observe(1)
    names: dict[str, set[str]] = {}
    silent = []
    for family in m.registry.collect():
        if not family.samples:
            silent.append(family.name)
        for s in family.samples:
            names.setdefault(s.name, set()).update(s.labels)
    assert not silent, f"metric families exported() could not exercise: {silent}"
    return {n: frozenset(labels) for n, labels in names.items()}


# --------------------------------------------------------------------------- PromQL references

FUNCTIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "abs", "absent", "absent_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "day_of_month", "day_of_week", "day_of_year", "days_in_month",
    "delta", "deriv", "exp", "floor", "histogram_count", "histogram_sum", "histogram_fraction",
    "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time",
})
KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "group_left", "group_right"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:.])\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


@dataclass
class Refs:
    """What one PromQL expression refers to."""

    metrics: set[str]
    matchers: dict[str, set[str]]  # metric -> label names it is matched on
    grouping: set[str]  # labels of by/without/on/ignoring/group_*
    variables: set[str]  # Grafana template variables


def promql_refs(expr: str) -> Refs:
    """Metric names, label names and variables of a PromQL expression (Grafana syntax allowed).

    A word that is neither a known function (followed by "("), a keyword nor inside label
    matchers or grouping clauses is a metric name; unknown functions are reported as errors.
    """
    variables = {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("1m", text)
    matchers: dict[str, set[str]] = {}
    for m in _SELECTOR.finditer(text):
        name = m.group(1)
        assert name, f"selector without a metric name in {expr!r}"
        matchers.setdefault(name, set()).update(_MATCHER.findall(m.group(2)))
    text = _SELECTOR.sub(lambda m: m.group(1) + " ", text)
    grouping = {label for g in _GROUPING.findall(text) for label in _IDENT.findall(g)}
    text = _GROUPING.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    metrics = set()
    for m in _IDENT.finditer(text):
        word = m.group(0)
        if word in KEYWORDS:
            continue
        if text[m.end():].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        else:
            metrics.add(word)
    metrics |= set(matchers)
    return Refs(metrics, matchers, grouping, variables)


def reference_errors(expr: str, extra: dict[str, frozenset[str]] | None = None) -> list[str]:
    """Why `expr` names a series or label seatbelt (or `extra`) does not export; [] if none."""
    known = {**exported(), **(extra or {})}
    refs = promql_refs(expr)
    errors = [f"unknown metric {n!r}" for n in sorted(refs.metrics) if n not in known]
    available = set(TARGET_LABELS)
    for name in refs.metrics & known.keys():
        labels = known[name] | TARGET_LABELS
        available |= labels
        errors += [f"{name} has no label {label!r}"
                   for label in sorted(refs.matchers.get(name, set()) - labels)]
    errors += [f"no series in the expression has label {label!r}"
               for label in sorted(refs.grouping - available)]
    return errors


def test_reference_parser_catches_renames() -> None:
    """The checker itself: it must see metric and label names wherever PromQL puts them."""
    refs = promql_refs('histogram_quantile(0.9, sum by (le, model) (rate(x_bucket{model=~"$m",'
                       ' a="}"}[$__rate_interval]))) / on (b) group_left y offset 1h > 0.8 '
                       'unless z{c!="1"} and vector(0)')
    assert refs.metrics == {"x_bucket", "y", "z"}
    assert refs.matchers == {"x_bucket": {"model", "a"}, "z": {"c"}}
    assert refs.grouping == {"le", "model", "b"}
    assert refs.variables == {"m", "__rate_interval"}
    assert reference_errors("seatbelt_spend_tokens_total") == []
    assert reference_errors("seatbelt_spend_tokens") == ["unknown metric 'seatbelt_spend_tokens'"]
    assert reference_errors('seatbelt_ledger_up{key="a"}') == [
        "seatbelt_ledger_up has no label 'key'"]
    assert reference_errors("sum by (model) (seatbelt_reserved_tokens)") == [
        "no series in the expression has label 'model'"]
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        promql_refs("rat(seatbelt_spend_tokens_total[5m])")


# --------------------------------------------------------------------------- alert rules


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", ALERTS.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout, out.stdout


def test_promtool_test_rules() -> None:
    """alerts_test.yml: every alert fires where it must and stays quiet where it must not."""
    out = promtool("test", "rules", ALERTS_TEST.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_sample_config_is_valid() -> None:
    out = promtool("check", "config", SAMPLE_CONFIG.name)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_reference_exported_metrics() -> None:
    rules = alert_rules()
    assert rules
    errors = [f"{r['alert']}: {e}" for r in rules
              for e in reference_errors(r["expr"], PROMETHEUS_SERIES)]
    assert errors == []
    for r in rules:
        assert r.get("labels", {}).get("severity") in {"critical", "warning", "info"}, r["alert"]
        assert {"summary", "description"} <= set(r.get("annotations", {})), r["alert"]


def test_unit_file_covers_every_alert_both_ways() -> None:
    """Each alert has a case where it fires and one where it must not; input series are real."""
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    assert doc["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for series in case["input_series"]:
            errors = reference_errors(series["series"], PROMETHEUS_SERIES)
            assert errors == [], f"{case['name']}: {series['series']}: {errors}"
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never seen firing"
    assert names - quiet == set(), "alerts never checked to stay quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_required_alerts_exist() -> None:
    """The operator's minimum: near cap, refusal spike, holds not draining, ledger != 1."""
    exprs = {r["alert"]: " ".join(r["expr"].split()) for r in alert_rules()}
    assert "> 0.8" in exprs["SeatbeltKeyNearCap"]
    assert "seatbelt_requests_total" in exprs["SeatbeltRefusalSpike"]
    assert "seatbelt_reserved_tokens" in exprs["SeatbeltHoldsNotDraining"]
    assert exprs["SeatbeltLedgerDown"] == "seatbelt_ledger_up != 1"
    assert exprs["SeatbeltLedgerFailingOpen"] == "seatbelt_ledger_up == -1"


# --------------------------------------------------------------------------- dashboard


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def dashboard_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query."""
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def label_values_queries(dash: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Template variable name -> (series selector, label) of its label_values() query."""
    out = {}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q)
        assert m, f"variable {var['name']}: not a label_values() query: {q!r}"
        out[var["name"]] = (m.group(1), m.group(2))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation, for the few variables and builtins the dashboard uses."""
    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        return values[name]

    return _VARIABLE.sub(one, expr)


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    assert {"account", "key"} <= variables.keys()
    assert "$account" in variables["key"]["query"]["query"], "key choices follow the account"
    all_panels = panels(dash)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes = []
    for p in all_panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for other_title, o in boxes:
            overlap = (g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"]
                       and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"])
            assert not overlap, f"{p['title']!r} overlaps {other_title!r}"
        boxes.append((p["title"], g))
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"{p['title']}: no queries"
        refids = [t["refId"] for t in p["targets"]]
        assert len(refids) == len(set(refids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert t["expr"].strip(), p["title"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == "${datasource}", var["name"]


def test_dashboard_references_exported_metrics() -> None:
    """Every metric and label a query names exists in seatbelt/records/metrics.py; variables
    are defined."""
    dash = dashboard()
    defined = {v["name"] for v in dash["templating"]["list"]} | GRAFANA_BUILTINS
    errors = []
    exprs = dashboard_exprs(dash)
    for name, (selector, label) in label_values_queries(dash).items():
        exprs.append((f"variable {name}", f"sum by ({label}) ({selector})"))
    for title, expr in exprs:
        errors += [f"{title}: {e}" for e in reference_errors(expr)]
        errors += [f"{title}: undefined variable ${v}"
                   for v in sorted(promql_refs(expr).variables - defined)]
    assert errors == []


def test_dashboard_shows_what_operators_need() -> None:
    """Spend, remaining budget, holds, refusals, TTFT, tokens/s, duration, ledger health."""
    used: set[str] = set()
    for _, expr in dashboard_exprs(dashboard()):
        used |= promql_refs(expr).metrics
    needed = {"seatbelt_spend_tokens_total", "seatbelt_remaining_tokens",
              "seatbelt_reserved_tokens", "seatbelt_requests_total",
              "seatbelt_time_to_first_token_seconds_bucket", "seatbelt_tokens_per_second_bucket",
              "seatbelt_request_duration_seconds_bucket", "seatbelt_ledger_up"}
    assert needed - used == set()
    assert needed <= exported().keys()


def test_dashboard_per_key_queries_follow_the_variables() -> None:
    """A series with account/key labels is always filtered by $account and by $key (or "*")."""
    known = exported()
    for title, expr in dashboard_exprs(dashboard()):
        # Braces inside label values (Grafana's ${var}) must not end a selector early.
        text = _STRING.sub(lambda m: m.group(0).replace("{", "(").replace("}", ")"), expr)
        for m in _SELECTOR.finditer(text):
            labels = known.get(m.group(1), frozenset())
            body = m.group(2)
            if "account" in labels:
                assert 'account=~"$account"' in body, f"{title}: {m.group(0)}"
            if "key" in labels:
                assert 'key=~"$key"' in body or 'key="*"' in body, f"{title}: {m.group(0)}"
        for name in promql_refs(expr).metrics:
            if "account" in known.get(name, ()):
                assert re.search(re.escape(name) + r"\s*\{", expr), f"{title}: bare {name}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Prometheus's own parser (promtool) accepts every query, variables interpolated."""
    dash = dashboard()
    values = {"account": ".*", "key": ".*", "model": ".*", "datasource": "x",
              "__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr, values)}
             for i, (_, expr) in enumerate(dashboard_exprs(dash))]
    for name, (selector, _) in label_values_queries(dash).items():
        rules.append({"record": f"dashboard:variable_{name}", "expr": substitute(selector, values)})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout, out.stdout


# --------------------------------------------------------------------------- real Prometheus

SCRAPED = Key("scraped", cap=50_000, account="observed")


class Prometheus:
    """A real Prometheus server on 127.0.0.1 with a temporary config and storage."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "seatbelt",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arguments(self) -> list[str]:
        """The server's flags (tests/deploy/test_image.py runs them in a container)."""
        return [f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]

    def command(self) -> list[str]:
        return [binary("prometheus"), *self.arguments()]

    def start(self, timeout: float = 20.0) -> Prometheus:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            if http_get(self.url + "/-/ready", 1.0)[0] == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        assert status == 200, f"{url} answered {status}: {body[:300]}"
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector result of /api/v1/query."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]


@dataclass
class Scraped:
    proxy: Proxy
    prometheus: Prometheus
    spend: int  # prompt + completion tokens of the one request


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """seatbelt (real mitmdump) in front of the stand-in, one request, scraped by Prometheus."""
    binary("prometheus")
    standin = StandIn().start()
    proxy = Proxy(tmp_path_factory.mktemp("seatbelt"), policy_text([SCRAPED]),
                  upstream=standin.url)
    prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"),
                            [f"127.0.0.1:{proxy.metrics_port}"], [ALERTS])
    try:
        proxy.start()
        prometheus.start()
        wait_for("Prometheus to scrape seatbelt",
                 lambda: prometheus.query('seatbelt_ledger_up{job="seatbelt"}'))
        openai_client(proxy, SCRAPED).chat.completions.create(
            **chat(f"{tag()} #len:7", max_tokens=50))
        (line,) = proxy.wait_audit(SCRAPED.id, 1)
        assert line["outcome"] == "served" and line["usage_source"] == "reported", line
        yield Scraped(proxy, prometheus, line["prompt_tokens"] + line["completion_tokens"])
    finally:
        prometheus.stop()
        proxy.stop()
        standin.stop()


def _value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


@pytest.mark.e2e
def test_prometheus_reads_spend_back(scraped: Scraped) -> None:
    """The spend counter, scraped by a real Prometheus, equals the audited usage."""
    prom, want = scraped.prometheus, scraped.spend
    assert want > 0
    selector = f'{{account="{SCRAPED.account}", key="{SCRAPED.id}"}}'
    got = wait_for(
        f"Prometheus to read spend {want}",
        lambda: (r if _value(r := prom.query(f"seatbelt_spend_tokens_total{selector}")) == want
                 else None))
    assert got[0]["metric"] == {
        "__name__": "seatbelt_spend_tokens_total", "account": SCRAPED.account,
        "key": SCRAPED.id, "job": "seatbelt",
        "instance": f"127.0.0.1:{scraped.proxy.metrics_port}"}
    wait_for(f"the budget gauge to show {want} spent",
             lambda: _value(prom.query(f"seatbelt_window_spend_tokens{selector}")) == want)
    assert _value(prom.query(f"seatbelt_remaining_tokens{selector}")) == SCRAPED.cap - want
    assert _value(prom.query(f"seatbelt_cap_tokens{selector}")) == SCRAPED.cap
    (target,) = prom.api("targets")["activeTargets"]
    assert target["health"] == "up", target


@pytest.mark.e2e
def test_prometheus_loads_the_alert_rules(scraped: Scraped) -> None:
    """The real server accepts alerts.yml and evaluates it against live seatbelt series."""
    def evaluated() -> dict[str, dict[str, Any]] | None:
        """The loaded alert rules once each was evaluated (before: "0001-01-01T00:00:00Z")."""
        groups = scraped.prometheus.api("rules", type="alert")["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        done = all(r.get("lastEvaluation", "").startswith("20") for r in rules.values())
        return rules if done else None

    rules = wait_for("every rule to be evaluated", evaluated)
    assert rules.keys() == {r["alert"] for r in alert_rules()}
    errors = {n: r["lastError"] for n, r in rules.items() if r.get("lastError")}
    assert errors == {}
    # A healthy proxy with a little spend: none of the seatbelt alerts is active.
    assert scraped.prometheus.query('ALERTS{alertname=~"Seatbelt.*"}') == []


@pytest.mark.e2e
def test_dashboard_queries_against_live_series(scraped: Scraped) -> None:
    """Every dashboard query runs on the live server; the budget panels show the key's numbers."""
    prom, want = scraped.prometheus, scraped.spend
    values = {"account": SCRAPED.account, "key": SCRAPED.id, "model": ".*", "datasource": "x",
              "__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
    wait_for("the budget gauge", lambda: _value(prom.query(
        f'seatbelt_window_spend_tokens{{key="{SCRAPED.id}"}}')) == want)
    results = {}
    for title, expr in dashboard_exprs(dashboard()):
        results.setdefault(title, []).append(prom.query(substitute(expr, values)))
    (used,) = results["Budget used (per key, current window)"]
    assert _value(used) == pytest.approx(want / SCRAPED.cap)
    assert used[0]["metric"] == {"account": SCRAPED.account, "key": SCRAPED.id}
    (remaining,) = results["Remaining budget (per key)"]
    assert _value(remaining) == SCRAPED.cap - want
    (holds,) = results["Holds (reserved tokens)"]
    assert _value(holds) == 0
    spent, cap = results["Spend in current window"]
    assert (_value(spent), _value(cap)) == (want, SCRAPED.cap)
    (ledger,) = results["Ledger"]
    assert _value(ledger) == 1
    for name, (selector, label) in label_values_queries(dashboard()).items():
        series = prom.query(substitute(selector, values))
        assert series, f"variable {name} would offer no choices"
        choices = {s["metric"].get(label) for s in series}
        assert choices and None not in choices, (name, choices)
    account_choices = {s["metric"]["account"] for s in prom.query(
        substitute(label_values_queries(dashboard())["account"][0], values))}
    key_choices = {s["metric"]["key"] for s in prom.query(
        substitute(label_values_queries(dashboard())["key"][0], values))}
    assert SCRAPED.account in account_choices
    assert key_choices == {SCRAPED.id}, "key choices must not offer the account row '*'"
