"""Who a request is and what its key may do: the operating fields of keys and accounts.

Policy side (read by `policy._Loader`): per key and per account

    enforce: false                 # shadow mode: meter, log would-be refusals, refuse nothing
    over_cap: clamp                # lower the output limit to what fits (default: refuse)
    min_output: 64                 # clamp only when at least this many output tokens fit
    models: [gpt-4o-mini, "gpt-4.1*"]   # allow-list (fnmatch globs); else 403 model_not_allowed
    disabled: true                 # 403 key_disabled

and per key only

    upstream_credential_env: OPENAI_API_KEY   # virtual key: the real credential, from the env
    upstream_hosts: [api.openai.com]          # ... swapped in only there; elsewhere 403
    proxy_auth_user: alice                    # identities besides the credential (see below)
    client_cert_sha256: [HEX, ...]
    client_cidr: [10.0.0.0/24, "::1/128"]
    max_concurrent: 4                         # fan-out limits, per proxy process
    rpm: 60
    expires: 2026-12-31T18:00:00Z             # RFC 3339, or a date (its 00:00 UTC): from
                                              # then on 401 key_expired

A key's own setting wins over its account's; `models` lists both apply (a model must pass
each). Identity precedence: a credential that matches a key; else mitmproxy's proxy-auth
user name; else the client certificate's SHA-256; else the longest client CIDR that holds
the client's address. No client header is read for identity.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import yaml

from seatbelt.config import checks

KEY_FIELDS = (
    "enforce", "over_cap", "min_output", "models", "disabled",
    "upstream_credential_env", "upstream_hosts",
    "proxy_auth_user", "client_cert_sha256", "client_cidr",
    "max_concurrent", "rpm", "expires",
)
ACCOUNT_FIELDS = ("enforce", "over_cap", "min_output", "models", "disabled")
DEFAULT_MIN_OUTPUT = 64

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^[^\s:]{1,128}$")
_IDENTITY_FIELDS = ("proxy_auth_user", "client_cert_sha256", "client_cidr")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret:
    """A real upstream credential: usable, but never shown by repr/str/format."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __reduce__(self) -> Any:  # never pickled into a saved flow or a cache
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class Access:
    """The operating fields of one key or account; None = not named here (inherit)."""

    enforce: bool | None = None
    over_cap: Literal["refuse", "clamp"] | None = None
    min_output: int | None = None
    models: tuple[str, ...] | None = None
    disabled: bool = False
    upstream_credential_env: str | None = None
    upstream_credential: Secret | None = field(default=None, repr=False, compare=False)
    upstream_hosts: tuple[str, ...] = ()
    proxy_auth_users: tuple[str, ...] = ()
    client_cert_sha256: tuple[str, ...] = ()
    client_cidrs: tuple[Network, ...] = ()
    max_concurrent: int | None = None
    rpm: int | None = None
    expires: float | None = None  # epoch seconds: refused (401 key_expired) from then on

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    @property
    def has_identity(self) -> bool:
        return bool(self.proxy_auth_users or self.client_cert_sha256 or self.client_cidrs)

    def canonical(self) -> list[Any] | None:
        """For the policy digest: None when nothing is set (old digests stay as they were)."""
        if self == NO_ACCESS:
            return None
        return [self.enforce, self.over_cap, self.min_output,
                sorted(self.models) if self.models is not None else None, self.disabled,
                self.upstream_credential_env, sorted(self.upstream_hosts),
                sorted(self.proxy_auth_users), sorted(self.client_cert_sha256),
                sorted(str(n) for n in self.client_cidrs), self.max_concurrent, self.rpm,
                *([] if self.expires is None else [self.expires])]


NO_ACCESS = Access()


@dataclass(frozen=True)
class Effective:
    """What applies to one request's key: its own settings over its account's."""

    enforce: bool
    clamp: bool
    min_output: int
    disabled: bool
    model_lists: tuple[tuple[str, ...], ...]

    def model_allowed(self, model: str | None) -> bool:
        for allowed in self.model_lists:
            if model is None or not checks.glob_matches(allowed, model):
                return False
        return True


def effective(key: Access, account: Access) -> Effective:
    def pick(name: str, default: Any) -> Any:
        for a in (key, account):
            value = getattr(a, name)
            if value is not None:
                return value
        return default

    return Effective(
        enforce=pick("enforce", True),
        clamp=pick("over_cap", "refuse") == "clamp",
        min_output=pick("min_output", DEFAULT_MIN_OUTPUT),
        disabled=key.disabled or account.disabled,
        model_lists=tuple(a.models for a in (key, account) if a.models is not None),
    )


