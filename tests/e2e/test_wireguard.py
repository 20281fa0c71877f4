"""WireGuard interception: an app whose only route is a WireGuard tunnel to mitmproxy.

The namespaces of tests/e2e/test_transparent.py, without its nftables redirect:

  app 192.0.2.2 --veth-- 192.0.2.1 router 198.51.100.1 --veth-- 198.51.100.10 api
  wg 10.0.0.1 ==UDP==>   mitmdump --mode wireguard (userspace WireGuard server)

In the app namespace a real WireGuard client (Debian's wireguard-go, a userspace TUN device,
configured with `wg` from wireguard-tools) holds the client key mitmproxy wrote to its
confdir's wireguard.conf; the app's default route is that tunnel and the router does not
forward, so the only way to the API is through mitmproxy. The app is the one of
test_transparent.py (the real openai SDK, default client, mitmproxy's CA as its only trust).
Metering and refusals must match explicit mode: an unknown key 401, a capped key 429, a known
key served and metered with the usage the upstream reported.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e.conftest import Key, policy_text, tag, wait_for
from tests.e2e.test_transparent import (
    _SBIN,
    API_IP,
    HOST,
    IP,
    ROUTER_DOWN,
    HostStandIn,
    Netns,
    NetnsProxy,
    _need_root,
    host_cert,
    in_netns,
    run_app,
    sh,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WG, WG_GO = shutil.which("wg", path=_SBIN), shutil.which("wireguard-go", path=_SBIN)
TUNNEL_IP = "10.0.0.1"  # the client address of mitmproxy's own client configuration
UAPI = Path("/var/run/wireguard")  # where wireguard-go puts its control socket

METERED = Key("wg-metered", cap=100_000)
CAPPED = Key("wg-capped", cap=20)
UNKNOWN = "sk-unknown-" + "5" * 24


def _need_wireguard() -> None:
    """CI installs wireguard-go and wireguard-tools (.ci/run); elsewhere skip with the reason."""
    _need_root()
    if WG and WG_GO and Path("/dev/net/tun").exists():
        return
    why = "needs `wireguard-go`, `wg` (wireguard-tools) and /dev/net/tun for the client"
    if os.environ.get("CI"):
        pytest.fail(why + " (install them in .ci/run)")
    pytest.skip(why)


class WireGuardProxy(NetnsProxy):
    """mitmdump --mode wireguard in the router namespace; its keys in confdir/wireguard.conf."""

    def __init__(self, ns: str, workdir: Path, policy: str, upstream_ca: Path) -> None:
        super().__init__(ns, workdir, policy, mode="wireguard",
                         options={"ssl_verify_upstream_trusted_ca": str(upstream_ca)})

    def _listening(self) -> bool:
        """The WireGuard server is UDP: bound once our own UDP bind of its port fails."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", self.port))
            except OSError:
                return True
        return False

    def client_keys(self) -> tuple[str, str]:
        """(the client's private key, the server's public key), as mitmproxy generated them."""
        conf = json.loads((self.confdir / "wireguard.conf").read_text())
        out = subprocess.run([str(WG), "pubkey"], input=conf["server_key"], capture_output=True,
                             text=True, timeout=10, check=True)
        return conf["client_key"], out.stdout.strip()


