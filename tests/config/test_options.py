from types import SimpleNamespace

import pytest

from seatbelt.config.options import (
    OPTIONS,
    SettingsError,
    parse_bool,
    read_settings,
    take_given_values,
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


def test_values_mitmproxy_cannot_convert_are_taken_out_with_one_line_each():
    """Twice or without a value: mitmproxy's conversion would drop the script silently."""
    deferred = {"seatbelt_metrics": ["a:1", "b:2"], "seatbelt_policy": [],
                "seatbelt_audit": ["x.jsonl"], "seatbelt_redact": "typed", "other": ["1", "2"]}
    errors = take_given_values(deferred, lambda v: v if isinstance(v, list) else None)
    assert errors == [
        "seatbelt_policy: no value given; fix: --set seatbelt_policy=VALUE "
        "(default 'policies/default.yaml')",
        "seatbelt_metrics: set 2 times ('a:1', 'b:2'); fix: give --set seatbelt_metrics=VALUE "
        "once",
    ]
    assert deferred == {"seatbelt_audit": ["x.jsonl"], "seatbelt_redact": "typed",
                        "other": ["1", "2"]}


def test_typed_values_from_config_yaml_become_text():
    """mitmproxy would refuse a YAML bool for a str option (with a traceback)."""
    deferred = {"seatbelt_redact": False, "seatbelt_inject_usage": True,
                "seatbelt_metrics": 9464, "seatbelt_audit": None, "seatbelt_ledger": ["a"]}
    errors = take_given_values(deferred, lambda v: None)
    assert deferred == {"seatbelt_redact": "false", "seatbelt_inject_usage": "true",
                        "seatbelt_metrics": "9464"}
    assert errors == [
        "seatbelt_ledger: ['a'] is not a single value; fix: give it as text, e.g. "
        "seatbelt_ledger: 'sqlite:///state/ledger.db'",
        "seatbelt_audit: None is not a single value; fix: give it as text, e.g. "
        "seatbelt_audit: 'state/audit.jsonl'",
    ]


def test_options_module_imports_only_the_standard_library():
    """seatbelt/closed.py relies on it when seatbelt's dependencies are missing."""
    import subprocess
    import sys

    code = ("import sys, seatbelt.config.options; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('yaml', 'prometheus_client', 'zstandard', 'mitmproxy', 'redis')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_every_option_is_documented_with_its_default(repo_root):
    docs = (repo_root / "docs" / "options.md").read_text(encoding="utf-8")
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    for name, (default, _) in OPTIONS.items():
        assert f"| `{name}` | `{default}` |" in docs, name
        assert f"| `{name}` | `{default}` |" in readme, name
