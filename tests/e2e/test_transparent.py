"""Transparent interception: an app that only knows the API's host name, redirected by nftables.

Three network namespaces made here, addresses only inside them (TEST-NET ranges):

  app 192.0.2.2 --veth-- 192.0.2.1 router 198.51.100.1 --veth-- 198.51.100.10 api
                         (nft redirect :443 -> mitmdump --mode transparent)

The app runs the real openai SDK with its default client, `https://api.seatbelt.test` (resolved
by the app namespace's /etc/hosts) and mitmproxy's CA as its only trust. The stand-in serves TLS
with a certificate for that name and records the SNI it was asked for; mitmdump verifies it
against that certificate (no ssl_insecure). Metering and refusals must match explicit mode.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from tests.e2e.conftest import REPO, Key, Proxy, policy_text, tag
from tests.standin import StandIn

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOST = "api.seatbelt.test"
API_IP, ROUTER_UP, ROUTER_DOWN, APP_IP = "198.51.100.10", "198.51.100.1", "192.0.2.1", "192.0.2.2"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_SBIN = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # root's tools, whatever PATH says
IP, NFT = shutil.which("ip", path=_SBIN), shutil.which("nft", path=_SBIN)

METERED = Key("tp-metered", cap=100_000)
CAPPED = Key("tp-capped", cap=20)
UNKNOWN = "sk-unknown-" + "3" * 24


def _need_root() -> None:
    """CI is root and must run this; a local non-root run skips with the reason."""
    if os.geteuid() == 0 and IP and NFT:
        return
    why = "needs root, `ip` (iproute2) and `nft` (nftables) to build network namespaces"
    if os.environ.get("CI"):
        pytest.fail(why + " (CI runs as root: install them in .ci/run)")
    pytest.skip(why)


def sh(*args: str | None) -> None:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{' '.join(map(str, args))}: {out.stderr.strip()}"


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run fn in a thread moved into namespace `ns` (setns changes only the calling thread;
    sockets and child processes made there stay in it)."""
    result: list[Any] = []

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                result.append(OSError(ctypes.get_errno(), f"setns {ns}"))
                return
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as e:  # handed back to the caller below
            result.append(e)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class Netns:
    """app / router / api namespaces and their veth pairs; removed whatever happens."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(3)
        self.app, self.router, self.api = (f"sb{self.id}-{n}" for n in ("app", "rt", "api"))
        self.etc = Path("/etc/netns") / self.app

    def up(self) -> Netns:
        for ns in (self.app, self.router, self.api):
            sh(IP, "netns", "add", ns)
            sh(IP, "-n", ns, "link", "set", "lo", "up")
        self._link(f"sb{self.id}a", self.app, APP_IP, f"sb{self.id}r", self.router, ROUTER_DOWN)
        self._link(f"sb{self.id}u", self.router, ROUTER_UP, f"sb{self.id}p", self.api, API_IP)
        sh(IP, "-n", self.app, "route", "add", "default", "via", ROUTER_DOWN)
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text(f"127.0.0.1 localhost\n{API_IP} {HOST}\n")
        return self

    def _link(self, a: str, ns_a: str, ip_a: str, b: str, ns_b: str, ip_b: str) -> None:
        sh(IP, "link", "add", a, "netns", ns_a, "type", "veth", "peer", b, "netns", ns_b)
        for dev, ns, ip in ((a, ns_a, ip_a), (b, ns_b, ip_b)):
            sh(IP, "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh(IP, "-n", ns, "link", "set", dev, "up")

    def redirect(self, port: int) -> None:
        """What an operator adds on the gateway: the app's HTTPS goes to mitmdump."""
        rules = textwrap.dedent(f"""
            table ip seatbelt {{
              chain pre {{
                type nat hook prerouting priority dstnat;
                iifname "sb{self.id}r" tcp dport 443 redirect to :{port}
              }}
            }}
        """)
        out = subprocess.run([str(IP), "netns", "exec", self.router, str(NFT), "-f", "-"],
                             input=rules, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr

    def down(self) -> None:
        for ns in (self.app, self.router, self.api):
            subprocess.run([str(IP), "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(self.etc, ignore_errors=True)


def host_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST only (mitmdump trusts exactly this one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "host-cert.pem", directory / "host-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class HostStandIn(StandIn):
    """The stand-in on API_IP:443 inside the api namespace, serving HOST's certificate and
    recording every SNI it is asked for."""

    def __init__(self, sock: socket.socket, cert: Path, key: Path) -> None:
        super().__init__()
        self.sock, self.cert, self.key = sock, cert, key
        self.sni: list[str | None] = []

    async def _start(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = lambda _s, name, _c: self.sni.append(name)
        self._servers.append(await asyncio.start_server(self._secure, sock=self.sock, ssl=ctx))


class NetnsProxy(Proxy):
    """mitmdump started from a thread inside the router namespace (so it runs there)."""

    def __init__(self, ns: str, workdir: Path, policy: str, **kw: Any) -> None:
        super().__init__(workdir, policy, **kw)
        self.ns = ns

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--listen-host") + 1] = "0.0.0.0"
        return cmd

    def start(self, timeout: float = 30.0) -> Proxy:
        return in_netns(self.ns, lambda: super(NetnsProxy, self).start(timeout))

    def metrics_text(self) -> str:
        return in_netns(self.ns, super().metrics_text)


APP = textwrap.dedent("""
    import json, sys, openai
    out = []
    for cred, text, limit in json.loads(sys.argv[1]):
        client = openai.OpenAI(base_url=f"https://{sys.argv[2]}/v1", api_key=cred)
        try:
            r = client.chat.completions.create(model="gpt-4o-mini", max_tokens=limit,
                messages=[{"role": "user", "content": text}])
            out.append({"ok": [r.usage.prompt_tokens, r.usage.completion_tokens]})
        except openai.APIStatusError as e:
            out.append({"status": e.status_code, "body": e.response.json(),
                        "headers": dict(e.response.headers)})
    print(json.dumps(out))
""")


def run_app(net: Netns, ca: Path, calls: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """The unmodified app in its namespace: default SDK client, default retries, no proxy."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(SSL_CERT_FILE=str(ca), PYTHONPATH=str(REPO))
    out = subprocess.run([str(IP), "netns", "exec", net.app, sys.executable, "-c", APP,
                          json.dumps(calls), HOST], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Netns, HostStandIn, Proxy]]:
    _need_root()
    net = Netns()
    started: list[Any] = []
    try:
        net.up()
        cert, key = host_cert(tmp_path_factory.mktemp("hostcert"))
        sock = in_netns(net.api, lambda: socket.create_server((API_IP, 443)))
        standin = HostStandIn(sock, cert, key).start()
        started.append(standin)
        proxy = NetnsProxy(net.router, tmp_path_factory.mktemp("transparent"),
                           policy_text([METERED, CAPPED]), mode="transparent",
                           options={"ssl_verify_upstream_trusted_ca": str(cert)})
        started.append(proxy)
        proxy.start()
        net.redirect(proxy.port)
        yield net, standin, proxy
    finally:
        for s in reversed(started):
            s.stop()
        net.down()


def test_transparent_https_is_metered_and_refused_as_in_explicit_mode(lab: Any) -> None:
    net, standin, proxy = lab
    t = tag()
    served, refused, unknown = run_app(net, proxy.ca_path, [
        (METERED.credential, f"{t} #len:9", 9),
        (CAPPED.credential, f"{t} capped", 50),
        (UNKNOWN, f"{t} unknown", 5),
    ])
    (up,) = standin.received(t)
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
    assert CAPPED.credential not in json.dumps(refused)
    (cline,) = proxy.wait_audit(CAPPED.id, 1)  # one line: the SDK did not retry
    assert cline["outcome"] == "refused_quota"

    assert unknown["status"] == 401  # and never reached the API: received(t) is one request
    assert unknown["headers"]["x-seatbelt-refused"] == "invalid_api_key"
    assert unknown["body"]["error"]["code"] == "invalid_api_key"
    assert UNKNOWN not in json.dumps(unknown) and UNKNOWN not in proxy.log()

    m = proxy.metrics()
    assert m.value("seatbelt_spend_tokens_total", account="team", key=METERED.id) == up.spend
    assert m.value("seatbelt_requests_total", outcome="refused_quota", account="team",
                   key=CAPPED.id) == 1
    assert CAPPED.credential not in proxy.log() and METERED.credential not in proxy.log()
