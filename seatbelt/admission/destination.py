"""Where a request really goes, as opposed to where its client says it goes (issue 14,
item 4).

mitmproxy connects to `request.host`: the reverse target, the CONNECT or absolute-form
host, or the transparent mode's original destination (proxy/layers/http sets it from the
connection, never from the Host header). When that is an IP address the TLS server name
names the host (mitmproxy verifies the upstream certificate against it unless
`ssl_insecure`). The Host header is the client's word only: `routes:` rules never match it,
and on an LLM route a Host header naming another host is refused (a shared front end may
route by it).
"""

from __future__ import annotations

import functools
import ipaddress

from mitmproxy import http

from seatbelt.codec.headers import host_header
from seatbelt.config.access import host_allowed
from seatbelt.config.policy import Policy

HOST_MISMATCH = "host_mismatch"  # the endpoint of a "refused" route: see host_mismatch()

# Modes where the client (explicit proxy, SOCKS) or the operator (reverse) names the
# destination. By `ProxyMode.type_name` (each of mitmproxy's mode classes sets it):
# isinstance() against those ABCMeta classes cost ~1 us per request.
_NAMED_DESTINATION = frozenset({"regular", "reverse", "upstream", "socks5"})


@functools.lru_cache(maxsize=1024)  # a request asks 2-4 times, of a handful of hosts
def is_ip(host: str) -> bool:
    if ":" not in host and not host.replace(".", "").isdigit():
        return False  # a name: ip_address() would take ~3 us to raise
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def destination(flow: http.HTTPFlow) -> str:
    """The host name (or IP) mitmproxy connects to for this request, lowercase."""
    host = flow.request.host.strip("[]")
    if is_ip(host) and flow.client_conn.sni:
        host = flow.client_conn.sni  # mitmproxy sends it upstream as the server name
    return host.lower().rstrip(".")


def header_host(flow: http.HTTPFlow) -> str | None:
    """The host name the Host header (or HTTP/2 :authority) names, lowercase, no port."""
    value = host_header(flow.request)
    if not value:
        return None
    if "," in value or len(value.split()) != 1:
        # Sent twice (read folded, "a, b") or a list: not one host. Its whole text is
        # what it names, so it equals no destination: a front end could take either.
        return value.strip().lower() or None
    if value.startswith("["):
        name = value[1:].split("]", 1)[0]
    else:
        name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return name.lower().rstrip(".") or None


def host_mismatch(flow: http.HTTPFlow) -> str | None:
    """The Host header's host when it names another host than the destination, else None.

    Where the OS handed the connection over (transparent, WireGuard, local capture), a
    bare IP with no TLS server name names no host to compare with: the Host header cannot
    be checked there. Where the client named the destination (explicit proxy, SOCKS) or
    the operator did (reverse), it is compared whatever it is."""
    named = header_host(flow)
    if named is None:
        return None
    dest = destination(flow)
    if named == dest:
        return None
    if (is_ip(dest) and not is_ip(named)
            and flow.client_conn.proxy_mode.type_name not in _NAMED_DESTINATION):
        return None
    return named


def is_reverse(flow: http.HTTPFlow) -> bool:
    return flow.client_conn.proxy_mode.type_name == "reverse"


def on_llm_host(flow: http.HTTPFlow, policy: Policy | None) -> bool:
    """True in reverse mode (the target is the LLM server) and for hosts the policy names."""
    if is_reverse(flow):
        return True
    if policy is None:
        return False
    return bool(policy.llm_hosts) and host_allowed(policy.llm_hosts, destination(flow))
