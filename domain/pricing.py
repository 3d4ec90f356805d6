"""The pricing engine: a price definition plus usage gives an amount and its breakdown.

Pure and deterministic: no I/O, no clock, no framework, nothing from the rest of the
project. Money and quantities are `Decimal`; arithmetic runs in this module's own decimal
context (100 significant digits), so results never depend on the caller's thread context.
Amounts are NOT rounded to the currency here; `round_money` does that when an invoice line
is finalized.

Every model follows the same pipeline (the public API document is binding):

1. transform: ``q' = q / divide_by``, then ``rounding`` "up" (ceiling to an integer),
   "down" (floor to an integer) or "none" (the default: exact, except that a quotient
   that does not terminate, such as ``divide_by: 60``, is rounded half-even to 20 decimal
   places, so that every later step, and the breakdown's sum, is exact);
2. included units: ``q'' = max(q' - included_units, 0)`` (in transformed units);
3. the model prices ``q''`` (the result's ``billable_quantity``);
4. ``minimum_amount`` raises the total to at least that (a true-up, even at zero usage),
   ``maximum_amount`` caps it; each shows as its own breakdown item, so the breakdown
   always sums to ``amount``.

Tiers use inclusive, cumulative ``up_to`` bounds (10 units stay in a tier with
``up_to: 10``; 10.5 puts 0.5 in the next); a tier's flat fee is charged once the tier is
entered, and the first tier's flat fee even at zero usage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

__all__ = [
    "MODELS",
    "ROUNDINGS",
    "BreakdownItem",
    "Price",
    "PriceError",
    "PriceResult",
    "Tier",
    "currency_minor_units",
    "evaluate",
    "incremental_charge",
    "parse_price",
    "round_money",
]

MODELS = ("per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage")
ROUNDINGS = ("up", "down", "none")
TIERED_MODELS = ("graduated", "volume", "graduated_percentage")

_ZERO = Decimal(0)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_QUOTIENT_QUANTUM = Decimal("1E-20")
_MAX_DIGITS = 30
_CONTEXT = Context(
    prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)

# Parameters each model accepts on top of the common ones; those in _REQUIRED must be given.
# fmt: off
_COMMON_KEYS = frozenset({
    "meter", "model", "included_units", "divide_by", "rounding", "minimum_amount",
    "maximum_amount",
})
_MODEL_KEYS: dict[str, frozenset[str]] = {
    "per_unit": frozenset({"unit_price"}),
    "graduated": frozenset({"tiers"}),
    "volume": frozenset({"tiers"}),
    "package": frozenset({"package_size", "package_price"}),
    "percentage": frozenset({
        "rate", "fixed_fee_per_event", "min_per_event", "max_per_event", "free_events",
        "free_amount",
    }),
    "graduated_percentage": frozenset({"tiers"}),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "per_unit": ("unit_price",),
    "graduated": ("tiers",),
    "volume": ("tiers",),
    "package": ("package_size", "package_price"),
    "percentage": ("rate",),
    "graduated_percentage": ("tiers",),
}
_DECIMAL_KEYS = (
    "unit_price", "package_size", "package_price", "rate", "fixed_fee_per_event",
    "min_per_event", "max_per_event", "free_amount", "included_units", "divide_by",
    "minimum_amount", "maximum_amount",
)
_ZERO_DECIMAL_CURRENCIES = frozenset({
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
    "VND", "VUV", "XAF", "XOF", "XPF",
})
_THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})
# fmt: on


class PriceError(ValueError):
    """An invalid price or usage input; `field` is a dotted path such as ``tiers.2.up_to``.

    The path is relative to the price object (``""`` means the price itself); usage
    inputs to `evaluate` use ``quantity`` and ``events.<i>``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Tier:
    """One tier. ``up_to`` is an inclusive cumulative bound; None only for the last tier.

    ``unit_price`` is used by graduated and volume tiers, ``rate`` (a percent) by
    graduated_percentage tiers.
    """

    up_to: Decimal | None
    unit_price: Decimal = _ZERO
    flat_fee: Decimal = _ZERO
    rate: Decimal = _ZERO


@dataclass(frozen=True)
class Price:
    """A validated price. Construction checks the invariants and raises `PriceError`."""

    model: str
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    rate: Decimal | None = None
    fixed_fee_per_event: Decimal = _ZERO
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None
    free_events: int = 0
    free_amount: Decimal = _ZERO
    included_units: Decimal = _ZERO
    divide_by: Decimal | None = None
    rounding: str = "none"
    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None
    meter: str | None = None

    def __post_init__(self) -> None:
        _check_price(self)


