"""The policy file (YAML, `version: 1`) as frozen, validated data.

Every mistake an operator can make in the file is a `PolicyError` whose text is one line,
"FILE:LINE: FIELD: problem; fix: ...", so a proxy that refuses to start says exactly what
to change. Typos are errors, never silently ignored: an unknown field could otherwise turn
a cap off. Raw credentials never leave `load_policy`: the plain `credential:` form is
fingerprinted on the spot and only its fingerprint is kept.

Defaults: `require_auth: true`, `fallback_max_output: 4096`, `unmetered_endpoints: refuse`,
`unknown_endpoints: refuse` (a POST no family knows, on an LLM host: seatbelt/apis),
a key's `account` is `default` (which must then be declared when `accounts:` is non-empty),
a cap's `window` is `balance`. A missing or null `cap` means metered, not capped.

`routes:` (optional) adjusts routing for custom deployments, per host and/or path; for
each setting the first rule that matches and names it wins:

    routes:
      - host: old-azure.openai.azure.com   # exact host, or *.example.com for subdomains
        stream_options: false             # never add stream_options.include_usage here
      - path: /llm/invoke                  # glob on the path (no query); * matches anything
        api: openai-chat                  # route it as that API (see apis.API_PATHS)
      - host: intranet.example.com
        api: none                         # not an LLM route here: passes untouched

`python -m seatbelt.config.policy check FILE` and `python -m seatbelt.config.policy hash`
(credential on stdin)
back `./run.sh check` and `./run.sh hash`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from seatbelt.admission.exact import ENCODINGS
from seatbelt.apis import API_PATHS, NOT_AN_API
from seatbelt.apis.fields import norm_path
from seatbelt.config import access as access_mod
from seatbelt.config import checks
from seatbelt.config.access import NO_ACCESS, Access
from seatbelt.ledger.base import Cap, Window
from seatbelt.usd.pricing import PRICE_FIELDS, Price, PriceError, make_price, usd_to_micro

ANONYMOUS = "anonymous"  # account/key label of an unknown credential when require_auth is off
OTHER = "other"  # model label of every model the policy does not name
RESERVED_IDS = frozenset({ANONYMOUS, OTHER, "*"})  # "*" labels an account's own cap
DEFAULT_ACCOUNT = "default"
DEFAULT_FALLBACK_MAX_OUTPUT = 4096

_TOP_FIELDS = (
    "version",
    "require_auth",
    "fallback_max_output",
    "unmetered_endpoints",
    "unknown_endpoints",
    "models",
    "accounts",
    "keys",
    "routes",
    "prices",
)
_KEY_FIELDS = ("id", "account", "credential_sha256", "credential", "cap", "window",
               "cap_usd", "window_usd",
               *access_mod.KEY_FIELDS)
_ACCOUNT_FIELDS = ("cap", "window", "cap_usd", "window_usd", *access_mod.ACCOUNT_FIELDS)
_MODEL_FIELDS = ("max_output", "context_window", "tokenizer", "count_tokens")
_MODEL_SIZES = ("max_output", "context_window")
# `tokenizer:` names an encoding the exact counter ships (seatbelt/admission/exact.py);
# `count_tokens: provider` asks the provider's count endpoint (seatbelt/admission/counting.py).
_COUNT_TOKENS = ("provider",)
_ROUTE_FIELDS = ("host", "path", "api", "stream_options")
_ROUTE_SETTINGS = ("api", "stream_options")
_WINDOW_NAMES = ("balance", "daily", "monthly")
_PLAIN_WORD = re.compile(r"^[a-z_]{1,30}$")  # safe to echo: no credential looks like this
_MAX_ID_LEN = 128


class PolicyError(Exception):
    """A policy file that must not be used; str() is one line naming file, line, field and fix."""

    def __init__(self, file: str, line: int | None, field: str, problem: str, fix: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.problem = _one_line(problem)
        self.fix = _one_line(fix)
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {self.problem}; fix: {self.fix}")


@dataclass(frozen=True)
class ModelInfo:
    """What the policy says about one model, by the name clients send."""

    max_output: int | None
    # Reserved as the prompt of a request that refers to server-side state it does not
    # carry (Responses previous_response_id, Gemini cachedContent): apis/base.py.
    context_window: int | None = None
    # The encoding that counts this model's prompt exactly where the byte bound would
    # refuse (an open model behind a compatible server): seatbelt/admission/exact.py.
    tokenizer: str | None = None
    # "provider": ask the provider's count endpoint (Anthropic, Gemini) in that case.
    count_tokens: str | None = None


@dataclass(frozen=True)
class Account:
    """A budget shared by all of an account's keys."""

    id: str
    cap: int | None
    window: Window
    access: Access = NO_ACCESS  # enforce / over_cap / models / disabled (seatbelt/config/access.py)
    cap_usd: int | None = None  # micro-dollars (seatbelt/usd/pricing.py); None = no USD cap
    window_usd: Window = Window()  # the USD cap's window; defaults to `window`


