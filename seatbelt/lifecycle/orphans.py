"""Holds a heartbeat charged whole as `orphaned`: one audit line and the metrics for each.

Why here: the ledger reclaims them (its heartbeat() returns them), but the audit log and the
metrics must say so too, or the audit does not reconcile with the ledger after a crash and
the SeatbeltOrphanedSettlements alert (deploy/prometheus/alerts.yml) can never fire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from seatbelt.ledger.base import HoldInfo
from seatbelt.metering.meter import Meter
from seatbelt.records.audit import AuditLog, AuditRecord
from seatbelt.records.metrics import Metrics
from seatbelt.usd.pricing import to_usd

logger = logging.getLogger("seatbelt")


def is_usd(info: HoldInfo) -> bool:
    """A USD hold (seatbelt/usd/money.py): subjects usd:key:ID, amount in micro-dollars."""
    return bool(info.subjects) and all(s.startswith("usd:") for s in info.subjects)


def subject_names(info: HoldInfo) -> dict[str, str]:
    """{"key": ID, "account": NAME} from a hold's subjects (key:ID, account:NAME)."""
    names = (s.removeprefix("usd:") for s in info.subjects)
    return dict(n.split(":", 1) for n in names if ":" in n)


def orphan_record(info: HoldInfo, meter: Meter | None, *, now: float) -> dict[str, Any]:
    """The audit line of a reclaimed hold: per flow (or `hold:<id>` when no live request
    of this proxy owns it), the last line says what was charged; an orphan's is `reserved`
    (a later settle of the same flow lowers it and writes the usual line)."""
    usd = is_usd(info)
    names = subject_names(info)
    return AuditRecord.orphaned(
        flow_id=meter.flow_id if meter else f"hold:{info.hold_id}",
        account=meter.account if meter else names.get("account"),
        key=meter.key if meter else names.get("key"),
        credential_fp=meter.credential_fp if meter else None,
        provider=meter.route.provider if meter else None,
        host=meter.host if meter else None, path=meter.path if meter else None,
        model=meter.model if meter else None, stream=meter.facts.stream if meter else False,
        reserved=None if usd else info.amount, duration_s=round(now - info.created, 6),
        edits=tuple(meter.edits) if meter else (),
        cost_usd=to_usd(info.amount) if usd else None,
    ).as_line()


def meters_by_hold(meters: Iterable[Meter]) -> dict[str, Meter]:
    """Each live request's token and USD hold ids -> its meter."""
    out: dict[str, Meter] = {}
    for m in meters:
        if m.hold_id is not None:
            out[m.hold_id] = m
        if m.usd_hold_id:
            out[m.usd_hold_id] = m
    return out


def record_reclaimed(reclaimed: Iterable[HoldInfo], meters: Mapping[str, Meter],
                     audit: AuditLog, metrics: Metrics) -> None:
    """Log, audit and count every hold a heartbeat (or open()) just charged as orphaned.

    Metrics: a token hold counts one `seatbelt_settlements_total{usage_source="orphaned"}`.
    When no live request of this proxy owns it (its proxy died), its whole amount is also
    counted as spend and the request as `aborted`; a live request's own finish counts those
    later (its settle lowers the orphan charge to the real usage), so nothing is counted twice.
    """
    holds = list(reclaimed)
    if not holds:
        return
    by_hold = meters_by_hold(meters.values())
    now = time.time()
    for info in holds:
        meter = by_hold.get(info.hold_id)
        usd = is_usd(info)
        names = subject_names(info)
        account = meter.account if meter else names.get("account", "")
        key = meter.key if meter else names.get("key", "")
        logger.warning(f"seatbelt: {'USD ' if usd else ''}hold {info.hold_id} of key {key} "
                       f"never finished; charged whole "
                       f"({to_usd(info.amount) if usd else info.amount}) as orphaned")
        audit.write(orphan_record(info, meter, now=now))
        metrics.orphaned(account=account, key=key, tokens=None if usd else info.amount,
                         usd=to_usd(info.amount) if usd else None, owned=meter is not None)
