"""The policy loader (seatbelt/config/policy.py): every load error is one line naming file,
line, field and fix; USD budgets (`prices:`, `cap_usd` / `window_usd`) at the end."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from decimal import Decimal

import pytest

from seatbelt.config.policy import (
    Account,
    Key,
    ModelInfo,
    Policy,
    PolicyError,
    fingerprint,
    load_policy,
    main,
)
from seatbelt.ledger.base import Cap, Window

SECRET = "sk-very-secret-test-credential"
FP = hashlib.sha256(SECRET.encode()).hexdigest()
FP2 = hashlib.sha256(b"sk-other").hexdigest()

MINIMAL = f"""
version: 1
keys:
  - id: k1
    credential_sha256: {FP}
"""


def load_text(tmp_path, write_policy, text: str) -> Policy:
    return load_policy(str(write_policy(tmp_path, text)))


def load_error(tmp_path, write_policy, text: str) -> PolicyError:
    path = write_policy(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert SECRET not in message
    assert message.startswith(f"{path}:")
    assert "; fix: " in message
    return err


def assert_error(err: PolicyError, line: int, field: str, problem: str) -> None:
    """FILE:LINE: FIELD: problem; fix: ..., with `problem` a substring of the problem part."""
    m = re.fullmatch(r"(.+?):(\d+): (\S+): (.+); fix: (.+)", str(err))
    assert m, str(err)
    assert (int(m.group(2)), m.group(3)) == (line, field), str(err)
    assert problem in m.group(4), str(err)
    assert m.group(5).strip()
    assert (err.line, err.field) == (line, field)


# -- what loads --------------------------------------------------------------------------


def test_minimal_policy_defaults(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, MINIMAL)
    assert policy.version == 1
    assert policy.require_auth is True
    assert policy.fallback_max_output == 4096
    assert policy.unmetered_endpoints == "refuse"
    assert dict(policy.models) == {}
    assert policy.keys == (Key("k1", "default", (FP,), None, Window()),)
    assert dict(policy.accounts) == {"default": Account("default", None, Window())}
    assert policy.warnings == ()
    assert re.fullmatch(r"[0-9a-f]{64}", policy.digest)


def test_full_policy(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, f"""
        version: 1
        require_auth: false
        fallback_max_output: 1000
        unmetered_endpoints: allow
        models:
          gpt-4o-mini: {{max_output: 16384}}
          llama3.2: {{}}
        accounts:
          research: {{cap: 5000000, window: balance}}
          sandbox: {{}}
          nightly: {{cap: 10, window: daily}}
        keys:
          - id: agent-zero
            account: research
            credential_sha256: {FP}
            cap: 200000
            window: {{rolling: 3600}}
          - id: bot
            account: nightly
            credential_sha256: [{FP2}]
            cap: 0
            window: monthly
    """)
    assert policy.require_auth is False
    assert policy.fallback_max_output == 1000
    assert policy.unmetered_endpoints == "allow"
    assert dict(policy.models) == {"gpt-4o-mini": ModelInfo(16384), "llama3.2": ModelInfo(None)}
    assert policy.accounts["research"] == Account("research", 5000000, Window("balance"))
    assert policy.accounts["sandbox"] == Account("sandbox", None, Window())
    assert policy.accounts["nightly"].window == Window("daily")
    agent, bot = policy.keys
    assert agent == Key("agent-zero", "research", (FP,), 200000, Window("rolling", 3600))
    assert bot == Key("bot", "nightly", (FP2,), 0, Window("monthly"))


def test_policy_is_immutable(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.require_auth = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.accounts["x"] = Account("x", None, Window())  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("balance", Window("balance")),
        ("daily", Window("daily")),
        ("monthly", Window("monthly")),
        ("{rolling: 60}", Window("rolling", 60)),
        ("'rolling:90'", Window("rolling", 90)),
        ("null", Window("balance")),
    ],
)
def test_windows(tmp_path, write_policy, text, window):
    policy = load_text(tmp_path, write_policy, MINIMAL + f"    cap: 5\n    window: {text}\n")
    assert policy.keys[0].window == window
    assert policy.caps_for(policy.keys[0])[0].window == window


def test_cap_null_means_uncapped(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, MINIMAL + "    cap: null\n")
    assert policy.keys[0].cap is None


def test_caps_for_key_then_account(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, f"""
        version: 1
        accounts:
          research: {{cap: 100, window: daily}}
          sandbox: {{}}
        keys:
          - {{id: a, account: research, credential_sha256: {FP}, cap: 7,
              window: {{rolling: 30}}}}
          - {{id: b, account: sandbox, credential_sha256: {FP2}}}
    """)
    a, b = policy.keys
    assert policy.caps_for(a) == [
        Cap("key:a", 7, Window("rolling", 30)),
        Cap("account:research", 100, Window("daily")),
    ]
    assert policy.caps_for(b) == [Cap("key:b", None, Window()), Cap("account:sandbox", None,
                                                                      Window())]


def test_undeclared_accounts_are_implicit_when_no_accounts_section(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, f"""
        version: 1
        keys:
          - {{id: a, account: team-x, credential_sha256: {FP}, cap: 5}}
          - {{id: b, credential_sha256: {FP2}}}
    """)
    assert set(policy.accounts) == {"team-x", "default"}
    assert policy.caps_for(policy.keys[0])[1] == Cap("account:team-x", None, Window())
    assert policy.caps_for(policy.keys[1])[1] == Cap("account:default", None, Window())


def test_key_by_fingerprint(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, f"""
        version: 1
        keys:
          - {{id: a, credential_sha256: [{FP}, {FP2}]}}
          - {{id: b, credential: sk-plain}}
    """)
    a, b = policy.keys
    assert policy.key_by_fingerprint(FP) is a
    assert policy.key_by_fingerprint(FP2) is a
    assert policy.key_by_fingerprint(fingerprint("sk-plain")) is b
    assert policy.key_by_fingerprint(fingerprint("sk-unknown")) is None
    assert policy.key_by_fingerprint(FP.upper()) is None


def test_fingerprint_trims_and_is_lowercase_hex():
    assert fingerprint(SECRET) == FP
    assert fingerprint(f"  {SECRET}\n") == FP
    assert fingerprint("x") != fingerprint("y")


def test_model_label_and_max_output(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, MINIMAL + """
models:
  gpt-4o-mini: {max_output: 16384}
  llama3.2: {}
