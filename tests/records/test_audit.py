from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from seatbelt.records.audit import (
    AUDIT_FIELDS,
    EXTRA_FIELDS,
    AuditLog,
    AuditRecord,
    audit_record,
    format_ts,
)

CONTRACT_ORDER = (
    "ts", "flow_id", "account", "key", "credential_fp", "provider", "host", "path", "model",
    "stream", "reserved", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_write_tokens", "reasoning_tokens", "usage_source", "overrun", "outcome", "status",
    "ttft_s", "duration_s", "edits",
)
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def fields(**over) -> dict:
    base = dict(
        flow_id="f-1", account="research", key="agent-zero", credential_fp="5e884898da28",
        provider="openai", host="api.openai.com", path="/v1/chat/completions",
        model="gpt-4o-mini", stream=True, reserved=4200, prompt_tokens=100,
        completion_tokens=50, cached_tokens=20, cache_write_tokens=None, reasoning_tokens=0,
        usage_source="reported", overrun=False, outcome="served", status=200, ttft_s=0.25,
        duration_s=1.5, edits=["usage_requested"],
    )
    base.update(over)
    return base


def test_fields_follow_the_contract_in_order():
    assert CONTRACT_ORDER == AUDIT_FIELDS
    rec = audit_record(ts=0.0, **fields())
    assert tuple(rec) == AUDIT_FIELDS + EXTRA_FIELDS  # extras only after the contract's
    assert rec["cost_usd"] is None
    assert audit_record(ts=0.0, cost_usd=0.0123, **fields())["cost_usd"] == 0.0123
    assert rec["ts"] == "1970-01-01T00:00:00.000Z"


def test_unknown_or_missing_field_is_an_error():
    with pytest.raises(ValueError, match="unknown field.*bogus"):
        audit_record(bogus=1, **fields())
    partial = fields()
    del partial["status"]
    del partial["edits"]
    with pytest.raises(ValueError, match="missing field.*status, edits"):
        audit_record(**partial)


def test_ts_defaults_to_now_and_is_rfc3339_utc_ms():
    before = datetime.now(UTC) - timedelta(seconds=1)
    rec = audit_record(**fields())
    assert TS.match(rec["ts"])
    parsed = datetime.fromisoformat(rec["ts"].replace("Z", "+00:00"))
    assert parsed >= before


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1700000000.1234, "2023-11-14T22:13:20.123Z"),
        (datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC), "2024-02-29T23:59:59.999Z"),
        (datetime(2024, 3, 1, 1, 0, 0, 5000, tzinfo=timezone(timedelta(hours=2))),
         "2024-02-29T23:00:00.005Z"),
    ],
)
def test_format_ts(ts, expected):
    assert format_ts(ts) == expected


def test_path_never_keeps_a_query_string():
    rec = audit_record(**fields(path="/v1beta/models/x:generateContent?key=AIzaSECRET&alt=sse"))
    assert rec["path"] == "/v1beta/models/x:generateContent"


def test_credential_fp_keeps_only_twelve_hex():
    full = "5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8"
    assert audit_record(**fields(credential_fp=full))["credential_fp"] == "5e884898da28"
    assert audit_record(**fields(credential_fp=None))["credential_fp"] is None
    # a raw credential passed by mistake is never written
    assert audit_record(**fields(credential_fp="sk-local-test-1234"))["credential_fp"] is None


def test_one_compact_line_per_record_appended(tmp_path):
    path = tmp_path / "deep" / "dir" / "audit.jsonl"
    log = AuditLog()
    log.open(str(path))
    log.write(audit_record(ts=1.0, **fields(flow_id="a")))
    log.write(audit_record(ts=2.0, **fields(flow_id="b", model="modèle\nx")))
    # the line is on disk before close: flushed per write
    assert path.read_text(encoding="utf-8").count("\n") == 2
    log.close()
    log2 = AuditLog()
    log2.open(str(path))  # appends, never truncates
    log2.write(audit_record(ts=3.0, **fields(flow_id="c")))
    log2.close()
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    recs = [json.loads(line) for line in lines[:-1]]
    assert [r["flow_id"] for r in recs] == ["a", "b", "c"]
    assert recs[1]["model"] == "modèle\nx"
    assert all(tuple(r) == AUDIT_FIELDS + EXTRA_FIELDS for r in recs)
    assert ", " not in lines[0] and '": ' not in lines[0]  # compact separators