@dataclass(frozen=True)
class BreakdownItem:
    """One line of a price's breakdown.

    ``kind`` is "tier", "unit", "package", "percentage", "event_fees", "minimum_true_up"
    or "maximum_cap". Except for "event_fees", ``amount == quantity * unit_price +
    flat_fee``: a package item counts packages; percentage items (and graduated_percentage
    tiers) carry ``rate / 100`` as their unit price; the true-up and the cap (negative)
    are one unit of their own amount. ``tier`` is the 0-based index into ``price.tiers``.
    """

    kind: str
    description: str
    quantity: Decimal
    unit_price: Decimal | None
    flat_fee: Decimal
    amount: Decimal
    tier: int | None = None


@dataclass(frozen=True)
class PriceResult:
    """``quantity`` is the raw usage, ``billable_quantity`` what the model priced."""

    quantity: Decimal
    billable_quantity: Decimal
    amount: Decimal
    breakdown: tuple[BreakdownItem, ...]


# ---------------------------------------------------------------------------- parsing


def parse_price(data: Mapping[str, Any]) -> Price:
    """Build a `Price` from the API's JSON shape, or raise `PriceError` naming the field.

    Numbers may be JSON numbers or decimal strings; floats go through ``str()`` (never
    ``Decimal(float)``); booleans, NaN and infinities are rejected. ``null`` counts as
    absent for optional parameters, and a tier without ``up_to`` is unbounded. Keys that
    are not parameters of the price's model (typos included) are rejected.
    """
    if not isinstance(data, Mapping):
        raise PriceError("", "a price must be an object")
    model = data.get("model")
    if model is None:
        raise PriceError("model", "is required")
    if not isinstance(model, str) or model not in MODELS:
        raise PriceError("model", f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    allowed = _COMMON_KEYS | _MODEL_KEYS[model]
    for key in data:
        if key not in allowed:
            known = any(key in keys for keys in _MODEL_KEYS.values())
            reason = f"is not a parameter of the {model!r} model" if known else "unknown field"
            raise PriceError(str(key), reason)
    for key in _REQUIRED[model]:
        if data.get(key) is None:
            raise PriceError(key, f"is required for the {model!r} model")

    fields: dict[str, Any] = {"model": model}
    for key in _DECIMAL_KEYS:
        if data.get(key) is not None:
            fields[key] = _decimal(data[key], key)
    if data.get("free_events") is not None:
        fields["free_events"] = _integer(data["free_events"], "free_events")
    if data.get("rounding") is not None:
        fields["rounding"] = data["rounding"]
    if data.get("meter") is not None:
        meter = data["meter"]
        if not isinstance(meter, str) or not meter:
            raise PriceError("meter", "must be a non-empty string")
        fields["meter"] = meter
    if model in TIERED_MODELS:
        fields["tiers"] = _parse_tiers(data["tiers"], model)
    return Price(**fields)


def _parse_tiers(raw: Any, model: str) -> tuple[Tier, ...]:
    if not isinstance(raw, list | tuple):
        raise PriceError("tiers", "must be a list of tiers")
    price_key = "rate" if model == "graduated_percentage" else "unit_price"
    tiers = []
    for index, item in enumerate(raw):
        path = f"tiers.{index}"
        if not isinstance(item, Mapping):
            raise PriceError(path, "must be an object")
        for key in item:
            if key not in ("up_to", "flat_fee", price_key):
                raise PriceError(f"{path}.{key}", f"is not a tier field of the {model!r} model")
        if item.get(price_key) is None:
            raise PriceError(f"{path}.{price_key}", "is required")
        up_to = item.get("up_to")
        flat_fee = item.get("flat_fee")
        tiers.append(
            Tier(
                up_to=None if up_to is None else _decimal(up_to, f"{path}.up_to"),
                flat_fee=_ZERO if flat_fee is None else _decimal(flat_fee, f"{path}.flat_fee"),
                **{price_key: _decimal(item[price_key], f"{path}.{price_key}")},
            )
        )
    return tuple(tiers)


def _decimal(value: Any, field: str) -> Decimal:
    """A finite Decimal from a Decimal, int, float (via str) or decimal string."""
    if isinstance(value, bool):
        raise PriceError(field, "must be a number, not a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float | str):
        try:
            with localcontext(_CONTEXT):
                result = Decimal(str(value).strip())
        except InvalidOperation:
            raise PriceError(field, f"must be a decimal number, got {value!r}") from None
    else:
        raise PriceError(field, "must be a number or a decimal string")
    _check_range(result, field)
    return result


def _check_range(value: Decimal, field: str) -> None:
    """Finite, below 10**30 and with at most 30 decimal places, so arithmetic stays exact."""
    if not value.is_finite():
        raise PriceError(field, "must be a finite number")
    if value and (
        value.adjusted() >= _MAX_DIGITS
        or _CONTEXT.normalize(value).as_tuple().exponent < -_MAX_DIGITS
    ):
        raise PriceError(field, "is out of range (at most 30 digits each side of the point)")


def _integer(value: Any, field: str) -> int:
    number = _decimal(value, field)
    if number != number.to_integral_value():
        raise PriceError(field, "must be a whole number")
    return int(number)


# ------------------------------------------------------------------------- validation


def _check_price(price: Price) -> None:
    if price.model not in MODELS:
        raise PriceError("model", f"unknown model {price.model!r}")
    if price.rounding not in ROUNDINGS:
        raise PriceError("rounding", f"must be one of {', '.join(ROUNDINGS)}")
    for key in _REQUIRED[price.model]:
        if getattr(price, key) in (None, ()):
            raise PriceError(key, f"is required for the {price.model!r} model")
    for key in _DECIMAL_KEYS:
        value = getattr(price, key)
        if value is not None:
            _check_amount(value, key, positive=key in ("divide_by", "package_size"))
    _check_order(price.minimum_amount, price.maximum_amount, "maximum_amount", "minimum_amount")
    _check_order(price.min_per_event, price.max_per_event, "max_per_event", "min_per_event")
    if isinstance(price.free_events, bool) or not isinstance(price.free_events, int):
        raise PriceError("free_events", "must be an integer")
    if price.free_events < 0:
        raise PriceError("free_events", "must not be negative")
    if price.model in TIERED_MODELS:
        _check_tiers(price.tiers)


def _check_tiers(tiers: tuple[Tier, ...]) -> None:
    previous: Decimal | None = None
    for index, tier in enumerate(tiers):
        path = f"tiers.{index}"
        last = index == len(tiers) - 1
        if tier.up_to is None and not last:
            raise PriceError(f"{path}.up_to", "only the last tier may be unbounded (null)")
        if tier.up_to is not None:
            if last:
                raise PriceError(f"{path}.up_to", "the last tier must be unbounded (null)")
            _check_amount(tier.up_to, f"{path}.up_to")
            if previous is not None and tier.up_to <= previous:
                raise PriceError(
                    f"{path}.up_to", f"must be greater than the previous tier's up_to {previous}"
                )
            previous = tier.up_to
        for key in ("unit_price", "flat_fee", "rate"):
            _check_amount(getattr(tier, key), f"{path}.{key}")


def _check_amount(value: Any, field: str, *, positive: bool = False) -> None:
    if not isinstance(value, Decimal):
        raise PriceError(field, "must be a Decimal")
    _check_range(value, field)
    if positive and value <= 0:
        raise PriceError(field, "must be greater than 0")
    if value < 0:
        raise PriceError(field, "must not be negative")


def _check_order(low: Decimal | None, high: Decimal | None, field: str, low_name: str) -> None:
    if low is not None and high is not None and high < low:
        raise PriceError(field, f"must not be less than {low_name} ({low})")


# ------------------------------------------------------------------------- evaluation


def evaluate(
    price: Price,
    quantity: Decimal | None = None,
    events: Sequence[Decimal] | None = None,
) -> PriceResult:
    """Price a period's usage exactly as an invoice line would, before currency rounding.

    Give the summed ``quantity``, or per-event ``events`` (their sum is the quantity; when
    both are given they must agree). Per-event values matter only to the ``percentage``
    model; every other model prices the sum. Raises `PriceError` for negative usage.

    percentage with events: each event is transformed on its own and ``included_units``
    are consumed in event order (an event wholly inside them never reaches the model and
    does not count toward ``free_events``; a partly covered one enters with its excess).
    Then, in event order: the first ``free_events`` events pay nothing; ``free_amount`` is
    an allowance of the summed amount (free events consume it too) - an event wholly
    inside what remains of it pays nothing, not even the fixed fee, and an event partly
    inside pays the rate on its excess plus the fixed fee; every paying event's fee (rate
    part + fixed fee) is clamped to [min_per_event, max_per_event].

    percentage with a bare quantity: the quantity is the summed amount, the rate applies
    to what exceeds ``free_amount``; per-event parameters (fixed fee, per-event min/max,
    free events) need events and are ignored.
    """
    with localcontext(_CONTEXT):
        values = None
        if events is not None:
            values = tuple(_usage(value, f"events.{i}") for i, value in enumerate(events))
            raw = sum(values, _ZERO)
            if quantity is not None and _usage(quantity, "quantity") != raw:
                raise PriceError("quantity", "must equal the sum of events when both are given")
        elif quantity is None:
            raise PriceError("quantity", "a quantity or events are required")
        else:
            raw = _usage(quantity, "quantity")

        if price.model == "percentage" and values is not None:
            billable_events = _events_after_included(price, values)
            billable = sum(billable_events, _ZERO)
            items = _percentage_events(price, billable_events)
        else:
            billable = max(_transform(price, raw) - price.included_units, _ZERO)
            items = _MODEL_FUNCTIONS[price.model](price, billable)
        items += _adjustments(price, sum((item.amount for item in items), _ZERO))
        amount = sum((item.amount for item in items), _ZERO)
    return PriceResult(raw, billable, amount, tuple(items))


def incremental_charge(
    price: Price,
    before_quantity: Decimal | None,
    after_quantity: Decimal | None,
    *,
    before_events: Sequence[Decimal] | None = None,
    after_events: Sequence[Decimal] | None = None,
) -> Decimal:
    """What moving from the ``before`` usage to the ``after`` usage costs (real-time drawdown).

    Exactly ``evaluate(after).amount - evaluate(before).amount``, so increments over a
    period add up to the period's amount minus the amount at the start (which already
    holds the first tier's flat fee and any minimum true-up). It can be negative: a volume
    price may get cheaper as usage crosses into a lower-priced tier.
    """
    after = evaluate(price, after_quantity, after_events).amount
    before = evaluate(price, before_quantity, before_events).amount
    with localcontext(_CONTEXT):
        return after - before


def currency_minor_units(currency: str) -> int:
    """Decimal places of a currency's minor unit (ISO 4217); unknown currencies get 2."""
    code = currency.upper()
    if code in _ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in _THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` ROUND_HALF_UP (ties away from zero) to the currency's minor unit."""
    with localcontext(_CONTEXT):
        return amount.quantize(_ONE.scaleb(-currency_minor_units(currency)), ROUND_HALF_UP)


def _usage(value: Any, field: str) -> Decimal:
    number = _decimal(value, field)
    if number < 0:
        raise PriceError(field, "must not be negative")
    return number


def _transform(price: Price, quantity: Decimal) -> Decimal:
    """q / divide_by, rounded up/down to an integer exactly, or kept as it is ("none").

    A non-terminating quotient (rounding "none") is rounded half-even to 20 places.
    """
    divisor = price.divide_by if price.divide_by is not None else _ONE
    if price.rounding in ("up", "down"):
        whole, remainder = divmod(quantity, divisor)
        return whole + 1 if price.rounding == "up" and remainder else whole
    if price.divide_by is None:
        return quantity
    context = _CONTEXT.copy()
    context.clear_flags()
    quotient = context.divide(quantity, divisor)
    return quotient.quantize(_QUOTIENT_QUANTUM) if context.flags[Inexact] else quotient


def _events_after_included(price: Price, events: tuple[Decimal, ...]) -> list[Decimal]:
    left = price.included_units
    result = []
    for value in (_transform(price, event) for event in events):
        if left > 0 and value <= left:
            left -= value
            continue
        result.append(value - left)
        left = _ZERO
    return result


def _tier_range(tiers: tuple[Tier, ...], index: int) -> str:
    lower = tiers[index - 1].up_to if index > 0 else None
    upper = tiers[index].up_to
    if lower is None:
        return "all" if upper is None else f"up to {upper}"
    return f"over {lower}" if upper is None else f"over {lower} up to {upper}"


def _line(
    kind: str,
    description: str,
    quantity: Decimal,
    unit_price: Decimal,
    flat_fee: Decimal = _ZERO,
    tier: int | None = None,
) -> BreakdownItem:
    """A breakdown item whose amount is quantity * unit_price + flat_fee."""
    amount = quantity * unit_price + flat_fee
    return BreakdownItem(kind, description, quantity, unit_price, flat_fee, amount, tier)


def _per_unit(price: Price, quantity: Decimal) -> list[BreakdownItem]:
    unit_price = price.unit_price or _ZERO
    return [_line("unit", f"{quantity} units at {unit_price}", quantity, unit_price)]


def _graduated(price: Price, quantity: Decimal) -> list[BreakdownItem]:
    """Tier i spans (previous up_to, up_to]; it holds clamp(q - previous, 0, width) units.

    A tier is entered when q exceeds its lower bound; the first tier always is, so its
    flat fee is charged even at zero usage. Only entered tiers are listed. For
    graduated_percentage the quantity is an amount and each slice pays ``rate / 100``.
    """
    percent = price.model == "graduated_percentage"
    items = []
    lower = _ZERO
    for index, tier in enumerate(price.tiers):
        if index > 0 and quantity <= lower:
            break
        in_tier = quantity - lower
        if tier.up_to is not None:
            in_tier = min(in_tier, tier.up_to - lower)
        unit_price = tier.rate / _HUNDRED if percent else tier.unit_price
        label = f"{tier.rate}%" if percent else f"{unit_price}"
        description = f"Tier {index + 1} ({_tier_range(price.tiers, index)}): {in_tier} at {label}"
        items.append(_line("tier", description, in_tier, unit_price, tier.flat_fee, index))
        if tier.up_to is None:
            break
        lower = tier.up_to
    return items


def _volume(price: Price, quantity: Decimal) -> list[BreakdownItem]:
    """All units at the first tier whose up_to >= quantity (zero is in the first tier)."""
    index, tier = next(
        (i, t) for i, t in enumerate(price.tiers) if t.up_to is None or quantity <= t.up_to
    )
    description = (
        f"Tier {index + 1} ({_tier_range(price.tiers, index)}): "
        f"all {quantity} units at {tier.unit_price}"
    )
    return [_line("tier", description, quantity, tier.unit_price, tier.flat_fee, index)]


def _package(price: Price, quantity: Decimal) -> list[BreakdownItem]:
    """ceil(quantity / package_size) packages; zero usage is zero packages."""
    size = price.package_size or _ONE
    package_price = price.package_price or _ZERO
    whole, remainder = divmod(quantity, size)
    packages = whole + (1 if remainder else 0)
    description = f"{packages} packages of {size} at {package_price}"
    return [_line("package", description, packages, package_price)]


def _percentage(price: Price, amount: Decimal) -> list[BreakdownItem]:
    """A bare quantity: the rate on the summed amount beyond free_amount; no per-event fees."""
    rate = price.rate or _ZERO
    chargeable = max(amount - price.free_amount, _ZERO)
    return [_line("percentage", f"{rate}% of {chargeable}", chargeable, rate / _HUNDRED)]


def _percentage_events(price: Price, events: list[Decimal]) -> list[BreakdownItem]:
    """Per-event percentage fees (see `evaluate`): the rate part, then fixed fees and clamps."""
    rate = price.rate or _ZERO
    chargeable = extras = consumed = _ZERO
    paying = 0
    for index, value in enumerate(events):
        remaining = max(price.free_amount - consumed, _ZERO)
        consumed += value
        if index < price.free_events or (remaining > 0 and value <= remaining):
            continue
        excess = value - remaining
        rate_part = excess * rate / _HUNDRED
        fee = rate_part + price.fixed_fee_per_event
        if price.min_per_event is not None:
            fee = max(fee, price.min_per_event)
        if price.max_per_event is not None:
            fee = min(fee, price.max_per_event)
        paying += 1
        chargeable += excess
        extras += fee - rate_part
    items = [_line("percentage", f"{rate}% of {chargeable}", chargeable, rate / _HUNDRED)]
    per_event_params = (
        price.fixed_fee_per_event > 0
        or price.min_per_event is not None
        or price.max_per_event is not None
    )
    if per_event_params or extras:
        description = (
            f"{paying} paying of {len(events)} events: fixed fee "
            f"{price.fixed_fee_per_event} each, after per-event min/max"
        )
        items.append(BreakdownItem("event_fees", description, Decimal(paying), None, _ZERO, extras))
    return items


def _adjustments(price: Price, subtotal: Decimal) -> list[BreakdownItem]:
    """The minimum's true-up or the maximum's (negative) cap, as one-unit items."""
    if price.minimum_amount is not None and subtotal < price.minimum_amount:
        description = f"Minimum {price.minimum_amount} true-up"
        return [_line("minimum_true_up", description, _ONE, price.minimum_amount - subtotal)]
    if price.maximum_amount is not None and subtotal > price.maximum_amount:
        description = f"Capped at maximum {price.maximum_amount}"
        return [_line("maximum_cap", description, _ONE, price.maximum_amount - subtotal)]
    return []


_MODEL_FUNCTIONS = {
    "per_unit": _per_unit,
    "graduated": _graduated,
    "volume": _volume,
    "package": _package,
    "percentage": _percentage,
    "graduated_percentage": _graduated,
}
