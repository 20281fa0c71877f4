"""The one set of policy value checks (seatbelt/config/checks.py): every section that takes a
host, a glob, a boolean or a one-or-list value reads it the same way."""

from __future__ import annotations

import pytest

from seatbelt.config import checks
from seatbelt.config.policy import PolicyError, policy_from_text

BASE = """version: 1
accounts: {team: {}}
keys:
  - id: k
    account: team
    credential_sha256: %s
""" % ("a" * 64)


@pytest.mark.parametrize("host", ["api.openai.com", "*.example.com", "10.0.0.1", "::1",
                                  "[::1]", "llm.local."])
def test_one_host_syntax(host: str) -> None:
    assert checks.is_host(host)


@pytest.mark.parametrize("host", ["https://api.openai.com", "api.openai.com:443", "a/b", ""])
def test_not_a_host(host: str) -> None:
    assert not checks.is_host(host)


def test_one_host_matcher_ignores_case_trailing_dot_and_brackets() -> None:
    assert checks.host_matches("*.example.com", "A.Example.com.")
    assert not checks.host_matches("*.example.com", "example.com")
    assert checks.host_matches(checks.norm_host("[::1]"), "::1")


def test_a_route_rule_on_a_bracketed_ipv6_host_matches_it() -> None:
    """Before the two host checks were one, `host: "[::1]"` was accepted by routes: but
    compared bracketed against mitmproxy's unbracketed host: it never matched."""
    p = policy_from_text("p.yaml", BASE + 'routes:\n  - host: "[::1]"\n    api: none\n')
    assert p.route_settings("::1", "/v1/chat/completions").api == "none"


def test_upstream_hosts_and_routes_accept_the_same_hosts() -> None:
    text = BASE + ('    upstream_credential_env: HOME\n'
                   '    upstream_hosts: ["[::1]", "*.example.com"]\n'
                   'routes:\n  - host: "::1"\n    api: none\n')
    p = policy_from_text("p.yaml", text)
    assert p.keys[0].access.upstream_hosts == ("::1", "*.example.com")


@pytest.mark.parametrize("field,value", [("require_auth", "yes please"),
                                         ("routes", '[{host: a.b, stream_options: 3}]')])
def test_one_boolean_check_wording(field: str, value: str) -> None:
    with pytest.raises(PolicyError, match="must be true or false, got"):
        policy_from_text("p.yaml", BASE + f"{field}: {value}\n")


def test_a_key_boolean_reads_the_same_way() -> None:
    with pytest.raises(PolicyError, match="must be true or false, got"):
        policy_from_text("p.yaml", BASE + "    enforce: 3\n")


def test_one_of_a_fixed_set_and_the_closest_name():
    names = ("cl100k_base", "o200k_base")
    assert checks.is_one_of("o200k_base", names)
    assert not checks.is_one_of("O200K_BASE", names) and not checks.is_one_of(3, names)
    assert checks.closest("o200k", names) == "o200k_base"
    assert checks.closest("zzz", names) is None
