"""The budget headers (seatbelt/admission/budgetheaders.py): figures, reset, setting them."""

from __future__ import annotations

from seatbelt.admission.budgetheaders import REMAINING, RESET, headers_for
from seatbelt.ledger.base import CapState, Window


def test_headers_pick_the_smallest_remaining_and_its_reset():
    key = CapState("key:a", 1000, Window("rolling", 3600), spent=100, reserved=50)
    account = CapState("account:t", 5000, Window("daily"), spent=4800, reserved=50)
    h = headers_for([key, account], now=86400 * 10 + 3600)  # 01:00 UTC
    assert h == {REMAINING: "150", RESET: str(86400 - 3600)}
    assert headers_for([key], now=0) == {REMAINING: "850", RESET: "3600"}
    balance = CapState("key:b", 10, Window(), spent=20, reserved=0)
    assert headers_for([balance]) == {REMAINING: "0"}  # overrun: never negative, no reset
    assert headers_for([CapState("key:c", None, Window(), 5, 0)]) == {}


def test_budget_headers_are_appended_or_replace_the_upstreams_own() -> None:
    from mitmproxy.http import Headers

    from seatbelt.admission.budgetheaders import REMAINING, RESET, set_on

    plain = Headers(content_type="application/json")
    set_on(plain, {REMAINING: "10", RESET: "60"})
    assert plain.fields == ((b"content-type", b"application/json"),
                            (REMAINING.encode(), b"10"), (RESET.encode(), b"60"))
    spoofed = Headers([(b"X-Seatbelt-Remaining-Tokens", b"999999"), (b"content-type", b"x")])
    set_on(spoofed, {REMAINING: "10"})
    assert spoofed.get_all(REMAINING) == ["10"]  # the upstream's own value does not survive
    untouched = Headers(content_type="x")
    set_on(untouched, {})
    assert untouched.fields == ((b"content-type", b"x"),)


def test_reset_is_to_the_window_boundary_the_rolling_length_or_none() -> None:
    from seatbelt.admission.budgetheaders import reset_seconds

    noon = 86400 * 20 + 43200  # 12:00 UTC on 1970-01-21
    assert reset_seconds(Window("daily"), noon) == 43200
    assert reset_seconds(Window("monthly"), noon) == 86400 * 11 - 43200  # to 1970-02-01
    assert reset_seconds(Window("rolling", 900), noon) == 900
    assert reset_seconds(Window("balance"), noon) is None


def test_capped_is_true_only_when_some_cap_has_a_limit() -> None:
    from seatbelt.admission.budgetheaders import capped
    from seatbelt.ledger.base import Cap

    assert not capped([Cap("key:a", None), Cap("account:t", None)])
    assert capped([Cap("key:a", None), Cap("account:t", 5)])
    assert not capped([])


def test_read_headers_prefers_the_reservations_states_and_never_raises() -> None:
    import asyncio

    from seatbelt.admission.budgetheaders import read_headers
    from seatbelt.ledger import open_ledger
    from seatbelt.ledger.base import Cap, LedgerUnavailable

    caps = [Cap("key:a", 1000, Window("balance"))]

    async def go() -> None:
        ledger = open_ledger("memory://")
        await ledger.open()
        reservation = await ledger.reserve(caps, 300)
        assert await read_headers(ledger, caps, reservation) == {REMAINING: "700"}
        await ledger.settle(str(reservation.hold_id), 100, source="reported")
        assert await read_headers(ledger, caps) == {REMAINING: "900"}  # from a snapshot

        async def down(*_a: object, **_k: object) -> list[CapState]:
            raise LedgerUnavailable("down")

        ledger.snapshot = down  # type: ignore[method-assign]
        assert await read_headers(ledger, caps) == {}

    asyncio.run(go())
