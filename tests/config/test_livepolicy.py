"""Live policy (seatbelt/config/livepolicy.py): the watch, reloads and their audit lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from seatbelt.config import livepolicy
from seatbelt.config.options import Settings
from seatbelt.config.policy import PolicyError
from seatbelt.records.metrics import Metrics
from seatbelt.runtime import Runtime


def test_policy_watch_reports_a_vanished_file_once(tmp_path, monkeypatch):
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrequire_auth: false\n")
    rt = Runtime()
    rt.settings = Settings(str(path), "memory://", "", str(tmp_path / "a.jsonl"), True, True)
    rt.audit.open(str(tmp_path / "a.jsonl"))
    policy, seen = livepolicy.read_policy(str(path), hashes_only=False)
    rt.policy = policy
    livepolicy.install(rt, str(path), seen)
    path.unlink()
    for _ in range(3):
        rt.policy_watch.poll(rt)
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"policy_rejected"' in lines[0]
    assert rt.policy is policy
    path.write_text("version: 1\nrequire_auth: true\n")
    rt.policy_watch.poll(rt)
    assert rt.policy.require_auth is True


def watched(tmp_path: Path, text: str) -> tuple[Runtime, Path, Path]:
    """A runtime running the policy `text`, watched, auditing to a.jsonl."""
    path, audit = tmp_path / "p.yaml", tmp_path / "a.jsonl"
    path.write_text(text)
    rt = Runtime(metrics=Metrics(CollectorRegistry()))
    rt.settings = Settings(str(path), "memory://", "", str(audit), True, True)
    rt.audit.open(str(audit))
    rt.policy, seen = livepolicy.read_policy(str(path), hashes_only=False)
    livepolicy.install(rt, str(path), seen)
    return rt, path, audit


def audit_lines(audit: Path) -> list[dict]:
    return [json.loads(line) for line in audit.read_text().splitlines()]


def test_an_unchanged_file_is_not_reloaded(tmp_path: Path) -> None:
    rt, _, audit = watched(tmp_path, "version: 1\nrequire_auth: false\n")
    before = rt.policy
    for _ in range(livepolicy.HASH_EVERY + 1):  # includes a re-hash tick
        rt.policy_watch.poll(rt)
    assert rt.policy is before and audit.read_text() == ""


def test_a_changed_file_is_swapped_in_and_audited(tmp_path: Path) -> None:
    rt, path, audit = watched(tmp_path, "version: 1\nrequire_auth: false\n")
    path.write_text("version: 1\nrequire_auth: true\n")
    rt.policy_watch.poll(rt)
    assert rt.policy is not None and rt.policy.require_auth is True
    (line,) = audit_lines(audit)
    assert (line["outcome"], line["trigger"], line["error"]) == (
        "policy_reloaded", "file_changed", None)
    assert line["policy_digest"] == rt.policy.digest[:12] and line["policy_keys"] == 0
    assert line["policy_path"] == str(path) and line["edits"] == []


def test_a_broken_file_keeps_the_running_policy_and_says_why(tmp_path: Path) -> None:
    rt, path, audit = watched(tmp_path, "version: 1\nrequire_auth: false\n")
    running = rt.policy
    path.write_text("version: 1\nrequire_auth: [\n")
    ok, message = livepolicy.reload(rt, "command")
    assert not ok and "stays in force" in message
    assert rt.policy is running
    (line,) = audit_lines(audit)
    assert (line["outcome"], line["trigger"], line["policy_digest"]) == (
        "policy_rejected", "command", None)
    assert line["error"] and "\n" not in line["error"]
    rt.policy_watch.poll(rt)  # the same broken version: not reported again
    assert len(audit_lines(audit)) == 1


def test_reload_without_a_configuration_refuses_and_writes_nothing(tmp_path: Path) -> None:
    rt = Runtime(metrics=Metrics(CollectorRegistry()))
    assert livepolicy.reload(rt, "command") == (
        False, "seatbelt is not configured; nothing to reload")


def test_read_policy_hashes_exactly_the_bytes_it_parsed(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "p.yaml"
    path.write_bytes(b"version: 1\nrequire_auth: false\n")
    _, seen = livepolicy.read_policy(str(path), hashes_only=False)
    assert seen.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert seen.stat is not None and seen.stat[1] == len(path.read_bytes())
    path.write_text("version: 99\n")
    with pytest.raises(PolicyError) as refused:
        livepolicy.read_policy(str(path), hashes_only=False)
    assert refused.value.seen.sha256 == hashlib.sha256(b"version: 99\n").hexdigest()
