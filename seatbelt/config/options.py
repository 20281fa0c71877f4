"""The addon's mitmproxy options, parsed and validated in one place.

Every option is declared as a *string* and parsed here: mitmproxy silently skips a
script whose bool/int option got a bad value on the command line and keeps proxying
unmetered. As strings they always load, and a bad value becomes one clear start-up
error instead (fail closed).

Only the standard library at import time: seatbelt/closed.py (the entry used when
seatbelt's dependencies are missing) declares the same options from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, MutableMapping

PREFIX = "seatbelt_"

# name -> (default, help)
OPTIONS: dict[str, tuple[str, str]] = {
    "seatbelt_policy": ("policies/default.yaml", "Policy file (YAML, version 1)."),
    "seatbelt_ledger": (
        "sqlite:///state/ledger.db",
        "Ledger URL: memory://, sqlite:///PATH, sqlite:////ABS/PATH or redis://HOST:PORT/DB.",
    ),
    "seatbelt_metrics": (
        "127.0.0.1:9464",
        "HOST:PORT of the Prometheus /metrics, /healthz and /readyz endpoint; empty turns it off.",
    ),
    "seatbelt_audit": ("state/audit.jsonl", "Audit log path (JSON lines); empty turns it off."),
    "seatbelt_inject_usage": (
        "true",
        "true|false: ask OpenAI-style streams for a usage frame when the client did not, "
        "and hide that frame from the client.",
    ),
    "seatbelt_ledger_fail_open": (
        "false",
        "true|false: when the ledger is unreachable, let LLM requests through UNMETERED and "
        "UNCAPPED instead of answering 503. Off by default; announced loudly when on.",
    ),
    "seatbelt_redact": (
        "true",
        "true|false: once a flow ends, scrub credential headers and key= from it.",
    ),
    "seatbelt_hashes_only": (
        "false",
        "true|false: refuse a policy that names a plain `credential:` (credential_sha256 only).",
    ),
}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class SettingsError(ValueError):
    """One line naming the option, the problem and the fix."""


@dataclass(frozen=True)
class Settings:
    policy_path: str
    ledger_url: str
    metrics_address: str
    audit_path: str
    inject_usage: bool
    redact: bool
    ledger_fail_open: bool = False
    hashes_only: bool = False


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(
        f"{name}: {str(value)!r} is not a boolean; fix: --set {name}=true or --set {name}=false"
    )


def read_settings(options: Any) -> Settings:
    """Parse every seatbelt option; raise SettingsError for the first bad one."""
    from seatbelt.ledger import LedgerURLError, parse_ledger_url  # keep this module stdlib-only

    ledger_url = str(options.seatbelt_ledger).strip()
    try:
        parse_ledger_url(ledger_url)
    except LedgerURLError as e:
        raise SettingsError(f"seatbelt_ledger: {e}") from None
    policy = str(options.seatbelt_policy).strip()
    if not policy:
        raise SettingsError(
            "seatbelt_policy: empty; fix: --set seatbelt_policy=policies/default.yaml"
        )
    return Settings(
        policy_path=policy,
        ledger_url=ledger_url,
        metrics_address=str(options.seatbelt_metrics).strip(),
        audit_path=str(options.seatbelt_audit).strip(),
        inject_usage=parse_bool("seatbelt_inject_usage", options.seatbelt_inject_usage),
        redact=parse_bool("seatbelt_redact", options.seatbelt_redact),
        ledger_fail_open=parse_bool("seatbelt_ledger_fail_open",
                                    options.seatbelt_ledger_fail_open),
        hashes_only=parse_bool(
            "seatbelt_hashes_only", getattr(options, "seatbelt_hashes_only", "false")
        ),
    )


def unknown_options(deferred: Mapping[str, Any]) -> list[str]:
    """`--set seatbelt_ledgr=...` is accepted by mitmproxy and silently deferred: catch it."""
    return sorted(name for name in deferred if name.startswith(PREFIX) and name not in OPTIONS)


def unknown_option_error(names: list[str]) -> SettingsError:
    known = ", ".join(OPTIONS)
    return SettingsError(
        f"{names[0]}: unknown seatbelt option; fix: use one of {known}"
        + (f" (also unknown: {', '.join(names[1:])})" if len(names) > 1 else "")
    )


def take_given_values(deferred: MutableMapping[str, Any],
                      given: Callable[[Any], list[str] | None]) -> list[str]:
    """Check the seatbelt options waiting in mitmproxy's `options.deferred`; return one
    error line per bad one and take those out.

    Why: mitmproxy converts deferred `--set` values when the script registers its options,
    and `--set seatbelt_x=A --set seatbelt_x=B` (two values) or `--set seatbelt_x` (none)
    makes that conversion raise inside the script loader's task: the script is dropped
    without a word and the proxy runs unmetered. Taken out here, the conversion cannot
    fail, and the error is reported like every other bad option. `given(value)` is the
    list of command-line strings of a deferred value, or None for an already typed one
    (config.yaml), which becomes the text every option is declared as."""
    errors = []
    for name in OPTIONS:
        if name not in deferred:
            continue
        value = deferred[name]
        values = given(value)
        if values is None:  # typed, from config.yaml: `seatbelt_redact: false` is a bool
            if isinstance(value, bool):
                deferred[name] = "true" if value else "false"
            elif isinstance(value, int | float):
                deferred[name] = str(value)
            elif not isinstance(value, str):
                del deferred[name]
                errors.append(f"{name}: {value!r} is not a single value; fix: give it "
                              f"as text, e.g. {name}: {OPTIONS[name][0]!r}")
            continue
        if len(values) == 1:
            continue
        del deferred[name]
        if values:
            shown = ", ".join(repr(v) for v in values)
            errors.append(f"{name}: set {len(values)} times ({shown}); fix: give "
                          f"--set {name}=VALUE once")
        else:
            errors.append(f"{name}: no value given; fix: --set {name}=VALUE "
                          f"(default {OPTIONS[name][0]!r})")
    return errors
