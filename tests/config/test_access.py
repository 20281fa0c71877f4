"""Policy parsing of the operating fields (seatbelt/config/access.py): values, defaults,
errors."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from seatbelt.config.access import (
    DEFAULT_MIN_OUTPUT,
    IdentityIndex,
    Secret,
    effective,
    host_allowed,
)
from seatbelt.config.policy import PolicyError, load_policy

FP = hashlib.sha256(b"sk-a").hexdigest()
FP2 = hashlib.sha256(b"sk-b").hexdigest()
CERT = "ab" * 32

FULL = f"""\
version: 1
accounts:
  team: {{enforce: false, over_cap: clamp, min_output: 32, models: ["gpt-4o*"]}}
  closed: {{disabled: true}}
keys:
  - id: a
    account: team
    credential_sha256: [{FP}, {FP2}]
    enforce: true
    models: [gpt-4o-mini, "claude-*"]
    upstream_credential_env: SEATBELT_TEST_REAL
    upstream_hosts: [api.openai.com, "*.openai.azure.com"]
    max_concurrent: 2
    rpm: 30
  - id: b
    account: team
    proxy_auth_user: [alice, bob]
    client_cert_sha256: "{CERT.upper()[:2]}:{CERT[2:]}"
    client_cidr: [10.0.0.0/8, "::1"]
  - id: c
    account: closed
    client_cidr: 10.1.2.0/24
