"""Reclaimed holds (seatbelt/lifecycle/orphans.py): one audit line and the metrics for each,
counted once whether or not a live request of this proxy owns the hold."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from seatbelt.apis.base import RequestFacts, Route
from seatbelt.apis.openai import OpenAI
from seatbelt.ledger.base import HoldInfo
from seatbelt.lifecycle import orphans
from seatbelt.metering.meter import Meter
from seatbelt.records.audit import AuditLog
from seatbelt.records.metrics import Metrics

TOKENS = HoldInfo("h1", "host:1", 300, ("key:k1", "account:team"), 1000.0)
USD = HoldInfo("h2", "host:1", 2_500_000, ("usd:key:k1", "usd:account:team"), 1000.0)


def meter(hold_id: str | None = "h1", usd_hold_id: str | None = None) -> Meter:
    family = OpenAI()
    m = Meter(
        flow_id="flow-1", family=family, route=Route(family, "openai", "chat", "metered"),
        facts=RequestFacts(model="m", stream=True, max_output=100), account="team",
        key="k1", credential_fp="fp", model="m", model_label="m", host="api.example",
        path="/v1/chat/completions", reserved=300, prompt_estimate=10, ledger=None,
        hold_id=hold_id,
    )
    m.usd_hold_id = usd_hold_id
    return m


def test_usd_holds_and_subject_names_are_read_from_the_subjects() -> None:
    assert not orphans.is_usd(TOKENS) and orphans.is_usd(USD)
    assert not orphans.is_usd(HoldInfo("h", "o", 1, (), 0.0))
    assert orphans.subject_names(TOKENS) == {"key": "k1", "account": "team"}
    assert orphans.subject_names(USD) == {"key": "k1", "account": "team"}


def test_an_unowned_hold_is_named_by_its_id_and_charged_whole() -> None:
    line = orphans.orphan_record(TOKENS, None, now=1012.5)
    assert (line["flow_id"], line["key"], line["account"], line["reserved"]) == (
        "hold:h1", "k1", "team", 300)
    assert (line["usage_source"], line["outcome"], line["duration_s"]) == (
        "orphaned", "aborted", 12.5)
    assert line["cost_usd"] is None and line["host"] is None


def test_an_owned_hold_takes_its_requests_names_and_a_usd_hold_speaks_dollars() -> None:
    line = orphans.orphan_record(USD, meter(usd_hold_id="h2"), now=1001.0)
    assert (line["flow_id"], line["host"], line["path"], line["stream"]) == (
        "flow-1", "api.example", "/v1/chat/completions", True)
    assert line["reserved"] is None and line["cost_usd"] == 2.5


def test_meters_are_found_by_their_token_and_usd_hold() -> None:
    both, none = meter("h1", "h2"), meter(None)
    assert orphans.meters_by_hold([both, none]) == {"h1": both, "h2": both}


def scrape(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_record_reclaimed_counts_an_owned_hold_once_and_an_unowned_one_as_spend(
    tmp_path: Path,
) -> None:
    audit, registry = AuditLog(), CollectorRegistry()
    audit.open(str(tmp_path / "a.jsonl"))
    metrics = Metrics(registry)
    unowned = HoldInfo("h9", "dead:1", 200, ("key:k2", "account:team"), 1000.0)
    orphans.record_reclaimed([TOKENS, unowned], {"flow-1": meter("h1")}, audit, metrics)
    orphans.record_reclaimed([], {}, audit, metrics)  # nothing: nothing written
    audit.close()
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [x["flow_id"] for x in lines] == ["flow-1", "hold:h9"]
    assert scrape(registry, "seatbelt_settlements_total", usage_source="orphaned",
                  overrun="false") == 2
    # The owned hold's request counts its own spend when it finishes: not here.
    assert scrape(registry, "seatbelt_spend_tokens_total", account="team", key="k1") in (None, 0)
    assert scrape(registry, "seatbelt_spend_tokens_total", account="team", key="k2") == 200
    assert scrape(registry, "seatbelt_requests_total", account="team", key="k2",
                  outcome="aborted") == 1
