"""Closing a cut-off stream's upstream connection (seatbelt/metering/upstream.py), against
mitmproxy's own Proxyserver addon in a test master."""

from __future__ import annotations

from types import SimpleNamespace

from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from seatbelt.metering.upstream import close_upstream, closer


class Writer:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_the_flows_upstream_transport_is_closed() -> None:
    ps = Proxyserver()
    with taddons.context(ps):
        flow = tflow.tflow(resp=True)
        writer = Writer()
        ps.connections[flow.client_conn.id] = SimpleNamespace(  # type: ignore[assignment]
            transports={flow.server_conn: SimpleNamespace(writer=writer)})
        assert close_upstream(flow.client_conn.id, flow.server_conn) is True and writer.closed == 1


def test_a_shared_or_gone_connection_is_left_alone() -> None:
    ps = Proxyserver()
    with taddons.context(ps):
        flow = tflow.tflow(resp=True)
        # its client connection is gone:
        assert close_upstream(flow.client_conn.id, flow.server_conn) is False
        writer = Writer()
        ps.connections[flow.client_conn.id] = SimpleNamespace(  # type: ignore[assignment]
            transports={flow.server_conn: SimpleNamespace(writer=writer)})
        flow.server_conn.alpn = b"h2"  # carries the client's other streams too
        assert close_upstream(flow.client_conn.id, flow.server_conn) is False and writer.closed == 0
        closer(flow)()  # says so in the log, raises nothing


def test_the_closer_keeps_no_reference_to_the_flow() -> None:
    # The flow holds the scanner that holds the closer: a reference back would make a cycle.
    flow = tflow.tflow(resp=True)
    cells = [c.cell_contents for c in closer(flow).__closure__ or ()]
    assert cells and all(c is not flow for c in cells)


def test_without_a_proxyserver_nothing_is_closed() -> None:
    with taddons.context():
        flow = tflow.tflow(resp=True)
        assert close_upstream(flow.client_conn.id, flow.server_conn) is False
