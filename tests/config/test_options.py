from types import SimpleNamespace

import pytest

from seatbelt.config.options import (
    OPTIONS,
    SettingsError,
    parse_bool,
    read_settings,
    unknown_option_error,
    unknown_options,
)


def opts(**over):
    values = {name: default for name, (default, _) in OPTIONS.items()}
    values.update(over)
    return SimpleNamespace(**values)


def test_defaults_follow_the_contract():
    s = read_settings(opts())
    assert s.policy_path == "policies/default.yaml"
    assert s.ledger_url == "sqlite:///state/ledger.db"
    assert s.metrics_address == "127.0.0.1:9464"
    assert s.audit_path == "state/audit.jsonl"
    assert s.inject_usage is True and s.redact is True


@pytest.mark.parametrize(
    "text,value", [("true", True), ("FALSE", False), (" on ", True), ("0", False)]
)
def test_booleans_parse(text, value):
    assert parse_bool("seatbelt_redact", text) is value


def test_non_boolean_is_one_line_with_fix():
    with pytest.raises(SettingsError) as e:
        read_settings(opts(seatbelt_inject_usage="maybe"))
    msg = str(e.value)
    assert msg.startswith("seatbelt_inject_usage:") and "maybe" in msg and "fix:" in msg
    assert "\n" not in msg


def test_bad_ledger_url_names_the_option():
    with pytest.raises(SettingsError) as e:
        read_settings(opts(seatbelt_ledger="postgres://x"))
    assert str(e.value).startswith("seatbelt_ledger:")


def test_unknown_seatbelt_options_are_caught_and_others_ignored():
    deferred = {"seatbelt_ledgr": "memory://", "other_addon_opt": "1", "seatbelt_policy": "x"}
    assert unknown_options(deferred) == ["seatbelt_ledgr"]
    msg = str(unknown_option_error(["seatbelt_ledgr"]))
    assert msg.startswith("seatbelt_ledgr: unknown seatbelt option") and "seatbelt_ledger" in msg