class Tunnel:
    """wireguard-go in the app namespace, peered with the proxy; stopped whatever happens."""

    def __init__(self, net: Netns, workdir: Path) -> None:
        self.net, self.workdir = net, workdir
        self.name = f"sb{net.id}w"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "wireguard-go.log"

    def up(self, proxy: WireGuardProxy) -> Tunnel:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(IP), "netns", "exec", self.net.app, str(WG_GO), "-f", self.name],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for("wireguard-go's control socket",
                 lambda: self.proc is not None and self.proc.poll() is None
                 and (UAPI / f"{self.name}.sock").exists())
        private, server_public = proxy.client_keys()
        key_file = self.workdir / "client.key"
        key_file.touch(mode=0o600)
        key_file.write_text(private + "\n")
        app = (str(IP), "netns", "exec", self.net.app)
        sh(*app, WG, "set", self.name, "private-key", str(key_file), "peer", server_public,
           "endpoint", f"{ROUTER_DOWN}:{proxy.port}", "allowed-ips", "0.0.0.0/0")
        sh(IP, "-n", self.net.app, "addr", "add", f"{TUNNEL_IP}/32", "dev", self.name)
        sh(IP, "-n", self.net.app, "link", "set", self.name, "up")
        sh(IP, "-n", self.net.app, "route", "replace", "default", "dev", self.name)
        return self

    def transfer(self) -> tuple[int, int]:
        """Bytes (received, sent) by the client over the tunnel, as `wg show` counts them."""
        out = subprocess.run([str(IP), "netns", "exec", self.net.app, str(WG), "show",
                              self.name, "transfer"], capture_output=True, text=True,
                             timeout=10, check=True)
        _peer, rx, tx = out.stdout.split()
        return int(rx), int(tx)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        (UAPI / f"{self.name}.sock").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def wg_lab(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Netns, HostStandIn, WireGuardProxy, Tunnel]]:
    _need_wireguard()
    net = Netns()
    started: list[Any] = []
    try:
        net.up()
        work = tmp_path_factory.mktemp("wireguard")
        cert, key = host_cert(work)
        sock = in_netns(net.api, lambda: socket.create_server((API_IP, 443)))
        standin = HostStandIn(sock, cert, key).start()
        started.append(standin)
        proxy = WireGuardProxy(net.router, work / "proxy", policy_text([METERED, CAPPED]), cert)
        started.append(proxy)
        proxy.start()
        tunnel = Tunnel(net, work)
        started.append(tunnel)
        tunnel.up(proxy)
        yield net, standin, proxy, tunnel
    finally:
        for s in reversed(started):
            s.stop()
        net.down()


def test_wireguard_tunnel_is_metered_and_refused_as_in_explicit_mode(wg_lab: Any) -> None:
    net, standin, proxy, tunnel = wg_lab
    t = tag()
    served, refused, unknown = run_app(net, proxy.ca_path, [
        (METERED.credential, f"{t} #len:9", 9),
        (CAPPED.credential, f"{t} capped", 50),
        (UNKNOWN, f"{t} unknown", 5),
    ])
    # Three TLS sessions each way are kilobytes; a WireGuard handshake alone is 148 + 92 bytes.
    rx, tx = tunnel.transfer()
    assert rx > 3000 and tx > 3000, f"not through the tunnel: {rx=} {tx=}\n{tunnel.log()}"
    assert f"[{TUNNEL_IP}:" in proxy.log()  # mitmproxy saw the client at its tunnel address

    (up,) = standin.received(t)  # only the metered request reached the API
    assert up.tls and standin.sni and set(standin.sni) == {HOST}
    assert served == {"ok": [up.usage["prompt_tokens"], up.usage["completion_tokens"]]}
    (line,) = proxy.wait_audit(METERED.id, 1)
    assert line["outcome"] == "served" and line["usage_source"] == "reported"
    assert line["prompt_tokens"] + line["completion_tokens"] == up.spend
    assert proxy.row(METERED.id)["spent"] == up.spend

    assert refused["status"] == 429
    assert refused["headers"]["x-seatbelt-refused"] == "insufficient_quota"
    assert refused["headers"]["x-should-retry"] == "false"
    assert refused["body"]["error"]["code"] == "insufficient_quota"
    (cline,) = proxy.wait_audit(CAPPED.id, 1)  # one line: the SDK did not retry
    assert cline["outcome"] == "refused_quota"

    assert unknown["status"] == 401
    assert unknown["headers"]["x-seatbelt-refused"] == "invalid_api_key"
    assert unknown["headers"]["x-should-retry"] == "false"
    assert unknown["body"]["error"]["code"] == "invalid_api_key"

    m = proxy.metrics()
    assert m.value("seatbelt_spend_tokens_total", account="team", key=METERED.id) == up.spend
    assert m.value("seatbelt_requests_total", outcome="refused_quota", account="team",
                   key=CAPPED.id) == 1
    assert m.total("seatbelt_requests_total", outcome="unauthorized") == 1
    log = proxy.log()
    for secret in (METERED.credential, CAPPED.credential, UNKNOWN):
        assert secret not in log and secret not in json.dumps([refused, unknown])
