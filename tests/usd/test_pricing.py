"""USD arithmetic (seatbelt/usd/pricing.py): exact micro-dollars, rounded up, never free."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seatbelt.usd.pricing import (
    PriceError,
    format_usd,
    hold_cost,
    make_price,
    parse_usd_argument,
    to_usd,
    usage_cost,
    usd_to_micro,
)

# gpt-4o-mini-like: $0.15 in, $0.075 cached, $0.60 out per 1M tokens
MINI = make_price(0.15, 0.6, cached_input=0.075)
# claude-like: $3 in, $0.30 cache read, $3.75 cache write, $15 out
SONNET = make_price(3, 15, cached_input=0.3, cache_write=3.75)


def test_prices_keep_the_decimal_the_operator_wrote() -> None:
    assert MINI.input == Decimal("0.15") and MINI.output == Decimal("0.6")
    assert MINI.cache_write == MINI.input  # defaults to the input price
    assert make_price(2, 8).cached_input == Decimal(2)


def test_hold_prices_prompt_estimate_at_input_and_output_budget_at_output() -> None:
    # 1000 prompt tokens * 0.15 + 4096 output * 0.6 = 150 + 2457.6 -> 2608 micro-dollars
    assert hold_cost(MINI, 1000, 4096) == 2608
    assert hold_cost(SONNET, 1000, 1000) == 3000 + 15000
    assert hold_cost(MINI, 0, 0) == 0


def test_usage_cost_splits_uncached_cached_cache_write_and_output() -> None:
    # prompt 10_000 of which 6_000 cache reads and 2_000 cache writes; 500 output
    cost = usage_cost(SONNET, 10_000, 500, cached_tokens=6_000, cache_write_tokens=2_000)
    assert cost == 2_000 * 3 + 6_000 * 0.3 + 2_000 * 3.75 + 500 * 15  # 22_800
    assert cost == 22_800
    # OpenAI-style: cached_tokens is part of prompt_tokens
    assert usage_cost(MINI, 1000, 100, cached_tokens=400) == 90 + 30 + 60
    assert usage_cost(MINI, None, None) == 0


def test_cost_rounds_up_never_free() -> None:
    assert usage_cost(MINI, 1, 0) == 1  # 0.15 micro-dollars -> 1
    assert usage_cost(make_price(0, 0), 10**6, 10**6) == 0  # an explicit zero price is free


def test_cache_counts_larger_than_the_prompt_are_still_charged() -> None:
    # a malformed report (cached > prompt): the reported cache tokens are not dropped
    assert usage_cost(SONNET, 100, 0, cached_tokens=300) == 90


@given(
    prompt=st.integers(0, 10**7), completion=st.integers(0, 10**6),
    cached=st.integers(0, 10**7), written=st.integers(0, 10**7),
)
def test_cost_is_an_integer_upper_bound_within_one_micro_dollar(
    prompt: int, completion: int, cached: int, written: int
) -> None:
    cached = min(cached, prompt)
    written = min(written, prompt - cached)
    exact = ((prompt - cached - written) * SONNET.input + cached * SONNET.cached_input
             + written * SONNET.cache_write + completion * SONNET.output)
    cost = usage_cost(SONNET, prompt, completion, cached, written)
    assert isinstance(cost, int) and exact <= cost < exact + 1


@given(prompt=st.integers(0, 10**6), output=st.integers(0, 10**6))
def test_hold_covers_usage_within_the_estimate_without_cache_writes(
    prompt: int, output: int
) -> None:
    hold = hold_cost(SONNET, prompt, output)
    assert usage_cost(SONNET, prompt, output) <= hold
    assert usage_cost(SONNET, prompt, output, cached_tokens=prompt) <= hold


def test_usd_amounts_become_whole_micro_dollars() -> None:
    assert usd_to_micro(25) == 25_000_000
    assert usd_to_micro(12.5) == 12_500_000
    assert usd_to_micro(0.000001) == 1
    for bad, why in [(0.0000001, "6 decimals"), (-1, ">= 0"), (True, "number"),
                     ("5", "number"), (float("inf"), "finite"), (10**10, "at most")]:
        with pytest.raises(PriceError, match=why):
            usd_to_micro(bad)


def test_operator_usd_arguments() -> None:
    assert parse_usd_argument("5") == 5_000_000
    assert parse_usd_argument(" $2.50 ") == 2_500_000
    for bad in ("0", "-1", "abc", "1.0000001", "nan"):
        with pytest.raises(PriceError):
            parse_usd_argument(bad)


def test_formatting() -> None:
    assert format_usd(1_500_000) == "$1.50"
    assert format_usd(1_234_567) == "$1.234567"
    assert format_usd(0) == "$0.00"
    assert format_usd(-2_000_000) == "-$2.00"
    assert format_usd(None) == "none"
    assert to_usd(2458) == 0.002458 and to_usd(None) is None
