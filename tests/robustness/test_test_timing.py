"""SEATBELT_TEST_LEDGER_TIMING cannot weaken a proxy silently or by a typo."""

from __future__ import annotations

import pytest

from seatbelt.runtime import ledger_timing


def test_unset_means_production_timing() -> None:
    assert ledger_timing(None) == {} and ledger_timing("") == {}


def test_parsed() -> None:
    assert ledger_timing("lease=1,max_hold=4,heartbeat=0.2") == {
        "lease_seconds": 1.0, "max_hold_seconds": 4.0, "heartbeat_seconds": 0.2}


@pytest.mark.parametrize("bad", ["lease", "lease=x", "lease=-1", "lease=0", "leese=3",
                                 "lease=1e9", "lease=1,heartbeat=0.5", "heartbeat=20"])
def test_anything_odd_stops_start_up(bad: str) -> None:
    with pytest.raises(ValueError, match="SEATBELT_TEST_LEDGER_TIMING"):
        ledger_timing(bad)