@dataclass(frozen=True)
class Key:
    """One client credential (or several, for rotation) and its own budget."""

    id: str
    account: str
    fingerprints: tuple[str, ...]
    cap: int | None
    window: Window
    access: Access = NO_ACCESS  # operating fields and other identities (seatbelt/config/access.py)
    cap_usd: int | None = None  # micro-dollars (seatbelt/usd/pricing.py); None = no USD cap
    window_usd: Window = Window()  # the USD cap's window; defaults to `window`


@dataclass(frozen=True)
class RouteRule:
    """One `routes:` entry: where it applies, and what it changes there (None = nothing)."""

    host: str | None  # lowercase; "*.example.com" matches its subdomains
    path: str | None  # lowercase glob on the normalised path
    api: str | None  # a name of apis.API_PATHS, or "none"
    stream_options: bool | None
    line: int

    def matches(self, host: str, path: str) -> bool:
        if self.host is not None and not checks.host_matches(self.host, host):
            return False
        return self.path is None or checks.glob_matches((self.path,), norm_path(path))


@dataclass(frozen=True)
class RouteSettings:
    """What the `routes:` rules say about one request."""

    api: str | None = None
    stream_options: bool | None = None  # False: never request usage with stream_options


@dataclass(frozen=True)
class Policy:
    """A loaded policy. Immutable; a reload builds a new one."""

    path: str
    version: int
    require_auth: bool
    fallback_max_output: int
    models: Mapping[str, ModelInfo]
    accounts: Mapping[str, Account]
    keys: tuple[Key, ...]
    unmetered_endpoints: Literal["refuse", "allow"]
    digest: str
    # A POST on an LLM host (reverse mode, hosts the policy names) that no family knows:
    # refused 403 endpoint_not_metered unless "allow" (seatbelt/apis/__init__.py).
    unknown_endpoints: Literal["refuse", "allow"] = "refuse"
    warnings: tuple[str, ...] = ()
    routes: tuple[RouteRule, ...] = ()
    prices: Mapping[str, Price] = field(  # model -> USD per 1M tokens (seatbelt/usd/pricing.py)
        default_factory=lambda: types.MappingProxyType({}))
    _by_fp: Mapping[str, Key] = field(init=False, repr=False, compare=False)
    # Worked out on first use, once per policy (a reload builds a new policy, and new ones).
    _identities: access_mod.IdentityIndex | None = field(
        default=None, init=False, repr=False, compare=False)
    _effective: dict[str, access_mod.Effective] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    # caps_for / usd_caps_for by key id, with the key they were made for (a Key from
    # elsewhere with the same id is not this policy's).
    _caps: dict[str, tuple[Key, tuple[Cap, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _usd_caps: dict[str, tuple[Key, tuple[Cap, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    # Hosts the policy names as LLM servers: `routes:` rules routing a host as an API, and
    # the hosts virtual keys may reach (seatbelt/admission/destination.py: on_llm_host).
    llm_hosts: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {fp: key for key in self.keys for fp in key.fingerprints}
        object.__setattr__(self, "_by_fp", types.MappingProxyType(index))
        hosts = {r.host for r in self.routes if r.host and r.api not in (None, "none")}
        hosts.update(h.lower() for k in self.keys for h in k.access.upstream_hosts)
        object.__setattr__(self, "llm_hosts", frozenset(hosts))

    def identities(self) -> access_mod.IdentityIndex:
        """Keys by connection identity (proxy-auth user, client certificate, address)."""
        if self._identities is None:
            object.__setattr__(self, "_identities", access_mod.IdentityIndex.build(self.keys))
        assert self._identities is not None
        return self._identities

    def effective(self, key: Key) -> access_mod.Effective:
        """The key's operating settings over its account's."""
        found = self._effective.get(key.id)
        if found is None:
            account = self.accounts.get(key.account)
            found = access_mod.effective(key.access,
                                         account.access if account is not None else NO_ACCESS)
            self._effective[key.id] = found
        return found

    def key_by_fingerprint(self, fp: str) -> Key | None:
        return self._by_fp.get(fp)

    def caps_for(self, key: Key) -> list[Cap]:
        """The key's cap, then its account's; both always, so spend is recorded for both."""
        return self._per_key(self._caps, key, self._token_caps)

    def _token_caps(self, key: Key) -> tuple[Cap, ...]:
        account = self._account_of(key)
        return (Cap(f"key:{key.id}", key.cap, key.window),
                Cap(f"account:{account.id}", account.cap, account.window))

    def _per_key(self, cache: dict[str, tuple[Key, tuple[Cap, ...]]], key: Key,
                 make: Callable[[Key], tuple[Cap, ...]]) -> list[Cap]:
        """make(key), once per key and policy (a request asks for its caps twice)."""
        found = cache.get(key.id)
        if found is None or found[0] is not key:
            found = (key, make(key))
            cache[key.id] = found
        return list(found[1])

    def _account_of(self, key: Key) -> Account:
        return self.accounts.get(key.account) or Account(key.account, None, Window())

    def model_label(self, model: str | None) -> str:
        """A metrics label clients cannot choose: a model the policy names, else "other"."""
        return model if model is not None and model in self.models else OTHER

    def route_settings(self, host: str, path: str) -> RouteSettings:
        """Per setting, the first matching `routes:` rule that names it."""
        if not self.routes:
            return RouteSettings()
        found: dict[str, Any] = {}
        for rule in self.routes:
            if len(found) == len(_ROUTE_SETTINGS):
                break
            if not rule.matches(host, path):
                continue
            for name in _ROUTE_SETTINGS:
                value = getattr(rule, name)
                if value is not None:
                    found.setdefault(name, value)
        return RouteSettings(**found)

    def usd_caps_for(self, key: Key) -> list[Cap]:
        """USD caps (micro-dollars) of the key and its account, both metered when either
        has `cap_usd`; [] when neither has one (no USD hold at all)."""
        return self._per_key(self._usd_caps, key, self._usd_caps_of)

    def _usd_caps_of(self, key: Key) -> tuple[Cap, ...]:
        account = self._account_of(key)
        if key.cap_usd is None and account.cap_usd is None:
            return ()
        return (Cap(f"usd:key:{key.id}", key.cap_usd, key.window_usd),
                Cap(f"usd:account:{account.id}", account.cap_usd, account.window_usd))

    def price_for(self, model: str | None) -> Price | None:
        """The model's price by the name the request sends; None = unpriced."""
        return self.prices.get(model) if model is not None else None

    def model_max_output(self, model: str | None) -> int | None:
        info = self.models.get(model) if model is not None else None
        return info.max_output if info else None

    def model_context_window(self, model: str | None) -> int | None:
        info = self.models.get(model) if model is not None else None
        return info.context_window if info else None

    def model_info(self, model: str | None) -> ModelInfo | None:
        return self.models.get(model) if model is not None else None


def fingerprint(credential: str) -> str:
    """Lowercase hex SHA-256 of the trimmed credential: the only form seatbelt keeps."""
    return hashlib.sha256(credential.strip().encode("utf-8")).hexdigest()


def load_policy(path: str, *, hashes_only: bool = False) -> Policy:
    """Read, parse and validate a policy file; raise PolicyError (one line) on any problem.

    hashes_only (option seatbelt_hashes_only): a plain `credential:` is an error, not a
    warning."""
    return policy_from_text(path, read_policy_file(path)[1], hashes_only=hashes_only)


def read_policy_file(path: str) -> tuple[bytes, str]:
    """(bytes, UTF-8 text) of the policy file; PolicyError (one line) if unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data, data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise PolicyError(
            path, None, "file", f"cannot read the policy ({reason})",
            "point seatbelt_policy at a readable UTF-8 YAML file",
        ) from None


def policy_from_text(path: str, text: str, *, hashes_only: bool = False) -> Policy:
    """Parse policy text already read from `path` (live reload hashes exactly what it parses)."""
    loader = _Loader(path)
    loader.hashes_only = hashes_only
    return loader.load(text)


# -- internals -------------------------------------------------------------------------------


def _access_canon(access: Access) -> list[Any]:
    """Operating fields in the digest; nothing for an entry that sets none (digest unchanged)."""
    canon = access.canonical()
    return [] if canon is None else [canon]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _describe(node: yaml.Node) -> str:
    """A value's kind for an error message; never the text of a string (it may be a secret)."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    if tag in ("int", "float", "bool", "null"):
        return f"{tag} {node.value}" if tag != "null" else "null"
    return "a string"


def _field_name(name: str) -> str:
    """An unknown field's name for a message, only if it looks like a field name."""
    return f"`{name}`" if _PLAIN_WORD.match(name) else "a field"


class _Loader:
    """Walks the composed YAML node tree so every problem can name its line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.hashes_only = False  # load_policy(hashes_only=True): plain credentials refused
        self.warnings: list[str] = []
        self._constructor = yaml.SafeLoader("")  # turns one scalar node into its value

    def fail(self, node: yaml.Node | None, where: str, problem: str, fix: str) -> PolicyError:
        return PolicyError(self.path, _line(node) if node is not None else None, where, problem,
                           fix)

    # -- YAML -> nodes and scalars --

    def load(self, text: str) -> Policy:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else None
            problem = e.problem or e.context or "not valid YAML"
            raise PolicyError(self.path, line, "yaml", f"invalid YAML: {problem}",
                              "correct the YAML syntax at that line") from None
        except yaml.YAMLError as e:
            raise PolicyError(self.path, None, "yaml", f"invalid YAML ({type(e).__name__})",
                              "correct the YAML syntax") from None
        finally:
            loader.dispose()
        if root is None:
            raise PolicyError(self.path, None, "policy", "the file is empty",
                              "start it with `version: 1` (see policies/default.yaml)")
        return self.policy(root)

    def refuse_or_allow(self, top: dict[str, Any], name: str) -> Literal["refuse", "allow"]:
        """A top-level `refuse` (default) | `allow` switch."""
        if name not in top:
            return "refuse"
        node = top[name][1]
        value = self.scalar(node, name)
        if value == "allow":
            return "allow"
        if value != "refuse":
            raise self.fail(node, name, f"must be refuse or allow, got {_describe(node)}",
                            f"write `{name}: refuse` (default) or `allow`")
        return "refuse"

    def scalar(self, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, where, f"expected a single value, got {_describe(node)}",
                            "write a plain value here")
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise self.fail(node, where, "value cannot be read", "write a plain value here") \
                from None

    def mapping(
        self, node: yaml.Node, where: str, allowed: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Field name -> (name node, value node); duplicates and unknown fields are errors."""
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"expected a mapping, got {_describe(node)}",
                            "write `name: value` pairs here")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        here = where or "policy"
        for key_node, value_node in node.value:
            name = self.scalar(key_node, here)
            if not isinstance(name, str):
                raise self.fail(key_node, here, f"a name must be a string, got "
                                f"{_describe(key_node)}", "quote it")
            if allowed is not None and name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean `{close[0]}`? " if close else ""
                raise self.fail(
                    key_node, here, f"unknown field {_field_name(name)}",
                    f"{hint}allowed fields: {', '.join(allowed)}",
                )
            if name in out:  # PyYAML would silently keep the last one
                raise self.fail(key_node, f"{where}.{name}" if where else name,
                                f"`{name}` appears twice", "keep only one of them")
            out[name] = (key_node, value_node)
        return out

    # -- typed values --

    def boolean(self, node: yaml.Node, where: str, fix: str) -> bool:
        value = self.scalar(node, where)
        if not isinstance(value, bool):
            raise self.fail(node, where, f"must be true or false, got {_describe(node)}", fix)
        return value

    def items(self, node: yaml.Node, where: str) -> list[tuple[yaml.Node, str]]:
        """A field that takes one value or a list of them: (node, where) per value."""
        if isinstance(node, yaml.SequenceNode):
            return [(item, f"{where}[{j}]") for j, item in enumerate(node.value)]
        return [(node, where)]

    def integer(self, node: yaml.Node, where: str, *, minimum: int, what: str) -> int:
        value = self.scalar(node, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(node, where, f"must be {what}, got {_describe(node)}",
                            f"write {what} (e.g. 200000)" if minimum == 0
                            else f"write {what} (e.g. 4096)")
        return value

    def cap(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], where: str) -> int | None:
        if "cap" not in fields:
            return None
        node = fields["cap"][1]
        if self.scalar(node, f"{where}.cap") is None:
            return None
        return self.integer(node, f"{where}.cap", minimum=0, what="a non-negative integer")

    def window(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], where: str,
               name: str = "window") -> Window:
        if name not in fields:
            return Window()
        node = fields[name][1]
        at = f"{where}.{name}"
        fix = "write balance, daily, monthly or {rolling: SECONDS}"
        if isinstance(node, yaml.MappingNode):
            inner = self.mapping(node, at, ("rolling",))
            if "rolling" not in inner:
                raise self.fail(node, at, "a window mapping needs `rolling`", fix)
            seconds = self.integer(inner["rolling"][1], f"{at}.rolling", minimum=1,
                                   what="a positive number of seconds")
            return Window("rolling", seconds)
        value = self.scalar(node, at)
        if value is None:
            return Window()
        if isinstance(value, str):
            name = value.strip()
            if name in _WINDOW_NAMES:
                return Window(name)  # type: ignore[arg-type]
            m = re.fullmatch(r"rolling:\s*(\d+)", name)
            if m and int(m.group(1)) >= 1:
                return Window("rolling", int(m.group(1)))
        shown = f"`{value}`" if isinstance(value, str) and _PLAIN_WORD.match(value) \
            else f"({_describe(node)})"
        raise self.fail(node, at, f"unknown window {shown}", fix)

    def ident(self, node: yaml.Node, where: str, what: str) -> str:
        value = self.scalar(node, where)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, where, f"{what} must be a non-empty string, got "
                            f"{_describe(node)}", "write a name such as `agent-zero` (quote it "
                            "if it looks like a number)")
        if value != value.strip() or len(value) > _MAX_ID_LEN or not value.isprintable():
            raise self.fail(node, where, f"{what} must be printable, without surrounding "
                            f"spaces, at most {_MAX_ID_LEN} characters",
                            "use a short name such as `agent-zero`")
        if value in RESERVED_IDS:
            raise self.fail(node, where, f"`{value}` is reserved for metrics labels",
                            f"choose another {what}")
        return value

    # -- sections --

    def policy(self, root: yaml.Node) -> Policy:
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(root, "policy", f"expected a mapping, got {_describe(root)}",
                            "start the file with `version: 1` (see policies/default.yaml)")
        top = self.mapping(root, "", _TOP_FIELDS)
        if "version" not in top:
            raise self.fail(root, "version", "missing", "add `version: 1` at the top")
        version_node = top["version"][1]
        version = self.scalar(version_node, "version")
        if isinstance(version, bool) or not isinstance(version, int) or version != 1:
            raise self.fail(version_node, "version",
                            f"unsupported version {_describe(version_node)}", "write `version: 1`")

        require_auth = True
        if "require_auth" in top:
            require_auth = self.boolean(top["require_auth"][1], "require_auth",
                                        "write `require_auth: true` or `false`")

        fallback = DEFAULT_FALLBACK_MAX_OUTPUT
        if "fallback_max_output" in top:
            fallback = self.integer(top["fallback_max_output"][1], "fallback_max_output",
                                    minimum=1, what="a positive integer")

        unmetered = self.refuse_or_allow(top, "unmetered_endpoints")
        unknown = self.refuse_or_allow(top, "unknown_endpoints")

        models = self.models(top["models"][1]) if "models" in top else {}
        declared = self.accounts(top["accounts"][1]) if "accounts" in top else {}
        keys = self.keys(top["keys"][1], declared) if "keys" in top else ()
        routes = self.routes(top["routes"][1]) if "routes" in top else ()
        prices = self.prices(top["prices"][1]) if "prices" in top else {}
        self.warn_unpriced(prices, keys, declared)

        accounts = dict(declared)
        for key in keys:  # with no `accounts:` section, keys name accounts freely (uncapped)
            accounts.setdefault(key.account, Account(key.account, None, Window()))
        if not keys and require_auth:
            self.warnings.append(f"{self.path}: keys: no keys; every LLM request will be "
                                 "refused with 401")

        canonical: dict[str, Any] = {
            "version": 1,
            "require_auth": require_auth,
            "fallback_max_output": fallback,
            "unmetered_endpoints": unmetered,
            "models": {m: info.max_output for m, info in sorted(models.items())},
            "accounts": {a.id: [a.cap, a.window.label()] + _access_canon(a.access) for a in
                         sorted(accounts.values(), key=lambda a: a.id)},
            "keys": [[k.id, k.account, sorted(k.fingerprints), k.cap, k.window.label()]
                     + _access_canon(k.access)
                     for k in keys],
            "routes": [[r.host, r.path, r.api, r.stream_options] for r in routes],
        }
        counting = {m: [i.tokenizer, i.count_tokens] for m, i in sorted(models.items())
                    if i.tokenizer is not None or i.count_tokens is not None}
        if counting:  # absent without them: older digests stay the same
            canonical["model_counting"] = counting
        if unknown != "refuse":  # absent by default: older digests stay the same
            canonical["unknown_endpoints"] = unknown
        holders: list[Key | Account] = [*sorted(accounts.values(), key=lambda a: a.id), *keys]
        if prices or any(e.cap_usd is not None for e in holders):
            canonical["usd"] = {  # absent without USD budgets: older digests stay the same
                "prices": {m: p.label() for m, p in sorted(prices.items())},
                "caps": [[e.id, e.cap_usd, e.window_usd.label()] for e in holders],
            }
        digest = hashlib.sha256(
            json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        return Policy(
            path=self.path,
            version=1,
            require_auth=require_auth,
            fallback_max_output=fallback,
            models=types.MappingProxyType(models),
            accounts=types.MappingProxyType(accounts),
            keys=keys,
            unmetered_endpoints=unmetered,
            unknown_endpoints=unknown,
            digest=digest,
            warnings=tuple(self.warnings),
            routes=routes,
            prices=types.MappingProxyType(prices),
        )

    def models(self, node: yaml.Node) -> dict[str, ModelInfo]:
        out: dict[str, ModelInfo] = {}
        for name, (_, value) in self.mapping(node, "models", None).items():
            where = f"models.{name}"
            fields = self.mapping(value, where, _MODEL_FIELDS)
            sizes: dict[str, int | None] = {}
            for field_name in _MODEL_SIZES:
                sizes[field_name] = None
                if field_name in fields and self.scalar(
                        fields[field_name][1], f"{where}.{field_name}") is not None:
                    sizes[field_name] = self.integer(
                        fields[field_name][1], f"{where}.{field_name}", minimum=1,
                        what="a positive integer")
            out[name] = ModelInfo(sizes["max_output"], sizes["context_window"],
                                  self.one_of(fields, where, "tokenizer", ENCODINGS),
                                  self.one_of(fields, where, "count_tokens", _COUNT_TOKENS))
        return out

    def one_of(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], where: str, name: str,
               names: tuple[str, ...]) -> str | None:
        """An optional field whose value is one of `names` (null: not set)."""
        if name not in fields:
            return None
        node = fields[name][1]
        at = f"{where}.{name}"
        value = self.scalar(node, at)
        if value is None:
            return None
        if not checks.is_one_of(value, names):
            shown = f"`{value}`" if isinstance(value, str) and _PLAIN_WORD.match(
                value.replace("-", "_")) else f"({_describe(node)})"
            hint = checks.closest(str(value), names)
            raise self.fail(node, at, f"unknown {name} {shown}",
                            f"{f'did you mean `{hint}`? ' if hint else ''}write one of: "
                            f"{', '.join(names)}")
        return str(value)

    # -- USD budgets (seatbelt/usd/pricing.py) --

    def prices(self, node: yaml.Node) -> dict[str, Price]:
        """`prices: {MODEL: {input: USD, output: USD, cached_input: USD, cache_write: USD}}`,
        USD per 1M tokens; the cache prices default to the input price."""
        out: dict[str, Price] = {}
        for name, (_, value) in self.mapping(node, "prices", None).items():
            where = f"prices.{name}"
            fields = self.mapping(value, where, PRICE_FIELDS)
            for required in ("input", "output"):
                if required not in fields:
                    raise self.fail(value, f"{where}.{required}", "missing", f"add `{required}: "
                                    "USD_PER_1M_TOKENS` (e.g. 0.15)")
            values: dict[str, Any] = {}
            for field_name, (_, value_node) in fields.items():
                at = f"{where}.{field_name}"
                raw = self.scalar(value_node, at)
                try:
                    make_price(raw, 0)  # validates one number
                except PriceError as e:
                    raise self.fail(value_node, at, f"{e}, got {_describe(value_node)}",
                                    "write USD per 1M tokens as a number, e.g. 0.15") from None
                values[field_name] = raw
            out[name] = make_price(**values)
        return out

    def usd_cap(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], where: str
                ) -> dict[str, Any]:
        """`cap_usd` (USD, at most 6 decimals) and `window_usd` (default: the entry's
        `window`) as Key/Account keyword arguments."""
        window = self.window(fields, where)
        if "window_usd" in fields:
            window = self.window(fields, where, name="window_usd")
        cap_usd = None
        if "cap_usd" in fields:
            node = fields["cap_usd"][1]
            value = self.scalar(node, f"{where}.cap_usd")
            if value is not None:
                try:
                    cap_usd = usd_to_micro(value)
                except PriceError as e:
                    raise self.fail(node, f"{where}.cap_usd", f"{e}, got {_describe(node)}",
                                    "write US dollars as a number, e.g. 25 or 12.50") from None
        elif "window_usd" in fields:
            raise self.fail(fields["window_usd"][0], f"{where}.window_usd",
                            "window_usd without cap_usd", "add `cap_usd: USD` or remove it")
        if cap_usd is None:
            return {}  # the defaults: no USD cap (a USD-metered subject counts a balance)
        return {"cap_usd": cap_usd, "window_usd": window}

    def warn_unpriced(self, prices: dict[str, Price], keys: tuple[Key, ...],
                      accounts: dict[str, Account]) -> None:
        """A USD cap with no price at all refuses every request: say so at load."""
        if prices:
            return
        capped = [f"key {k.id}" for k in keys if k.cap_usd is not None]
        capped += [f"account {a.id}" for a in accounts.values() if a.cap_usd is not None]
        if capped:
            self.warnings.append(
                f"{self.path}: prices: cap_usd on {', '.join(capped[:3])} but no model has "
                "a price; their requests will be refused "
                "(model_not_allowed) until `prices:` names the models they use"
            )

    def routes(self, node: yaml.Node) -> tuple[RouteRule, ...]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "routes", f"expected a list, got {_describe(node)}",
                            "write each rule as a list item, e.g. `- host: NAME`")
        return tuple(self.route_rule(item, f"routes[{i}]") for i, item in enumerate(node.value))

    def route_rule(self, item: yaml.Node, where: str) -> RouteRule:
        fields = self.mapping(item, where, _ROUTE_FIELDS)
        values: dict[str, Any] = {}
        for name, (_, value_node) in fields.items():
            values[name] = (value_node, self.scalar(value_node, f"{where}.{name}"))
        host = path = api = stream_options = None
        if "host" in values:
            node, value = values["host"]
            if not isinstance(value, str) or not checks.is_host(value):
                raise self.fail(node, f"{where}.host", "must be a host name (no scheme, port "
                                "or path)", "write e.g. `api.example.com` or `*.example.com`")
            host = checks.norm_host(value)
        if "path" in values:
            node, value = values["path"]
            if not isinstance(value, str) or not value.strip().startswith(("/", "*")):
                raise self.fail(node, f"{where}.path", "must be a path starting with / or *",
                                "write e.g. `/llm/invoke` or `/openai/deployments/*`")
            # Matched against the normalised path: lowercase, no trailing slash.
            path = value.strip().lower()
            if not path.endswith("*"):
                path = path.rstrip("/") or "/"
        if "api" in values:
            node, value = values["api"]
            names = (*API_PATHS, NOT_AN_API)
            if value not in names:
                shown = f"`{value}`" if isinstance(value, str) and _PLAIN_WORD.match(
                    value.replace("-", "_")) else f"({_describe(node)})"
                close = difflib.get_close_matches(str(value), names, n=1)
                hint = f"did you mean `{close[0]}`? " if close else ""
                raise self.fail(node, f"{where}.api", f"unknown api {shown}",
                                f"{hint}write one of: {', '.join(names)}")
            api = value
        if "stream_options" in values:
            stream_options = self.boolean(values["stream_options"][0],
                                          f"{where}.stream_options",
                                          "write `stream_options: false` to never add "
                                          "stream_options on these routes")
        if host is None and path is None:
            raise self.fail(item, where, "the rule names neither host nor path",
                            "add `host:` and/or `path:` to say where it applies")
        if api is None and stream_options is None:
            raise self.fail(item, where, "the rule changes nothing",
                            "add `api:` and/or `stream_options:`")
        if api == NOT_AN_API:
            self.warnings.append(
                f"{self.path}:{_line(item)}: {where}: `api: none` lets matching requests pass "
                "unmetered; make sure no LLM traffic matches it"
            )
        return RouteRule(host, path, api, stream_options, _line(item))

    def accounts(self, node: yaml.Node) -> dict[str, Account]:
        out: dict[str, Account] = {}
        for name, (name_node, value) in self.mapping(node, "accounts", None).items():
            where = f"accounts.{name}"
            account_id = self.ident(name_node, where, "account id")
            fields = self.mapping(value, where, _ACCOUNT_FIELDS)
            out[account_id] = Account(account_id, self.cap(fields, where),
                                      self.window(fields, where),
                                      access_mod.parse(self, fields, where, kind="account"),
                                      **self.usd_cap(fields, where))
        return out

    def keys(self, node: yaml.Node, declared: dict[str, Account]) -> tuple[Key, ...]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "keys", f"expected a list, got {_describe(node)}",
                            "write each key as a list item starting with `- id: NAME`")
        keys: list[Key] = []
        ids: dict[str, int] = {}
        owners: dict[str, str] = {}  # fingerprint -> key id
        for i, item in enumerate(node.value):
            where = f"keys[{i}]"
            fields = self.mapping(item, where, _KEY_FIELDS)
            if "id" not in fields:
                raise self.fail(item, f"{where}.id", "missing", "add `id: NAME` to this key")
            key_id = self.ident(fields["id"][1], f"{where}.id", "key id")
            if key_id in ids:
                raise self.fail(fields["id"][1], f"{where}.id", f"key id `{key_id}` is already "
                                f"used by the key at line {ids[key_id]}",
                                "give every key its own id")
            ids[key_id] = _line(fields["id"][1])

            account = DEFAULT_ACCOUNT
            account_node = fields["account"][1] if "account" in fields else fields["id"][1]
            if "account" in fields:
                account = self.ident(account_node, f"{where}.account", "account id")
            if declared and account not in declared:
                raise self.fail(account_node, f"{where}.account",
                                f"account `{account}` is not declared under accounts",
                                f"declare `{account}` under accounts, or name one of: "
                                + ", ".join(sorted(declared)))

            access = access_mod.parse(self, fields, where, kind="key", key_id=key_id)
            fps = self.fingerprints(fields, item, where, optional=access.has_identity)
            for fp, fp_node, form in fps:
                if fp in owners and owners[fp] != key_id:
                    raise self.fail(fp_node, f"{where}.{form}", "the same credential is already "
                                    f"used by key `{owners[fp]}`",
                                    "give every key its own credential")
                owners[fp] = key_id
            keys.append(Key(
                id=key_id,
                account=account,
                fingerprints=tuple(dict.fromkeys(fp for fp, _, _ in fps)),
                cap=self.cap(fields, where),
                window=self.window(fields, where),
                access=access,
                **self.usd_cap(fields, where),
            ))
        return tuple(keys)

    def fingerprints(
        self, fields: dict[str, tuple[yaml.Node, yaml.Node]], item: yaml.Node, where: str,
        optional: bool = False,
    ) -> list[tuple[str, yaml.Node, str]]:
        """(fingerprint, node, field) per credential of a key; one or a list per form.
        optional: the key has another identity (proxy_auth_user, client_cert_sha256, ...)."""
        out: list[tuple[str, yaml.Node, str]] = []
        for form in ("credential_sha256", "credential"):
            if form not in fields:
                continue
            for value_node, at in self.items(fields[form][1], f"{where}.{form}"):
                value = self.scalar(value_node, at)
                if form == "credential_sha256":
                    if not isinstance(value, str) or not checks.SHA256.match(value):
                        raise self.fail(value_node, at, "must be 64 lowercase hex characters "
                                        "(a SHA-256)", "write the output of "
                                        "`printf %s 'CREDENTIAL' | sha256sum` (or ./run.sh hash)")
                    out.append((value, value_node, form))
                else:
                    if not isinstance(value, str) or not value.strip():
                        raise self.fail(value_node, at, "must be a non-empty string",
                                        "quote the credential, or better use credential_sha256")
                    if self.hashes_only:
                        raise self.fail(value_node, at, "plain credential while "
                                        "seatbelt_hashes_only is on", "replace it with "
                                        "credential_sha256 (./run.sh hash prints it)")
                    out.append((fingerprint(value), value_node, form))
                    self.warnings.append(
                        f"{self.path}:{_line(value_node)}: {at}: plain credential in the policy "
                        "file; fix: replace it with credential_sha256 (./run.sh hash prints it)"
                    )
        if not out and not optional:
            raise self.fail(item, where, "the key has no credential",
                            "add `credential_sha256: HEX` (./run.sh hash prints it), or an "
                            "identity: proxy_auth_user, client_cert_sha256 or client_cidr")
        return out


def main(argv: list[str] | None = None) -> int:
    """`check FILE`: validate a policy; `hash`: fingerprint the credential read from stdin."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["check"] and len(args) == 2:
        try:
            policy = load_policy(args[1])
        except PolicyError as e:
            print(e, file=sys.stderr)
            return 1
        for warning in policy.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"OK {policy.path}: {len(policy.keys)} keys, {len(policy.accounts)} accounts, "
              f"digest {policy.digest[:12]}")
        return 0
    if args == ["hash"]:
        credential = sys.stdin.read()
        if not credential.strip():
            print("hash: no credential on standard input", file=sys.stderr)
            return 1
        print(fingerprint(credential))
        return 0
    print("usage: python -m seatbelt.config.policy check FILE | hash  (credential on stdin)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