def test_write_guards_raw_records(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog()
    log.open(str(path))
    log.write({"path": "/v1/x?key=SECRET", "ts": 0})
    log.write({"flow_id": "no-ts"})
    log.close()
    first, second = (json.loads(x) for x in path.read_text().splitlines())
    assert first == {"path": "/v1/x", "ts": "1970-01-01T00:00:00.000Z"}
    assert TS.match(second["ts"])
    assert "SECRET" not in path.read_text()


def test_off_writes_nothing(tmp_path):
    log = AuditLog()
    log.open("")
    assert not log.enabled
    log.write(audit_record(**fields()))  # no error, no file
    assert list(tmp_path.iterdir()) == []


def test_open_fails_loudly_on_a_bad_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        AuditLog().open(str(blocker / "audit.jsonl"))  # parent is a file


def test_write_failure_never_raises_and_logs_error_once(tmp_path, caplog):
    path = tmp_path / "audit.jsonl"
    log = AuditLog()
    log.open(str(path))
    os.remove(path)
    os.mkdir(path)  # the path is now a directory: every reopen fails
    log.reopen()
    with caplog.at_level(logging.WARNING, logger="seatbelt"):
        log.write(audit_record(**fields()))
        log.write(audit_record(**fields()))
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.ERROR) == 1 and logging.WARNING in levels
    assert all("SECRET" not in r.getMessage() for r in caplog.records)
    log.close()


def test_write_to_a_full_disk_does_not_raise(caplog):
    if not os.path.exists("/dev/full"):
        pytest.fail("this test needs /dev/full (Linux)")
    log = AuditLog()
    log.open("/dev/full")
    with caplog.at_level(logging.ERROR, logger="seatbelt"):
        log.write(audit_record(**fields()))
    assert any("audit" in r.getMessage() for r in caplog.records)
    log.close()


def test_reopen_follows_rotation(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog()
    log.open(str(path))
    log.write(audit_record(**fields(flow_id="before")))
    os.rename(path, tmp_path / "audit.jsonl.1")
    log.reopen()
    log.write(audit_record(**fields(flow_id="after")))
    log.close()
    assert json.loads(path.read_text())["flow_id"] == "after"
    assert json.loads((tmp_path / "audit.jsonl.1").read_text())["flow_id"] == "before"


def test_unserialisable_value_is_written_as_text(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog()
    log.open(str(path))
    class Model:
        def __str__(self) -> str:
            return "m1"

    log.write(audit_record(**fields(model=Model())))
    log.close()
    assert json.loads(path.read_text())["model"] == "m1"


def test_a_lone_surrogate_from_a_client_still_gets_its_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog()
    log.open(str(path))
    hostile = json.loads('"gpt-\\ud800x"')  # valid JSON, not encodable as UTF-8
    log.write(audit_record(**fields(flow_id="a", model=hostile)))
    log.write(audit_record(**fields(flow_id="b", model="modèle")))
    log.close()
    recs = [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]
    assert [(r["flow_id"], r["model"]) for r in recs] == [("a", hostile), ("b", "modèle")]


@pytest.mark.parametrize("over", [
    {}, {"path": "/v1beta/models/x:generateContent?key=AIzaSECRET"},
    {"credential_fp": "sk-not-a-fingerprint"}, {"credential_fp": "5E884898DA28FFFF"},
    {"edits": ["usage_requested", "max_tokens_added"], "cost_usd": 0.5}])
def test_an_audit_record_line_is_what_audit_record_makes(over: dict) -> None:
    given = {**fields(ts=1_700_000_000.25), **over}
    rec = AuditRecord(**{**given, "edits": tuple(given["edits"])})
    line = rec.as_line()
    expected = audit_record(**given)
    assert list(line) == list(expected) and line == expected