"""


def load(tmp_path, write_policy, text):
    return load_policy(str(write_policy(tmp_path, text)))


def test_every_field_parses(tmp_path, write_policy, monkeypatch):
    monkeypatch.setenv("SEATBELT_TEST_REAL", "sk-real-upstream")
    p = load(tmp_path, write_policy, FULL)
    a, b, c = p.keys
    assert a.fingerprints == (FP, FP2)  # rotation: several credentials, one key
    assert a.access.models == ("gpt-4o-mini", "claude-*")
    assert a.access.upstream_credential.reveal() == "sk-real-upstream"
    assert a.access.upstream_hosts == ("api.openai.com", "*.openai.azure.com")
    assert (a.access.max_concurrent, a.access.rpm) == (2, 30)
    assert b.fingerprints == () and b.access.proxy_auth_users == ("alice", "bob")
    assert b.access.client_cert_sha256 == (CERT,)  # colons and case normalised
    assert b.access.client_cidrs == (ipaddress.ip_network("10.0.0.0/8"),
                                     ipaddress.ip_network("::1/128"))
    team = p.accounts["team"].access
    eff = effective(a.access, team)
    assert eff.enforce is True and eff.clamp and eff.min_output == 32  # key over account
    assert eff.model_allowed("gpt-4o-mini")
    assert not eff.model_allowed("claude-3")  # the account's list applies too
    assert not eff.model_allowed(None)
    eff_b = effective(b.access, team)
    assert eff_b.enforce is False and eff_b.model_allowed("gpt-4o")
    assert effective(c.access, p.accounts["closed"].access).disabled


def test_defaults_and_the_digest(tmp_path, write_policy, monkeypatch):
    monkeypatch.setenv("SEATBELT_TEST_REAL", "sk-real-upstream")
    plain = load(tmp_path, write_policy, f"version: 1\nkeys:\n  - id: a\n    "
                 f"credential_sha256: {FP}\n")
    eff = effective(plain.keys[0].access, plain.accounts["default"].access)
    assert (eff.enforce, eff.clamp, eff.min_output, eff.disabled) == (
        True, False, DEFAULT_MIN_OUTPUT, False)
    assert eff.model_allowed("anything") and eff.model_allowed(None)
    shadow = load(tmp_path, write_policy, f"version: 1\nkeys:\n  - id: a\n    "
                  f"credential_sha256: {FP}\n    enforce: false\n")
    assert shadow.digest != plain.digest  # fleets see the change


def test_the_real_credential_never_shows(tmp_path, write_policy, monkeypatch):
    monkeypatch.setenv("SEATBELT_TEST_REAL", "sk-real-upstream")
    p = load(tmp_path, write_policy, FULL)
    for text in (repr(p), str(p.keys[0]), repr(p.keys[0].access), f"{p.keys[0].access}"):
        assert "sk-real-upstream" not in text
    secret = p.keys[0].access.upstream_credential
    assert isinstance(secret, Secret) and f"{secret}" == "***"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)


@pytest.mark.parametrize("snippet, field, words", [
    ("enforce: maybe", "keys[0].enforce", "true or false"),
    ("over_cap: shrink", "keys[0].over_cap", "refuse or clamp"),
    ("min_output: 0", "keys[0].min_output", "positive integer"),
    ("max_concurrent: -1", "keys[0].max_concurrent", "positive integer"),
    ("rpm: 1.5", "keys[0].rpm", "positive integer"),
    ("models: []", "keys[0].models", "empty list"),
    ("models: [{a: 1}]", "keys[0].models[0]", "single value"),
    ("disabled: 1", "keys[0].disabled", "true or false"),
    ("upstream_credential_env: SEATBELT_TEST_UNSET_VAR\n    upstream_hosts: [a.example]",
     "keys[0].upstream_credential_env", "SEATBELT_TEST_UNSET_VAR is not set"),
    ("upstream_credential_env: SEATBELT_TEST_REAL", "keys[0].upstream_credential_env",
     "needs `upstream_hosts`"),
    ("upstream_credential_env: 'bad name'\n    upstream_hosts: [a.example]",
     "keys[0].upstream_credential_env", "environment variable name"),
    ("upstream_hosts: [api.openai.com]", "keys[0].upstream_hosts", "without upstream_cred"),
    ("upstream_credential_env: SEATBELT_TEST_REAL\n    upstream_hosts: ['https://x.example/']",
     "keys[0].upstream_hosts[0]", "host name"),
    ("proxy_auth_user: 'a b'", "keys[0].proxy_auth_user", "user name"),
    ("client_cert_sha256: abc", "keys[0].client_cert_sha256", "SHA-256"),
    ("client_cidr: [10.0.0.0/33]", "keys[0].client_cidr[0]", "CIDR"),
    ("modles: [x]", "keys[0]", "did you mean `models`"),
    ("expires: soon", "keys[0].expires", "RFC 3339 time or a date"),
    ("expires: 2026-12-31T18:00:00", "keys[0].expires", "no time zone"),
    ("expires: 5", "keys[0].expires", "RFC 3339 time or a date"),
    ("expires: 2026-13-01", "keys[0].expires", "RFC 3339 time or a date"),
    ("expires: [2026-01-01]", "keys[0].expires", "single value"),
])
def test_every_mistake_is_one_line_with_field_and_fix(tmp_path, write_policy, monkeypatch,
                                                      snippet, field, words):
    monkeypatch.setenv("SEATBELT_TEST_REAL", "sk-real-upstream")
    monkeypatch.delenv("SEATBELT_TEST_UNSET_VAR", raising=False)
    text = f"version: 1\nkeys:\n  - id: a\n    credential_sha256: {FP}\n    {snippet}\n"
    with pytest.raises(PolicyError) as e:
        load(tmp_path, write_policy, text)
    msg = str(e.value)
    assert "\n" not in msg and f": {field}: " in msg and "; fix: " in msg, msg
    assert words in msg, msg
    assert "sk-real-upstream" not in msg


def test_account_fields_are_checked_and_key_only_fields_refused_there(tmp_path, write_policy):
    base = ("version: 1\naccounts:\n  team: ACCOUNT\nkeys:\n  - id: a\n    account: team\n"
            f"    credential_sha256: {FP}\n")
    with pytest.raises(PolicyError, match=r"accounts\.team: unknown field `rpm`"):
        load(tmp_path, write_policy, base.replace("ACCOUNT", "{rpm: 5}"))
    with pytest.raises(PolicyError, match=r"accounts\.team\.over_cap: must be refuse or clamp"):
        load(tmp_path, write_policy, base.replace("ACCOUNT", "{over_cap: sometimes}"))


def test_identities_need_one_owner_and_replace_the_credential(tmp_path, write_policy):
    two = ("version: 1\nkeys:\n  - id: a\n    proxy_auth_user: alice\n"
           "  - id: b\n    proxy_auth_user: [bob, alice]\n")
    with pytest.raises(PolicyError) as e:
        load(tmp_path, write_policy, two)
    assert "keys[1].proxy_auth_user[1]" in str(e.value) and "key `a`" in str(e.value)
    same_net = ("version: 1\nkeys:\n  - id: a\n    client_cidr: 10.0.0.1/8\n"
                "  - id: b\n    client_cidr: 10.0.0.0/8\n")
    with pytest.raises(PolicyError, match="already used by key `a`"):
        load(tmp_path, write_policy, same_net)
    with pytest.raises(PolicyError, match="no credential.*proxy_auth_user"):
        load(tmp_path, write_policy, "version: 1\nkeys:\n  - id: a\n    rpm: 3\n")


def test_identity_index_precedence_and_longest_prefix(tmp_path, write_policy):
    text = ("version: 1\nkeys:\n"
            "  - id: wide\n    client_cidr: 10.0.0.0/8\n"
            "  - id: narrow\n    client_cidr: 10.1.0.0/16\n"
            f"  - id: user\n    proxy_auth_user: alice\n"
            f"  - id: cert\n    client_cert_sha256: {CERT}\n")
    p = load(tmp_path, write_policy, text)
    index = IdentityIndex.build(p.keys)
    ids = lambda *a: (lambda m: (m[0].id if m[0] else None, m[1]))(index.match(*a))  # noqa: E731
    assert ids(None, None, "10.1.2.3") == ("narrow", "client_cidr")
    assert ids(None, None, "10.2.0.1") == ("wide", "client_cidr")
    assert ids(None, None, "::ffff:10.1.0.9") == ("narrow", "client_cidr")  # v4-mapped
    assert ids(None, CERT, "10.1.2.3") == ("cert", "client_cert")
    assert ids("alice", CERT, "10.1.2.3") == ("user", "proxy_auth")
    assert ids("mallory", None, "192.168.0.1") == (None, None)


def test_host_patterns():
    assert host_allowed(["api.openai.com"], "API.openai.com.")
    assert host_allowed(["*.openai.azure.com"], "x.openai.azure.com")
    assert not host_allowed(["*.openai.azure.com"], "openai.azure.com.evil.example")
    assert not host_allowed(["api.openai.com"], "api.openai.com.evil.example")


@pytest.mark.parametrize("written, epoch", [
    ("2026-12-31T18:00:00Z", 1798740000),
    ("'2026-12-31T18:00:00+01:00'", 1798736400),
    ("2026-12-31", 1798675200),  # a date: 00:00 UTC of that day
    ("'2026-12-31'", 1798675200),
])
def test_expires_reads_rfc3339_and_dates(tmp_path, write_policy, written, epoch):
    text = f"version: 1\nkeys:\n  - id: a\n    credential_sha256: {FP}\n    expires: {written}\n"
    (key,) = load(tmp_path, write_policy, text).keys
    assert key.access.expires == epoch
    assert not key.access.expired(epoch - 0.001) and key.access.expired(epoch)


def test_an_expiry_in_the_past_loads_with_a_warning(tmp_path, write_policy):
    text = f"version: 1\nkeys:\n  - id: a\n    credential_sha256: {FP}\n    expires: 2020-01-01\n"
    policy = load(tmp_path, write_policy, text)
    assert policy.keys[0].access.expired(1e10)
    assert any("2020-01-01T00:00:00Z is in the past" in w for w in policy.warnings)
