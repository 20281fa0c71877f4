"""USD budgets at admission and settlement: a second hold right after the token hold.

A key (or its account) with `cap_usd` is charged in integer micro-dollars on its own
ledger subjects, `usd:key:ID` and `usd:account:ID`, so the Ledger interface stays the
token one. Admission: the token hold first, then the USD hold priced like the estimate
(seatbelt/usd/pricing.py); if the USD hold is refused (or the ledger fails), the token hold is
released and the request refused, so neither budget is ever overshot. Settlement prices
the real usage and settles the USD hold once, like the token hold. A model with no price
under a USD cap is refused before any hold: never free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from seatbelt.admission import refusals
from seatbelt.config.policy import Key, Policy
from seatbelt.ledger.base import Cap, CapRefusal, Ledger, LedgerUnavailable, Window
from seatbelt.usd import pricing
from seatbelt.usd.pricing import Price

logger = logging.getLogger("seatbelt")


@dataclass(frozen=True)
class UsdHold:
    """The answer of `reserve`: a hold id and its micro-dollars, or the caps that refused."""

    hold_id: str | None
    amount: int
    refusals: tuple[CapRefusal, ...] = ()


def unpriced(key_id: str, model: str | None, subject: str) -> refusals.Refusal:
    """403 model_not_allowed: a USD cap cannot be charged for a model without a price."""
    who = "its account's" if subject.startswith("usd:account:") else "its"
    shown = "a request that names no model" if model is None else "this model"
    return refusals.Refusal(
        403, "model_not_allowed",
        f"seatbelt: key {key_id!r} has a USD budget ({who} cap_usd) and {shown} has no price "
        "in the policy; ask the operator to add it under `prices:`.",
    )


def check_priced(policy: Policy, key: Key, model: str | None) -> refusals.Refusal | None:
    """None when no USD cap applies or the model has a price, else the refusal."""
    caps = policy.usd_caps_for(key)
    if not caps or policy.price_for(model) is not None:
        return None
    capped = next(c for c in caps if c.limit is not None)
    return unpriced(key.id, model, capped.subject)


def for_usd_caps(found: tuple[CapRefusal, ...], key_id: str, windows: dict[str, Window]
                 ) -> refusals.Refusal:
    """The token caps' answer (status, code, Retry-After: refusals.for_caps), in dollars."""
    base = refusals.for_caps(found, key_id, windows)
    quota = [r for r in found if r.reason == "quota"]
    r = quota[0] if quota else max(found, key=lambda x: x.retry_after or 1)
    kind, _, name = r.subject.removeprefix("usd:").partition(":")
    who = f"account {name!r} (of key {key_id!r})" if kind == "account" else f"key {name!r}"
    usd = pricing.format_usd
    if quota:
        msg = (f"seatbelt: {who} has spent {usd(r.spent)} of its {usd(r.limit)} USD balance; "
               f"this request may cost up to {usd(r.requested)}. The balance does not reset: "
               "ask the operator for a top-up.")
    else:
        window = refusals._window_text(windows.get(r.subject, Window()))
        if r.exceeds_cap:
            msg = (f"seatbelt: this request may cost up to {usd(r.requested)}, more than the "
                   f"whole {usd(r.limit)} USD cap ({window}) of {who}; lower max_tokens or "
                   "the prompt.")
        elif r.spent + r.requested <= r.limit:
            msg = (f"seatbelt: {who} USD cap of {usd(r.limit)} ({window}) is held by requests "
                   f"in flight ({usd(r.reserved)} reserved); retry in {base.retry_after} s.")
        else:
            msg = (f"seatbelt: {who} has used {usd(r.spent)} of its {usd(r.limit)} USD cap "
                   f"({window}); this request may cost up to {usd(r.requested)}. Retry in "
                   f"{base.retry_after} s.")
    return refusals.Refusal(base.status, base.code, msg, base.retry_after)


