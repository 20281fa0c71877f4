"""USD budgets in the policy: `prices:` per model, `cap_usd` / `window_usd` on keys and accounts."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from seatbelt.config.policy import PolicyError, load_policy
from seatbelt.ledger.base import Cap, Window

FP = hashlib.sha256(b"sk-usd-test").hexdigest()
FP2 = hashlib.sha256(b"sk-usd-other").hexdigest()

GOOD = f"""
version: 1
prices:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  claude-sonnet-4-0: {{input: 3, cached_input: 0.30, cache_write: 3.75, output: 15}}
accounts:
  research: {{cap: 5000000, cap_usd: 100, window_usd: monthly}}
  sandbox: {{}}
keys:
  - id: agent
    account: research
    credential_sha256: {FP}
    cap: 200000
    window: daily
    cap_usd: 2.5
  - id: free
    account: sandbox
    credential_sha256: {FP2}
"""


def error(tmp_path, write_policy, text: str) -> str:
    path = write_policy(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    message = str(info.value)
    assert "\n" not in message and "; fix: " in message
    return message


def test_prices_and_usd_caps_load(tmp_path, write_policy) -> None:
    policy = load_policy(str(write_policy(tmp_path, GOOD)))
    mini = policy.price_for("gpt-4o-mini")
    assert mini is not None
    assert (mini.input, mini.cached_input, mini.cache_write, mini.output) == (
        Decimal("0.15"), Decimal("0.075"), Decimal("0.15"), Decimal("0.60"))
    assert policy.price_for("claude-sonnet-4-0").cache_write == Decimal("3.75")
    assert policy.price_for("unknown") is None and policy.price_for(None) is None
    agent, free = policy.keys
    assert agent.cap_usd == 2_500_000  # micro-dollars
    assert agent.window_usd == Window("daily")  # window_usd defaults to the key's window
    assert policy.accounts["research"].cap_usd == 100_000_000
    assert policy.accounts["research"].window_usd == Window("monthly")
    assert policy.usd_caps_for(agent) == [
        Cap("usd:key:agent", 2_500_000, Window("daily")),
        Cap("usd:account:research", 100_000_000, Window("monthly")),
    ]
    assert policy.usd_caps_for(free) == []  # no USD cap anywhere: no USD hold at all
    assert policy.caps_for(agent)[0] == Cap("key:agent", 200000, Window("daily"))


def test_account_usd_cap_alone_meters_the_key_too(tmp_path, write_policy) -> None:
    text = GOOD.replace("    cap_usd: 2.5\n", "")
    policy = load_policy(str(write_policy(tmp_path, text)))
    assert policy.usd_caps_for(policy.keys[0]) == [
        Cap("usd:key:agent", None, Window()),
        Cap("usd:account:research", 100_000_000, Window("monthly")),
    ]


def test_usd_fields_change_the_digest(tmp_path, write_policy) -> None:
    """Proxies sharing a ledger compare digests: a different USD budget must show."""
    with_usd = load_policy(str(write_policy(tmp_path, GOOD, "a.yaml")))
    cheaper = load_policy(str(write_policy(tmp_path, GOOD.replace("cap_usd: 2.5", "cap_usd: 2"),
                                           "b.yaml")))
    repriced = load_policy(str(write_policy(tmp_path, GOOD.replace("output: 15", "output: 16"),
                                            "c.yaml")))
    assert len({with_usd.digest, cheaper.digest, repriced.digest}) == 3


@pytest.mark.parametrize(
    ("old", "new", "field", "says"),
    [
        ("input: 0.15, cached", "input: -1, cached", "prices.gpt-4o-mini.input", ">= 0"),
        ("input: 0.15, cached", "input: cheap, cached", "prices.gpt-4o-mini.input", "number"),
        ("input: 0.15, cached", "input: .inf, cached", "prices.gpt-4o-mini.input", "finite"),
        ("output: 0.60}", "outptu: 0.60}", "prices.gpt-4o-mini", "unknown field"),
        ("input: 0.15, cached_input: 0.075, ", "cached_input: 0.075, ",
         "prices.gpt-4o-mini.input", "missing"),
        (", output: 15}", "}", "prices.claude-sonnet-4-0.output", "missing"),
        ("cap_usd: 2.5", "cap_usd: -2", "keys[0].cap_usd", ">= 0"),
        ("cap_usd: 2.5", "cap_usd: 0.0000001", "keys[0].cap_usd", "6 decimals"),
        ("cap_usd: 2.5", "cap_usd: lots", "keys[0].cap_usd", "number"),
        ("cap_usd: 100,", "cap_usd: true,", "accounts.research.cap_usd", "number"),
        ("window_usd: monthly", "window_usd: weekly", "accounts.research.window_usd",
         "unknown window"),
        ("    cap_usd: 2.5\n", "    window_usd: daily\n", "keys[0].window_usd",
         "without cap_usd"),
    ],
)
def test_bad_usd_fields_are_one_line_errors(tmp_path, write_policy, old, new, field,
                                            says) -> None:
    assert old in GOOD
    message = error(tmp_path, write_policy, GOOD.replace(old, new, 1))
    assert f": {field}: " in message and says in message, message


def test_usd_cap_without_any_price_warns(tmp_path, write_policy) -> None:
    text = GOOD.split("prices:")[0] + "accounts:" + GOOD.split("accounts:")[1]
    policy = load_policy(str(write_policy(tmp_path, text)))
    (warning,) = [w for w in policy.warnings if "cap_usd" in w]
    assert "key agent" in warning and "account research" in warning
    assert "refused" in warning


def test_shipped_usd_example_loads(repo_root) -> None:
    policy = load_policy(str(repo_root / "policies" / "examples" / "usd.yaml"))
    assert policy.warnings == ()
    analyst, batch = policy.keys
    assert policy.usd_caps_for(analyst)[0] == Cap("usd:key:analyst", 20_000_000, Window("daily"))
    assert policy.usd_caps_for(batch)[0] == Cap("usd:key:batch-agent", 50_000_000, Window())
    assert policy.price_for("claude-sonnet-4-20250514").cache_write == Decimal("3.75")
