"""USD arithmetic for `prices:` and `cap_usd` (pure functions, no I/O).

The ledger stores USD as integer micro-dollars (1 USD = 1_000_000), so caps, holds and
spend stay exact integers on every backend. A price of P USD per 1M tokens is P
micro-dollars per token, so a cost is just tokens * price, rounded UP to a whole
micro-dollar (never free, never under the real bill by more than one micro-dollar per
request). Prices are kept as Decimal, read from the policy's own text, so 0.15 stays 0.15.

Holds are priced like the token estimate: the prompt estimate at the input price plus the
output budget at the output price. Settlement prices the real usage split the contract
records: uncached input, cache reads (`cached_input`), cache writes (`cache_write`) and
output. Prompt tokens already include the cached and cache-write ones (contract §3), so
the uncached part is what is left of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICRO = 1_000_000  # micro-dollars per USD
MAX_USD = Decimal(10) ** 9  # a price or a cap above this is a typo, not a budget
PRICE_FIELDS = ("input", "cached_input", "cache_write", "output")


class PriceError(ValueError):
    """A value that cannot be a price or a USD amount; the text says what is wrong."""


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens (= micro-dollars per token) of one model."""

    input: Decimal
    output: Decimal
    cached_input: Decimal  # cache reads; defaults to `input`
    cache_write: Decimal  # cache writes; defaults to `input`

    def label(self) -> list[str]:
        """Canonical text (policy digest): the four prices in a fixed order."""
        return [str(self.input), str(self.cached_input), str(self.cache_write),
                str(self.output)]


def usd_decimal(value: object) -> Decimal:
    """A non-negative, finite number (int or float as YAML reads it) as an exact Decimal."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PriceError("must be a number")
    try:
        d = Decimal(str(value))  # str(0.15) == "0.15": the text the operator wrote
    except InvalidOperation:
        raise PriceError("must be a number") from None
    if not d.is_finite() or d < 0:
        raise PriceError("must be a finite number >= 0")
    if d > MAX_USD:
        raise PriceError(f"must be at most {MAX_USD:,}")
    return d


def usd_to_micro(value: object) -> int:
    """A USD amount (a cap) as whole micro-dollars; more than 6 decimals is an error."""
    micro = usd_decimal(value) * MICRO
    if micro != micro.to_integral_value():
        raise PriceError("has more than 6 decimals (the ledger counts whole micro-dollars)")
    return int(micro)


def make_price(input: object, output: object, cached_input: object = None,
               cache_write: object = None) -> Price:
    """A Price from policy values; the cache prices default to the input price."""
    inp = usd_decimal(input)
    return Price(
        input=inp,
        output=usd_decimal(output),
        cached_input=inp if cached_input is None else usd_decimal(cached_input),
        cache_write=inp if cache_write is None else usd_decimal(cache_write),
    )


def _ceil(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_CEILING))


def hold_cost(price: Price, prompt_estimate: int, output_budget: int) -> int:
    """Micro-dollars to hold: the prompt estimate at the input price plus the whole output
    budget (max output times n) at the output price."""
    prompt, output = max(0, prompt_estimate), max(0, output_budget)
    return _ceil(prompt * price.input + output * price.output)


def usage_cost(
    price: Price,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cached_tokens: int | None = None,
    cache_write_tokens: int | None = None,
) -> int:
    """Micro-dollars of real (or estimated) usage. Cached and cache-write tokens are parts of
    prompt_tokens; counts that do not fit inside it are priced as reported, never dropped."""
    prompt = max(0, prompt_tokens or 0)
    cached = max(0, cached_tokens or 0)
    written = max(0, cache_write_tokens or 0)
    uncached = max(0, prompt - cached - written)
    return _ceil(
        uncached * price.input
        + cached * price.cached_input
        + written * price.cache_write
        + max(0, completion_tokens or 0) * price.output
    )


def to_usd(micro: int | None) -> float | None:
    """Micro-dollars as a USD number for JSON, reports and metrics (6 decimals)."""
    return None if micro is None else round(micro / MICRO, 6)


def format_usd(micro: int | None) -> str:
    """`$1.234567`-style text for messages and tables; trailing zeros past cents dropped."""
    if micro is None:
        return "none"
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    digits = f"{frac:06d}".rstrip("0")
    digits = digits + "0" * max(0, 2 - len(digits))
    return f"{sign}${whole}.{digits}"


def parse_usd_argument(text: str) -> int:
    """A USD amount typed by an operator (`5`, `5.25`, `$5.25`) as micro-dollars."""
    cleaned = text.strip().removeprefix("$").strip()
    try:
        d = Decimal(cleaned)
    except InvalidOperation:
        raise PriceError(f"{text!r} is not a USD amount (e.g. 5 or 2.50)") from None
    if not d.is_finite() or d <= 0 or d > MAX_USD:
        raise PriceError(f"{text!r} must be a USD amount above 0")
    micro = d * MICRO
    if micro != micro.to_integral_value():
        raise PriceError(f"{text!r} has more than 6 decimals")
    return int(micro)