host_allowed = checks.any_host_matches  # (patterns, host): the one host matcher


# -- identities -------------------------------------------------------------------------------


@dataclass
class IdentityIndex:
    """Lookups for the identities that are not credentials, built once per policy."""

    users: dict[str, Any] = field(default_factory=dict)
    certs: dict[str, Any] = field(default_factory=dict)
    networks: list[tuple[Network, Any]] = field(default_factory=list)  # longest prefix first

    @classmethod
    def build(cls, keys: Iterable[Any]) -> IdentityIndex:
        index = cls()
        for key in keys:
            a: Access = key.access
            for user in a.proxy_auth_users:
                index.users[user] = key
            for fp in a.client_cert_sha256:
                index.certs[fp] = key
            for net in a.client_cidrs:
                index.networks.append((net, key))
        index.networks.sort(key=lambda item: -item[0].prefixlen)
        return index

    def __bool__(self) -> bool:
        return bool(self.users or self.certs or self.networks)

    def match(self, proxy_user: str | None, cert_fp: str | None,
              address: str | None) -> tuple[Any, str] | tuple[None, None]:
        """(key, how) by proxy-auth user, then client certificate, then client address."""
        if proxy_user is not None and proxy_user in self.users:
            return self.users[proxy_user], "proxy_auth"
        if cert_fp is not None and cert_fp in self.certs:
            return self.certs[cert_fp], "client_cert"
        ip = _address(address)
        if ip is not None:
            for net, key in self.networks:
                if ip.version == net.version and ip in net:
                    return key, "client_cidr"
        return None, None


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def connection_identity(flow: Any) -> tuple[str | None, str | None, str | None]:
    """(proxy-auth user, client certificate SHA-256, client IP) from the connection only.

    `flow.metadata["proxyauth"]` is (user, password), set by mitmproxy's ProxyAuth addon
    only after it verified them; the certificate is the one the client proved in TLS."""
    user = None
    auth = flow.metadata.get("proxyauth")
    if isinstance(auth, (tuple, list)) and auth and isinstance(auth[0], str):
        user = auth[0]
    client = flow.client_conn
    cert_fp = None
    certs = getattr(client, "certificate_list", None) or ()
    if certs:
        try:
            cert_fp = certs[0].fingerprint().hex()
        except Exception:  # an unreadable certificate identifies nobody
            cert_fp = None
    peer = getattr(client, "peername", None)
    address = peer[0] if isinstance(peer, tuple) and peer else None
    return user, cert_fp, address


# -- parsing (called by policy._Loader, which owns line numbers and error wording) ------------


