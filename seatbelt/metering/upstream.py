"""Closing the upstream connection of a stream seatbelt has cut off (cutoff.py).

mitmproxy has no hook for it: `flow.kill()` is not seen while a response streams (its own
docstring in mitmproxy/flow.py says so), and its HTTP layer closes the upstream only when
the client leaves. So the connection's transport is closed the way mitmproxy's connection
handler closes it (`ConnectionHandler.handle_connection` in mitmproxy/proxy/server.py):
the upstream then reads a closed socket, stops generating, and mitmproxy reports the
broken body through the `error` hook, where the request settles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import connection, ctx, http
from mitmproxy.addons.proxyserver import Proxyserver

logger = logging.getLogger("seatbelt")


def close_upstream(client_id: str, server: connection.Server) -> bool:
    """Close a client connection's server connection; False when it cannot be done.

    An HTTP/2 upstream connection carries the client connection's other streams too, so it
    is left open: the cut stream's bytes are then dropped as they arrive."""
    if server.alpn == b"h2":
        return False
    manager = ctx.master.addons.get("proxyserver")
    if not isinstance(manager, Proxyserver):
        return False
    handler = manager.connections.get(client_id)
    io = handler.transports.get(server) if handler is not None else None
    if io is None or io.writer is None:
        return False
    io.writer.close()
    return True


def closer(flow: http.HTTPFlow) -> Callable[[], None]:
    """The scanner's on_cut for this flow. It holds the connections, not the flow: the flow
    holds the scanner, and a cycle would leave every flow to the garbage collector."""
    flow_id, client_id, server = flow.id, flow.client_conn.id, flow.server_conn

    def close() -> None:
        try:
            if not close_upstream(client_id, server):
                logger.info(f"seatbelt: flow {flow_id} cut off; its upstream connection "
                            "stays open (shared or gone): the rest of the stream is dropped")
        except Exception as e:  # closing is best effort; the stream is already ended
            logger.warning(f"seatbelt: closing the upstream of flow {flow_id} failed "
                           f"({type(e).__name__})")

    return close