async def reserve(ledger: Ledger, caps: list[Cap], price: Price, prompt_estimate: int,
                  token_amount: int) -> UsdHold:
    """Hold the estimate's price: the prompt estimate at the input price, the rest of the
    token reservation (the output budget) at the output price. LedgerUnavailable passes."""
    amount = pricing.hold_cost(price, prompt_estimate, token_amount - prompt_estimate)
    reservation = await ledger.reserve(caps, amount)
    return UsdHold(reservation.hold_id, amount, reservation.refusals)


async def admit(rt: Any, ledger: Ledger, policy: Policy, key: Key, model: str | None,
                prompt_estimate: int, token_amount: int) -> tuple[UsdHold | None,
                                                                  refusals.Refusal | None]:
    """The USD hold of a request whose token hold was just granted: (hold, None) when
    granted, (None, None) when no USD cap applies, (None, refusal) when refused; the caller
    then releases the token hold (`release_quietly`) unless shadow mode forwards it."""
    caps = policy.usd_caps_for(key)
    price = policy.price_for(model)
    if not caps or price is None:  # unpriced under a USD cap: refused before any hold
        return None, None
    try:
        hold = await reserve(ledger, caps, price, prompt_estimate, token_amount)
    except LedgerUnavailable as e:
        rt.set_ledger_up(False, str(e))
        return None, refusals.unavailable("the ledger is not available")
    if hold.hold_id is None:
        windows = {c.subject: c.window for c in caps}
        return None, for_usd_caps(hold.refusals, key.id, windows)
    return hold, None


def attach(meter: Any, policy: Policy, key: Key | None, usd: UsdHold | None) -> None:
    """What settlement needs: the price (cost_usd even without a USD cap), the USD hold,
    and the caps an operator's release is charged onto."""
    meter.price = policy.price_for(meter.model)
    if key is None:
        return
    meter.caps = tuple(policy.caps_for(key)) if meter.hold_id is not None else ()
    if usd is not None and usd.hold_id is not None:
        meter.usd_hold_id, meter.usd_reserved = usd.hold_id, usd.amount
        meter.usd_caps = tuple(policy.usd_caps_for(key))


def cost(price: Price | None, prompt: int | None, completion: int | None,
         cached: int | None, cache_write: int | None) -> int | None:
    """Micro-dollars of what was charged; None for an unpriced model."""
    if price is None:
        return None
    return pricing.usage_cost(price, prompt, completion, cached, cache_write)


def usd_outcome(meter: Any, result: Any) -> tuple[int | None, bool]:
    """(micro-dollars the finished request costs, None for an unpriced model; whether that
    overran the USD hold). Pure: settlement hands the USD hold to the ledger with it."""
    if meter.price is None:
        return None, False
    if result.action != "settle":
        return 0, False
    usage = result.usage
    charge = pricing.usage_cost(meter.price, result.prompt_tokens, result.completion_tokens,
                                usage.cached_tokens, usage.cache_write_tokens)
    return charge, meter.usd_hold_id is not None and charge > meter.usd_reserved


async def charge_after_release(ledger: Ledger, caps: tuple[Cap, ...], amount: int,
                               hold_id: str) -> None:
    """A hold an operator released while its request ran: the request's real charge goes
    onto the same caps as an adjustment, so a release never makes a request free."""
    if amount <= 0 or not caps:
        return
    for cap in caps:
        await ledger.adjust(cap, amount)
    logger.warning(f"seatbelt: hold {hold_id} was released before its request finished; "
                   f"charged its real usage ({amount}) to {', '.join(c.subject for c in caps)}")


async def release_quietly(ledger: Ledger, hold_id: str, defer) -> None:
    """Drop the token hold of a request the USD cap refused; if the ledger fails now, hand
    it to the runtime's retry queue (`defer`) instead of leaving it counted."""
    try:
        await ledger.release(hold_id)
    except LedgerUnavailable as e:
        logger.error(f"seatbelt: could not release hold {hold_id} yet (retried): {e}")
        defer(ledger, hold_id, "release", 0, "none")
