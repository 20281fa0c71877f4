"""The explicit-proxy-with-TLS load (the main deployment): CONNECT, then TLS through the proxy.

    python -m bench.tls --proxy PORT --target 127.0.0.1:PORT --ca CA.pem --body json|sse
                        --connections N --seconds S [--header NAME:VALUE ...]

wrk cannot send CONNECT, so this is a small asyncio load client: N keep-alive connections,
each CONNECTs through the proxy once, does TLS with the proxy's certificate for the target
(trusting only the CA given: mitmproxy's), then POSTs the benchmark request back to back,
reading every answer whole (Content-Length or chunked); the first answer on each connection
must be the upstream's exact bytes, else the run counts an error. With `--proxy 0` it talks
TLS to the target directly (the upstream alone). Prints one JSON line: requests, seconds,
rps, p50_ms, p99_ms, errors, non_2xx, client_cpu (its CPU seconds per second: near 1, the
client is the limit). The upstream side (bench/upstream.py --tls-cert) needs a certificate:
`make_cert` writes a self-signed one for 127.0.0.1 at bench start.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.clients import request_body
from bench.proxies import REPO
from bench.upstream import JSON_BODY, SSE_BODY
from bench.wrk import pin

HOST = "127.0.0.1"


@dataclass
class TlsResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    client_cpu: float = 0.0  # the client's CPU seconds per wall second: near 1, it limits


    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.errors == 0 and self.non_2xx == 0


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (mitmproxy is told to trust exactly it)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seatbelt bench upstream")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream-cert.pem", directory / "upstream-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def request_bytes(target: str, body: str, headers: dict[str, str]) -> bytes:
    data = request_body(body == "sse")
    head = ["POST /v1/chat/completions HTTP/1.1", f"Host: {target}",
            "Content-Type: application/json", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


async def read_response(r: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response whole: (status, body with any chunking removed)."""
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        j = lower.find(b"\r\n", i + 2)
        return status, await r.readexactly(int(lower[i + 17:j]))
    if b"chunked" not in lower:
        raise ValueError("a response without length or chunking")
    parts = []
    while True:
        size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
        parts.append((await r.readexactly(size + 2))[:-2])
        if size == 0:
            return status, b"".join(parts)


async def open_tunnel(proxy: int, target: str, ctx: ssl.SSLContext
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP to the proxy, CONNECT target, then TLS inside (or TLS straight to the target)."""
    host, port = target.rsplit(":", 1)
    if not proxy:
        return await asyncio.open_connection(host, int(port), ssl=ctx)
    r, w = await asyncio.open_connection(HOST, proxy)
    w.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await r.readuntil(b"\r\n\r\n")
    if int(head[9:12]) != 200:
        raise ConnectionError(f"CONNECT answered {head[:40]!r}")
    await w.start_tls(ctx, server_hostname=host)
    return r, w


async def load(args: argparse.Namespace) -> TlsResult:
    """Open every connection (CONNECT + both TLS handshakes are not timed), then drive them
    all for args.seconds."""
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    request = request_bytes(args.target, args.body, dict(h.split(":", 1) for h in args.header))
    expected = SSE_BODY if args.body == "sse" else JSON_BODY
    times: list[float] = []
    counts = {"errors": 0, "non_2xx": 0}
    opened = await asyncio.gather(*(open_tunnel(args.proxy, args.target, ctx)
                                    for _ in range(args.connections)), return_exceptions=True)
    streams = [s for s in opened if not isinstance(s, BaseException)]
    counts["errors"] += len(opened) - len(streams)
    stop = time.monotonic() + args.seconds

    async def drive(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            first = True
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                w.write(request)
                status, body = await read_response(r)
                times.append(time.perf_counter() - t0)
                counts["non_2xx"] += not 200 <= status < 400
                if first and body != expected:  # each connection checks the bytes once
                    raise ValueError(f"not the upstream's bytes: {body[:200]!r}")
                first = False
        except (OSError, ValueError, asyncio.IncompleteReadError):
            counts["errors"] += 1
        finally:
            w.close()

    t0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.gather(*(drive(r, w) for r, w in streams))
    seconds = time.monotonic() - t0
    cpu = round((time.process_time() - cpu0) / seconds, 2)
    ms = sorted(t * 1e3 for t in times) or [0.0]
    return TlsResult(requests=len(times), seconds=round(seconds, 3),
                     rps=round(len(times) / seconds, 1),
                     p50_ms=round(statistics.median(ms), 3),
                     p99_ms=round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
                     client_cpu=cpu, **counts)


def run(proxy: int, target: str, ca: Path, body: str, headers: dict[str, str], *,
        connections: int, seconds: float, cpus: set[int] | None = None) -> TlsResult:
    """One load run in its own process (pinned beside the upstream, like wrk)."""
    cmd = [sys.executable, "-m", "bench.tls", "--proxy", str(proxy), "--target", target,
           "--ca", str(ca), "--body", body, "--connections", str(connections),
           "--seconds", str(seconds)]
    for k, v in headers.items():
        cmd += ["--header", f"{k}:{v}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 60,
                         preexec_fn=pin(cpus))
    if out.returncode != 0:
        raise RuntimeError(f"bench.tls failed ({out.returncode}): {out.stderr[-1500:]}")
    return TlsResult(**json.loads(out.stdout))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.splitlines()[0])
    p.add_argument("--proxy", type=int, required=True, help="proxy port (0: no proxy)")
    p.add_argument("--target", required=True, help="HOST:PORT of the TLS upstream")
    p.add_argument("--ca", required=True, help="the only CA the client trusts")
    p.add_argument("--body", choices=("json", "sse"), default="json")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--header", action="append", default=[], help="NAME:VALUE")
    res = asyncio.run(load(p.parse_args(argv)))
    print(json.dumps(res.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
