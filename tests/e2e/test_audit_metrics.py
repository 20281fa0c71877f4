"""The audit line (§7) and the Prometheus metrics (§8), field by field, for one key."""

from __future__ import annotations

import datetime
import re
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Key, Proxy, chat, openai_client, policy_text, tag, wait_for
from tests.standin import Received, StandIn

pytestmark = pytest.mark.e2e

METER = Key("meter", cap=300, account="audited")  # holds one ~215-token request
OTHER = Key("other-model")
AUDIT_FIELDS = {
    "ts", "flow_id", "account", "key", "credential_fp", "provider", "host", "path", "model",
    "stream", "reserved", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_write_tokens", "reasoning_tokens", "usage_source", "overrun", "outcome", "status",
    "ttft_s", "duration_s", "edits",
}
METRICS = {
    "seatbelt_spend_tokens_total": "counter",
    "seatbelt_spend_prompt_tokens_total": "counter",
    "seatbelt_spend_completion_tokens_total": "counter",
    "seatbelt_reserved_tokens": "gauge",
    "seatbelt_requests_total": "counter",
    "seatbelt_prompt_tokens_total": "counter",
    "seatbelt_completion_tokens_total": "counter",
    "seatbelt_time_to_first_token_seconds": "histogram",
    "seatbelt_tokens_per_second": "histogram",
    "seatbelt_request_duration_seconds": "histogram",
    "seatbelt_cap_tokens": "gauge",
    "seatbelt_window_spend_tokens": "gauge",
    "seatbelt_remaining_tokens": "gauge",
    "seatbelt_settlements_total": "counter",
    "seatbelt_ledger_up": "gauge",
}


@pytest.fixture(scope="module")
def traffic(proxy_factory: Any, standin: StandIn) -> tuple[Proxy, Received, list[dict[str, Any]],
                                                            tuple[float, float]]:
    """One served and one refused request of METER, plus one request with an unknown model."""
    proxy = proxy_factory("audit", policy_text([METER, OTHER], models={"gpt-4o-mini": 16384}))
    t = tag()
    before = datetime.datetime.now(datetime.timezone.utc).timestamp()
    client = openai_client(proxy, METER)
    client.chat.completions.create(
        **chat(f"{t} #len:60 #cache-read:4 #reasoning:2", max_tokens=60),
        extra_query={"trace": "on"})
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat(f"{t} again", max_tokens=400))
    openai_client(proxy, OTHER).chat.completions.create(
        model="my-private-model-xyz", max_tokens=5, messages=[{"role": "user", "content": t}])
    lines = proxy.wait_audit(METER.id, 2)
    proxy.wait_audit(OTHER.id, 1)
    after = datetime.datetime.now(datetime.timezone.utc).timestamp()
    (up,) = [r for r in standin.received(t) if r.path.startswith("/v1/chat")
             and r.json["model"] == "gpt-4o-mini"]
    return proxy, up, lines, (before, after)


def _common(line: dict[str, Any], window: tuple[float, float]) -> None:
    assert set(line) >= AUDIT_FIELDS, AUDIT_FIELDS - set(line)
    ts = line["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", ts), ts
    when = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    assert when.utcoffset() == datetime.timedelta(0)
    assert window[0] - 1 <= when.timestamp() <= window[1] + 1
    assert isinstance(line["flow_id"], str) and line["flow_id"]
    assert (line["account"], line["key"]) == (METER.account, METER.id)
    assert line["credential_fp"] == METER.fp[:12]
    assert line["provider"] == "openai"
    assert line["host"] == "127.0.0.1"
    assert line["path"] == "/v1/chat/completions"
    assert line["model"] == "gpt-4o-mini"
    assert line["stream"] is False
    assert line["overrun"] is False
    assert line["edits"] == []
    assert isinstance(line["duration_s"], (int, float)) or line["duration_s"] is None


def test_audit_line_of_served_request(traffic: Any) -> None:
    proxy, up, lines, window = traffic
    served = lines[0]
    _common(served, window)
    assert served["outcome"] == "served"
    assert served["status"] == 200
    assert served["usage_source"] == "reported"
    assert isinstance(served["reserved"], int) and served["reserved"] >= 61
    assert served["prompt_tokens"] == up.usage["prompt_tokens"]
    assert served["completion_tokens"] == 60
    assert served["cached_tokens"] == 4
    assert served["cache_write_tokens"] in (0, None)
    assert served["reasoning_tokens"] == 2
    assert served["ttft_s"] is None or served["ttft_s"] >= 0
    assert isinstance(served["duration_s"], (int, float)) and served["duration_s"] >= 0
    assert "trace" not in served["path"] and "?" not in served["path"]


def test_audit_line_of_refused_request(traffic: Any) -> None:
    proxy, up, lines, window = traffic
    refused = lines[1]
    _common(refused, window)
    assert refused["flow_id"] != lines[0]["flow_id"]
    assert refused["outcome"] == "refused_quota"
    assert refused["status"] == 429
    assert refused["usage_source"] == "none"
    assert isinstance(refused["reserved"], int) and refused["reserved"] >= 41
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
                 "reasoning_tokens"):
        assert refused[name] is None, name


def test_metrics_for_one_key(traffic: Any) -> None:
    proxy, up, lines, _ = traffic
    text = proxy.metrics_text()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, kind in METRICS.items():
        found = types.get(name) or types.get(name.removesuffix("_total"))
        assert found == kind, f"{name}: {found}"
    m = proxy.metrics()
    spend = up.usage["prompt_tokens"] + up.usage["completion_tokens"]
    key = {"account": METER.account, "key": METER.id}
    assert m.value("seatbelt_spend_tokens_total", **key) == spend
    assert m.value("seatbelt_spend_prompt_tokens_total", **key) == up.usage["prompt_tokens"]
    assert m.value("seatbelt_spend_completion_tokens_total", **key) == 60
    assert m.value("seatbelt_requests_total", outcome="served", **key) == 1
    assert m.value("seatbelt_requests_total", outcome="refused_quota", **key) == 1
    # Budget gauges read the ledger (refreshed in the background): wait for the settled view.
    budget = {"seatbelt_cap_tokens": METER.cap, "seatbelt_window_spend_tokens": spend,
              "seatbelt_reserved_tokens": 0, "seatbelt_remaining_tokens": METER.cap - spend}

    def gauges() -> dict[str, float | None]:
        now = proxy.metrics()
        return {name: now.value(name, **key) for name in budget}

    wait_for("the budget gauges of the key", lambda: gauges() == budget, timeout=20)
    model = {"provider": "openai", "model": "gpt-4o-mini"}
    assert m.value("seatbelt_prompt_tokens_total", **model) == up.usage["prompt_tokens"]
    assert m.value("seatbelt_completion_tokens_total", **model) == 60
    assert (m.value("seatbelt_request_duration_seconds_count", **model) or 0) >= 1
    buckets = [float(lab["le"]) for lab, _ in
               m.find("seatbelt_time_to_first_token_seconds_bucket", **model)
               if lab["le"] != "+Inf"]
    assert buckets and max(buckets) >= 60, "TTFT buckets do not reach minutes"
    assert m.total("seatbelt_settlements_total", usage_source="reported", overrun="false") >= 1
    assert m.value("seatbelt_ledger_up") == 1


def test_client_chosen_values_never_become_labels(traffic: Any) -> None:
    proxy, *_ = traffic
    text = proxy.metrics_text()
    assert "my-private-model-xyz" not in text
    m = proxy.metrics()
    assert m.value("seatbelt_prompt_tokens_total", provider="openai", model="other")