""")
    assert policy.model_label("gpt-4o-mini") == "gpt-4o-mini"
    assert policy.model_label("llama3.2") == "llama3.2"
    assert policy.model_label("gpt-4o-mini-2024-07-18") == "other"
    assert policy.model_label("made-up-by-a-client") == "other"
    assert policy.model_label(None) == "other"
    assert policy.model_max_output("gpt-4o-mini") == 16384
    assert policy.model_max_output("llama3.2") is None
    assert policy.model_max_output("unknown") is None
    assert policy.model_max_output(None) is None


def test_plain_credential_loads_with_warning_and_is_not_kept(tmp_path, write_policy):
    path = write_policy(tmp_path, f"""
        version: 1
        keys:
          - id: dev
            credential: "  {SECRET}  "
    """)
    policy = load_policy(str(path))
    assert policy.keys[0].fingerprints == (FP,)
    assert len(policy.warnings) == 1
    warning = policy.warnings[0]
    assert warning.startswith(f"{path}:4: keys[0].credential: plain credential")
    assert "credential_sha256" in warning
    assert "\n" not in warning
    assert SECRET not in repr(policy)
    assert SECRET not in warning


def test_same_credential_in_both_forms_on_one_key_is_fine(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, f"""
        version: 1
        keys:
          - id: dev
            credential_sha256: {FP}
            credential: {SECRET}
    """)
    assert policy.keys[0].fingerprints == (FP,)


def test_digest_is_canonical(tmp_path, write_policy):
    a = load_text(tmp_path, write_policy, f"""
        version: 1
        # a comment
        keys: [{{id: k1, credential_sha256: {FP}}}]
    """)
    b = load_text(tmp_path, write_policy, MINIMAL)
    c = load_text(tmp_path, write_policy, MINIMAL + "    cap: 1\n")
    assert a.digest == b.digest
    assert c.digest != b.digest


def test_no_keys_with_require_auth_warns(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, "version: 1\n")
    assert policy.keys == ()
    assert any("no keys" in w for w in policy.warnings)


@pytest.mark.parametrize("name", ["default.yaml", "examples/team.yaml", "examples/open.yaml"])
def test_shipped_policies_load(repo_root, name):
    policy = load_policy(str(repo_root / "policies" / name))
    assert policy.keys
    assert policy.warnings == ()
    for key in policy.keys:
        assert [c.subject for c in policy.caps_for(key)] == [f"key:{key.id}",
                                                             f"account:{key.account}"]


def test_default_policy_demo_key(repo_root):
    policy = load_policy(str(repo_root / "policies" / "default.yaml"))
    key = policy.key_by_fingerprint(fingerprint("sk-seatbelt-demo"))
    assert key is not None
    assert (key.cap, key.window) == (200000, Window("rolling", 3600))
    assert policy.require_auth is True
    assert policy.accounts[key.account].cap is not None
    assert policy.model_max_output("gpt-4o-mini") == 16384


def test_examples_cover_windows_and_open_mode(repo_root):
    team = load_policy(str(repo_root / "policies" / "examples" / "team.yaml"))
    kinds = {a.window.kind for a in team.accounts.values()} | {k.window.kind for k in team.keys}
    assert kinds == {"balance", "rolling", "daily", "monthly"}
    open_ = load_policy(str(repo_root / "policies" / "examples" / "open.yaml"))
    assert open_.require_auth is False


# -- load errors -------------------------------------------------------------------------

KEY = f"  - id: k1\n    credential_sha256: {FP}\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        ("version: 2\n", 1, "version", "unsupported version"),
        ("version: '1'\n", 1, "version", "unsupported version"),
        ("version: 1.0\n", 1, "version", "unsupported version"),
        ("require_auth: true\n", 1, "version", "missing"),
        ("version: 1\nrequire_auht: true\n", 2, "policy", "unknown field `require_auht`"),
        ("version: 1\nrequire_auth: 'yes please'\n", 2, "require_auth", "true or false"),
        ("version: 1\nrequire_auth: 1\n", 2, "require_auth", "true or false"),
        ("version: 1\nfallback_max_output: 0\n", 2, "fallback_max_output", "positive integer"),
        ("version: 1\nfallback_max_output: 1.5\n", 2, "fallback_max_output", "positive integer"),
        ("version: 1\nfallback_max_output: true\n", 2, "fallback_max_output",
         "positive integer"),
        ("version: 1\nunmetered_endpoints: maybe\n", 2, "unmetered_endpoints", "refuse or allow"),
        ("version: 1\nmodels:\n  gpt-4o: {max_output: -1}\n", 3, "models.gpt-4o.max_output",
         "positive integer"),
        ("version: 1\nmodels:\n  gpt-4o: {max_tokens: 5}\n", 3, "models.gpt-4o",
         "unknown field `max_tokens`"),
        ("version: 1\nkeys: {id: k1}\n", 2, "keys", "expected a list"),
        ("version: 1\nkeys:\n  - just-a-string\n", 3, "keys[0]", "expected a mapping"),
        ("version: 1\nkeys:\n" + KEY + "    cap: -5\n", 5, "keys[0].cap", "non-negative integer"),
        ("version: 1\nkeys:\n" + KEY + "    cap: 1.5\n", 5, "keys[0].cap", "non-negative integer"),
        ("version: 1\nkeys:\n" + KEY + "    cap: true\n", 5, "keys[0].cap", "non-negative"),
        ("version: 1\nkeys:\n" + KEY + "    cap: 200k\n", 5, "keys[0].cap", "non-negative"),
        ("version: 1\nkeys:\n" + KEY + "    cap: 5\n    cap: 6\n", 6, "keys[0].cap",
         "appears twice"),
        ("version: 1\nkeys:\n" + KEY + "    windw: daily\n", 5, "keys[0]",
         "unknown field `windw`"),
        ("version: 1\nkeys:\n" + KEY + "    window: weekly\n", 5, "keys[0].window",
         "unknown window `weekly`"),
        ("version: 1\nkeys:\n" + KEY + "    window: {rolling: 0}\n", 5, "keys[0].window.rolling",
         "positive number of seconds"),
        ("version: 1\nkeys:\n" + KEY + "    window: {rolling: '1h'}\n", 5,
         "keys[0].window.rolling", "positive number of seconds"),
        ("version: 1\nkeys:\n" + KEY + "    window: {sliding: 5}\n", 5, "keys[0].window",
         "unknown field `sliding`"),
        ("version: 1\nkeys:\n" + KEY + "    window: [daily]\n", 5, "keys[0].window",
         "expected a single value"),
        ("version: 1\nkeys:\n  - id: k1\n", 3, "keys[0]", "no credential"),
        ("version: 1\nkeys:\n  - credential_sha256: " + FP + "\n", 3, "keys[0].id", "missing"),
        ("version: 1\nkeys:\n  - id: k1\n    credential_sha256: abc\n", 4,
         "keys[0].credential_sha256", "64 lowercase hex"),
        ("version: 1\nkeys:\n  - id: k1\n    credential_sha256: " + FP.upper() + "\n", 4,
         "keys[0].credential_sha256", "64 lowercase hex"),
        ("version: 1\nkeys:\n  - id: k1\n    credential_sha256: [" + FP + ", nope]\n", 4,
         "keys[0].credential_sha256[1]", "64 lowercase hex"),
        ("version: 1\nkeys:\n  - id: k1\n    credential: ''\n", 4, "keys[0].credential",
         "non-empty string"),
        ("version: 1\nkeys:\n  - id: 42\n    credential_sha256: " + FP + "\n", 3, "keys[0].id",
         "non-empty string"),
        ("version: 1\nkeys:\n" + KEY + "  - id: k1\n    credential_sha256: " + FP2 + "\n", 5,
         "keys[1].id", "already used by the key at line 3"),
        ("version: 1\nkeys:\n" + KEY + "  - id: k2\n    credential_sha256: " + FP + "\n", 6,
         "keys[1].credential_sha256", "already used by key `k1`"),
        ("version: 1\nkeys:\n" + KEY + "  - id: k2\n    credential: " + SECRET + "\n", 6,
         "keys[1].credential", "already used by key `k1`"),
        ("version: 1\nkeys:\n  - id: anonymous\n    credential_sha256: " + FP + "\n", 3,
         "keys[0].id", "reserved"),
        ("version: 1\nkeys:\n  - id: other\n    credential_sha256: " + FP + "\n", 3,
         "keys[0].id", "reserved"),
        ("version: 1\naccounts:\n  anonymous: {}\n", 3, "accounts.anonymous", "reserved"),
        ("version: 1\naccounts:\n  other: {cap: 5}\n", 3, "accounts.other", "reserved"),
        ("version: 1\naccounts:\n  research: {cap: -1}\n", 3, "accounts.research.cap",
         "non-negative integer"),
        ("version: 1\naccounts:\n  research: {cap: 5, window: hourly}\n", 3,
         "accounts.research.window", "unknown window"),
        ("version: 1\naccounts:\n  research: {caps: 5}\n", 3, "accounts.research",
         "unknown field `caps`"),
        ("version: 1\naccounts:\n  research: {}\n  research: {}\n", 4, "accounts.research",
         "appears twice"),
        ("version: 1\naccounts:\n  research: {}\nkeys:\n" + KEY + "    account: reserch\n", 7,
         "keys[0].account", "account `reserch` is not declared"),
        ("version: 1\naccounts:\n  research: {}\nkeys:\n" + KEY, 5, "keys[0].account",
         "account `default` is not declared"),
        ("version: 1\nkeys:\n  - id: k1\n    account: other\n    credential_sha256: " + FP + "\n",
         4, "keys[0].account", "reserved"),
        ("version: 1\nversion: 1\n", 2, "version", "appears twice"),
        ("- version: 1\n", 1, "policy", "expected a mapping"),
        ("version: 1\n5: x\n", 2, "policy", "a name must be a string"),
        ("version: 1\nkeys:\n  - id: k1\n    credential_sha256: !!python/name:os.system x\n", 4,
         "keys[0].credential_sha256", "cannot be read"),
    ],
)
def test_load_errors(tmp_path, write_policy, text, line, field, problem):
    assert_error(load_error(tmp_path, write_policy, text), line, field, problem)


def test_unknown_field_suggests_the_right_one(tmp_path, write_policy):
    err = load_error(tmp_path, write_policy, "version: 1\nkeys:\n" + KEY + "    windw: daily\n")
    assert "did you mean `window`?" in err.fix


def test_invalid_yaml(tmp_path, write_policy):
    err = load_error(tmp_path, write_policy, "version: 1\nkeys: [\n  - id: x\n")
    assert err.field == "yaml"
    assert err.line is not None and err.line >= 2
    assert "invalid YAML" in err.problem


def test_empty_file(tmp_path, write_policy):
    err = load_error(tmp_path, write_policy, "# nothing\n")
    assert (err.line, err.field) == (None, "policy")
    assert "version: 1" in err.fix


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(str(missing))
    message = str(info.value)
    assert message.startswith(f"{missing}: file: cannot read the policy")
    assert "; fix: " in message and "\n" not in message


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(PolicyError, match=r": file: cannot read the policy"):
        load_policy(str(path))


@pytest.mark.parametrize(
    "text",
    [
        # a credential in the wrong place must not be echoed back in the error
        f"version: 1\n{SECRET}: 1\n",
        f"version: 1\nkeys:\n  - id: k1\n    credential_sha256: {SECRET}\n",
        f"version: 1\nkeys:\n  - id: k1\n    credential_sha256: {FP}\n    cap: {SECRET}\n",
        f"version: 1\nkeys:\n  - id: k1\n    credential_sha256: {FP}\n    window: {SECRET}\n",
        f"version: 1\nkeys:\n  - id: k1\n    credential: [{SECRET}, {{a: 1}}]\n",
        f"version: 1\nkeys:\n  - {SECRET}\n",
        f"version: 1\nkeys:\n  - id: k1\n    credential: {SECRET}\n"
        f"  - id: k2\n    credential: {SECRET}\n",
    ],
)
def test_errors_never_echo_a_credential(tmp_path, write_policy, text):
    load_error(tmp_path, write_policy, text)  # asserts SECRET is not in the message


# -- the command line behind ./run.sh check / hash -----------------------------------------


def test_main_check_ok_and_error(tmp_path, write_policy, capsys):
    good = write_policy(tmp_path, MINIMAL, name="good.yaml")
    assert main(["check", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {good}")
    bad = write_policy(tmp_path, "version: 3\n", name="bad.yaml")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == f"{bad}:1: version: unsupported version int 3; fix: write `version: 1`\n"


def test_main_hash_reads_stdin(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert main(["hash"]) == 0
    assert capsys.readouterr().out == FP + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert main(["hash"]) == 1
    assert main(["bogus"]) == 2


# -- routes: host/path routing overrides and the stream_options opt-out -------------------

ROUTES = MINIMAL + """
routes:
  - host: old-azure.openai.azure.com
    stream_options: false
  - host: "*.internal.example"
    path: /llm/*
    api: openai-chat
  - path: /gen
    api: ollama-generate
    stream_options: true
  - host: intranet.example.com
    api: none
  - path: /llm/*
    api: anthropic-messages
"""


def test_routes_load_and_match_first_rule_per_setting(tmp_path, write_policy):
    policy = load_text(tmp_path, write_policy, ROUTES)
    assert [r.line for r in policy.routes] == [7, 9, 12, 15, 17]
    rs = policy.route_settings
    assert rs("old-azure.openai.azure.com", "/openai/deployments/d/chat/completions") == \
        dataclasses.replace(rs("x", "/"), stream_options=False)
    assert rs("OLD-AZURE.openai.azure.com.", "/x").stream_options is False
    assert rs("a.internal.example", "/LLM/invoke").api == "openai-chat"
    assert rs("internal.example", "/llm/invoke").api == "anthropic-messages"  # not a subdomain
    assert rs("h", "/gen/").api == "ollama-generate"
    assert rs("h", "/gen").stream_options is True
    assert rs("h", "/generate").api is None
    assert rs("intranet.example.com", "/v1/chat/completions").api == "none"
    assert rs("other.example.com", "/v1/chat/completions") == rs("x", "/")
    assert any("api: none" in w for w in policy.warnings)
    assert policy.digest != load_text(tmp_path, write_policy, MINIMAL).digest


def test_route_override_applies_to_routing(tmp_path, write_policy):
    from seatbelt.apis import route_request

    policy = load_text(tmp_path, write_policy, ROUTES)
    api = policy.route_settings("a.internal.example", "/llm/invoke").api
    r = route_request("POST", "/llm/invoke", {}, api=api)
    assert (r.family.name, r.endpoint, r.kind) == ("openai", "chat", "metered")
    r = route_request("POST", "/gen", {}, api="ollama-generate")
    assert (r.family.name, r.endpoint) == ("ollama", "generate")
    r = route_request("POST", "/x", {}, api="gemini-stream")
    assert (r.family.name, r.endpoint, r.model_from_path) == ("gemini", "stream", None)
    assert route_request("POST", "/v1/chat/completions", {}, api="none") is None


@pytest.mark.parametrize(
    "rule,line,field,problem",
    [
        ("  - host: a.example\n    api: opanai-chat\n", 7, "routes[0].api",
         "unknown api `opanai-chat`"),
        ("  - host: a.example\n    stream_options: no-thanks\n", 7,
         "routes[0].stream_options", "must be true or false"),
        ("  - host: https://a.example/\n    api: none\n", 6, "routes[0].host",
         "must be a host name"),
        ("  - host: a.example:8080\n    api: none\n", 6, "routes[0].host", "must be a host name"),
        ("  - path: llm/invoke\n    api: none\n", 6, "routes[0].path", "must be a path"),
        ("  - api: openai-chat\n", 6, "routes[0]", "neither host nor path"),
        ("  - host: a.example\n", 6, "routes[0]", "changes nothing"),
        ("  - host: a.example\n    stream_option: false\n", 7, "routes[0]",
         "unknown field `stream_option`"),
        ("  host: a.example\n", 6, "routes", "expected a list"),
    ],
)
def test_route_errors_name_the_line(tmp_path, write_policy, rule, line, field, problem):
    err = load_error(tmp_path, write_policy, MINIMAL + "routes:\n" + rule)
    assert_error(err, line, field, problem)


def test_unknown_endpoints_defaults_to_refuse_and_names_llm_hosts(tmp_path, write_policy):
    base = MINIMAL
    p = load_text(tmp_path, write_policy, base)
    assert p.unknown_endpoints == "refuse" and p.llm_hosts == frozenset()
    allow = load_text(tmp_path, write_policy, "unknown_endpoints: allow\nroutes:\n"
                      "  - {host: llm.internal, api: openai-chat}\n"
                      "  - {host: web.internal, api: none}\n" + base)
    assert allow.unknown_endpoints == "allow" and allow.digest != p.digest
    assert allow.llm_hosts == frozenset({"llm.internal"})
    err = load_error(tmp_path, write_policy, "unknown_endpoints: maybe\n" + base)
    assert "unknown_endpoints" in str(err) and "refuse" in str(err)


# -- exact counting per model (seatbelt/admission/exact.py, counting.py) ------------------


def test_models_name_their_tokenizer_and_provider_counting(tmp_path, write_policy):
    base = load_text(tmp_path, write_policy, MINIMAL)
    text = MINIMAL + ("models:\n  qwen2.5-72b: {tokenizer: qwen3}\n"
                      "  claude-sonnet-4-5: {count_tokens: provider, max_output: 64}\n"
                      "  plain: {tokenizer: null}\n")
    policy = load_text(tmp_path, write_policy, text)
    assert policy.model_info("qwen2.5-72b").tokenizer == "qwen3"
    info = policy.model_info("claude-sonnet-4-5")
    assert (info.count_tokens, info.max_output, info.tokenizer) == ("provider", 64, None)
    assert policy.model_info("plain").tokenizer is None and policy.model_info("x") is None
    assert policy.digest != base.digest
    without = load_text(tmp_path, write_policy, MINIMAL + "models:\n  plain: {}\n")
    assert without.digest == load_text(tmp_path, write_policy,
                                       MINIMAL + "models:\n  plain: {tokenizer: null}\n").digest


@pytest.mark.parametrize(("entry", "field", "problem", "hint"), [
    # a value with digits is not echoed: a credential could look like it
    ("{tokenizer: o200k}", "models.m.tokenizer", "unknown tokenizer (a string)", "o200k_base"),
    ("{tokenizer: 7}", "models.m.tokenizer", "unknown tokenizer (int 7)", "cl100k_base"),
    ("{count_tokens: local}", "models.m.count_tokens", "unknown count_tokens `local`",
     "provider"),
])
def test_an_unknown_tokenizer_or_counting_is_an_error(tmp_path, write_policy, entry, field,
                                                      problem, hint):
    err = load_error(tmp_path, write_policy, MINIMAL + f"models:\n  m: {entry}\n")
    assert_error(err, 6, field, problem)
    assert hint in err.fix


# --- USD budgets: `prices:` per model, `cap_usd` / `window_usd` on keys and accounts ------

USD_FP = hashlib.sha256(b"sk-usd-test").hexdigest()
USD_FP2 = hashlib.sha256(b"sk-usd-other").hexdigest()

USD_GOOD = f"""
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
    credential_sha256: {USD_FP}
    cap: 200000
    window: daily
    cap_usd: 2.5
  - id: free
    account: sandbox
    credential_sha256: {USD_FP2}
"""


def usd_error(tmp_path, write_policy, text: str) -> str:
    path = write_policy(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    message = str(info.value)
    assert "\n" not in message and "; fix: " in message
    return message


def test_prices_and_usd_caps_load(tmp_path, write_policy) -> None:
    policy = load_policy(str(write_policy(tmp_path, USD_GOOD)))
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
    text = USD_GOOD.replace("    cap_usd: 2.5\n", "")
    policy = load_policy(str(write_policy(tmp_path, text)))
    assert policy.usd_caps_for(policy.keys[0]) == [
        Cap("usd:key:agent", None, Window()),
        Cap("usd:account:research", 100_000_000, Window("monthly")),
    ]


def test_usd_fields_change_the_digest(tmp_path, write_policy) -> None:
    """Proxies sharing a ledger compare digests: a different USD budget must show."""
    with_usd = load_policy(str(write_policy(tmp_path, USD_GOOD, "a.yaml")))
    cheaper = load_policy(str(write_policy(tmp_path, USD_GOOD.replace("cap_usd: 2.5", "cap_usd: 2"),
                                           "b.yaml")))
    repriced = load_policy(str(write_policy(tmp_path, USD_GOOD.replace("output: 15", "output: 16"),
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
    assert old in USD_GOOD
    message = usd_error(tmp_path, write_policy, USD_GOOD.replace(old, new, 1))
    assert f": {field}: " in message and says in message, message


def test_usd_cap_without_any_price_warns(tmp_path, write_policy) -> None:
    text = USD_GOOD.split("prices:")[0] + "accounts:" + USD_GOOD.split("accounts:")[1]
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
