"""`python -m tests.standin --port N`: run the stand-in LLM API on its own, for poking at it."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from tests.standin.server import StandIn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.standin", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="plain HTTP port (0: any)")
    parser.add_argument("--tls-port", type=int, default=None, help="also serve TLS on this port")
    args = parser.parse_args()
    server = StandIn(port=args.port, tls=args.tls_port is not None, tls_port=args.tls_port or 0)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"stand-in LLM API at {server.url}", flush=True)
    if server.tls:
        print(f"  and {server.tls_url} (self-signed: {server.cert_path})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