def parse(loader: Any, fields: dict[str, tuple[yaml.Node, yaml.Node]], where: str,
          *, kind: Literal["key", "account"], key_id: str | None = None) -> Access:
    """The operating fields of one key/account mapping; PolicyError (one line) on a mistake."""
    seen: dict[tuple[str, str], str] = loader.__dict__.setdefault("access_seen", {})
    values: dict[str, Any] = {}

    def node(name: str) -> yaml.Node:
        return fields[name][1]

    def boolean(name: str) -> bool:
        return bool(loader.boolean(node(name), f"{where}.{name}",
                                   f"write `{name}: true` or `{name}: false`"))

    def strings(name: str, check: Any, what: str, example: str,
                norm: Any = str.strip) -> tuple[str, ...]:
        n = node(name)
        out = []
        for item, at in loader.items(n, f"{where}.{name}"):
            value = loader.scalar(item, at)
            if not isinstance(value, str) or not check(norm(value)):
                raise loader.fail(item, at, f"must be {what}", f"write e.g. {example}")
            out.append((norm(value), item, at))
        if not out:
            raise loader.fail(n, f"{where}.{name}", "is an empty list",
                              f"name at least one, e.g. {example}, or remove `{name}`")
        if kind == "key" and name in _IDENTITY_FIELDS:
            for value, item, at in out:
                other = seen.get((name, value))
                if other is not None and other != key_id:
                    raise loader.fail(item, at, f"the same {name} is already used by key "
                                      f"`{other}`", "give every identity to one key only")
                seen[(name, value)] = key_id or ""
        return tuple(dict.fromkeys(v for v, _, _ in out))

    if "enforce" in fields:
        values["enforce"] = boolean("enforce")
    if "disabled" in fields:
        values["disabled"] = bool(boolean("disabled"))
    if "over_cap" in fields:
        value = loader.scalar(node("over_cap"), f"{where}.over_cap")
        if value not in ("refuse", "clamp"):
            raise loader.fail(node("over_cap"), f"{where}.over_cap", "must be refuse or clamp",
                              "write `over_cap: clamp` (or refuse, the default)")
        values["over_cap"] = value
    for name in ("min_output", "max_concurrent", "rpm"):
        if name in fields:
            values[name] = loader.integer(node(name), f"{where}.{name}", minimum=1,
                                          what="a positive integer")
    if "models" in fields:
        values["models"] = strings("models", lambda v: bool(v) and v.isprintable(),
                                   "a model name or a list of them", "`models: [gpt-4o-mini]`")
    if "upstream_hosts" in fields:
        hosts = strings("upstream_hosts", checks.is_host,
                        "a host name or a list of them (no scheme, port or path)",
                        "`upstream_hosts: [api.openai.com]`")
        values["upstream_hosts"] = tuple(checks.norm_host(h) for h in hosts)
    if "upstream_credential_env" in fields:
        n = node("upstream_credential_env")
        at = f"{where}.upstream_credential_env"
        name = loader.scalar(n, at)
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise loader.fail(n, at, "must be an environment variable name",
                              "write e.g. `upstream_credential_env: OPENAI_API_KEY`")
        secret = os.environ.get(name, "").strip()
        if not secret:
            raise loader.fail(n, at, f"the environment variable {name} is not set or empty",
                              f"export {name} with the real credential before starting "
                              "the proxy")
        values["upstream_credential_env"] = name
        values["upstream_credential"] = Secret(secret)
        if "upstream_hosts" not in values:
            raise loader.fail(n, at, "a virtual key needs `upstream_hosts`",
                              "add `upstream_hosts: [HOST, ...]`: the only hosts that may "
                              "receive the real credential")
    elif "upstream_hosts" in values:
        raise loader.fail(node("upstream_hosts"), f"{where}.upstream_hosts",
                          "has no effect without upstream_credential_env",
                          "add `upstream_credential_env: NAME` or remove upstream_hosts")
    if "proxy_auth_user" in fields:
        values["proxy_auth_users"] = strings("proxy_auth_user", lambda v: bool(_USER.match(v)),
                                             "a user name or a list of them",
                                             "`proxy_auth_user: alice`")
    if "client_cert_sha256" in fields:
        values["client_cert_sha256"] = strings(
            "client_cert_sha256", lambda v: bool(checks.SHA256.match(v)),
            "a certificate's SHA-256 (64 hex) or a list of them",
            "the output of `openssl x509 -noout -fingerprint -sha256 -in CERT`",
            norm=lambda v: v.strip().lower().replace(":", ""))
    if "client_cidr" in fields:
        nets = []
        for text in strings("client_cidr", _is_network, "an address or CIDR, or a list of them",
                            "`client_cidr: [10.1.0.0/16]`", norm=_norm_network):
            nets.append(ipaddress.ip_network(text, strict=False))
        values["client_cidrs"] = tuple(nets)
    if "expires" in fields:
        values["expires"] = _expires(loader, node("expires"), f"{where}.expires")
        if values["expires"] <= datetime.datetime.now(datetime.timezone.utc).timestamp():
            loader.warnings.append(f"{where}.expires: {format_expiry(values['expires'])} is "
                                   "in the past: the key is refused (401 key_expired)")
    return Access(**values)


def format_expiry(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _expires(loader: Any, node: yaml.Node, at: str) -> float:
    """RFC 3339 with a zone, or a date: 00:00 UTC of that day. A time without a zone is
    ambiguous across proxies: refused. Read from the node's text, not YAML's timestamp type
    (whose constructor raises a bare ValueError on `2026-13-01`)."""
    if not isinstance(node, yaml.ScalarNode):
        loader.scalar(node, at)  # raises its "expected a single value" error
    fix = "write e.g. `expires: 2026-12-31T18:00:00Z` or `expires: 2026-12-31` (00:00 UTC)"
    text = str(node.value).strip().replace("z", "Z")
    try:
        value = (datetime.date.fromisoformat(text) if len(text) == 10
                 else datetime.datetime.fromisoformat(text))
    except ValueError:
        raise loader.fail(node, at, "must be an RFC 3339 time or a date", fix) from None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise loader.fail(node, at, "has no time zone", fix.replace("or `", "(with Z or "
                              "+HH:MM) or `"))
        return value.timestamp()
    return datetime.datetime(value.year, value.month, value.day,
                             tzinfo=datetime.timezone.utc).timestamp()


def _norm_network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        return text.strip()


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
