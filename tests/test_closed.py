"""seatbelt/closed.py: when seatbelt cannot be imported, nothing is forwarded."""

from __future__ import annotations

import json

from mitmproxy import optmanager
from mitmproxy.test import taddons, tflow

from seatbelt.closed import Closed, given_strings
from seatbelt.config.options import OPTIONS


def test_closed_declares_the_options_reports_once_and_refuses_every_request(caplog) -> None:
    closed = Closed("No module named 'yaml'; fix: ...")
    with taddons.context(closed) as tctx:
        assert set(OPTIONS) <= set(tctx.options.keys())
        tctx.configure(closed, seatbelt_policy="x.yaml")
        tctx.configure(closed, seatbelt_audit="")
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert [r.getMessage() for r in errors] == [
            "seatbelt: cannot start: No module named 'yaml'; fix: ..."]
        flow = tflow.tflow()
        closed.request(flow)
        assert flow.response is not None and flow.response.status_code == 503
        assert flow.response.headers["x-seatbelt-refused"] == "ledger_unavailable"
        assert "yaml" in json.loads(flow.response.content)["error"]["message"]


def test_given_strings_reads_mitmproxys_deferred_values() -> None:
    opts = optmanager.OptManager()
    opts.set("seatbelt_policy=a", "seatbelt_policy=b", "seatbelt_audit", defer=True)
    assert given_strings(opts.deferred["seatbelt_policy"]) == ["a", "b"]
    assert given_strings(opts.deferred["seatbelt_audit"]) == []
    assert given_strings("typed") is None
