"""Budget headers on every admitted LLM response, so apps can slow down before a 429.

    x-seatbelt-remaining-tokens: N   smallest `cap - spent - reserved` over the caps that
                                     apply (key and account), this request's hold included
    x-seatbelt-reset: S              seconds until the binding cap's window resets (daily,
                                     monthly) or until all spend now in it has left (rolling:
                                     the window length, an upper bound); absent for balance
    x-seatbelt-clamped: ORIG->NEW    the output limit seatbelt lowered (over_cap: clamp,
                                     or its own default limit that did not fit)

Both budget headers are absent when no cap applies. They come from the cap states the
reservation itself read (no second ledger read), and are set in `responseheaders`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from mitmproxy.http import Headers

from seatbelt.ledger.base import Cap, CapState, Ledger, Reservation, Window
from seatbelt.ledger.windows import seconds_until_reset

logger = logging.getLogger("seatbelt")

REMAINING = "x-seatbelt-remaining-tokens"
RESET = "x-seatbelt-reset"
CLAMPED = "x-seatbelt-clamped"


_OURS = (b"x-seatbelt-",)


def set_on(headers: Headers, values: dict[str, str]) -> None:
    """Set the headers on a response: appended in one go (~2 us) unless the upstream sent
    one of them too (then each is replaced, ~5 us apiece)."""
    if not values:
        return
    fields = headers.fields
    if all(name.isascii() and not name.lower().startswith(_OURS) for name, _ in fields):
        headers.fields = fields + tuple((k.encode(), v.encode()) for k, v in values.items())
        return
    for name, value in values.items():
        headers[name] = value


def capped(caps: Sequence[Cap]) -> bool:
    return any(c.limit is not None for c in caps)


def headers_for(states: Sequence[CapState], now: float | None = None) -> dict[str, str]:
    """The budget headers for these cap states (pure)."""
    binding = None
    for s in states:
        if s.remaining is not None and (binding is None or binding.remaining is None
                                         or s.remaining < binding.remaining):
            binding = s
    if binding is None or binding.remaining is None:
        return {}
    out = {REMAINING: str(max(0, binding.remaining))}
    reset = reset_seconds(binding.window, time.time() if now is None else now)
    if reset is not None:
        out[RESET] = str(reset)
    return out


def reset_seconds(window: Window, now: float) -> int | None:
    """x-seatbelt-reset of a cap: to the reset (daily, monthly), the window length (rolling:
    when all spend now in it has left, an upper bound), None for a balance."""
    if window.kind in ("daily", "monthly"):
        return seconds_until_reset(window, now)
    if window.kind == "rolling" and window.seconds is not None:
        return window.seconds
    return None


async def read_headers(
    ledger: Ledger, caps: Sequence[Cap], reservation: Reservation | None = None
) -> dict[str, str]:
    """The headers from the states the reservation brought back, else from a snapshot; {}
    when the ledger cannot say (never raises: a missing header must not cost the request)."""
    if reservation is not None and reservation.states:
        return headers_for(reservation.states)
    try:
        return headers_for(await ledger.snapshot(caps))
    except Exception as e:
        logger.debug(f"seatbelt: budget headers skipped ({type(e).__name__})")
        return {}
