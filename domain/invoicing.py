"""An invoice's lines from a plan version and a period's usage: one pure function that
billing runs, the upcoming invoice and corrections all call.

Money rules (the public contract):
- each line's amount is computed exactly, then rounded half-up to the currency's minor
  unit when the invoice is finalized (`round_money`);
- included credits (money per period, refreshed every period) are spent on the period's
  rounded usage lines before anything is paid, never on base fees;
- the plan minimum is a true-up line: the period's charges (usage, the period's base fee
  wherever it was billed, less credits) are raised to at least the minimum;
- subtotal = sum of the rounded lines; total = subtotal - credits_applied - wallet_applied.

A correction (adjustment) is the difference between the invoice recomputed with the late
usage and the invoice as billed so far, line by line, on rounded amounts, so the original
plus its adjustments always equals the recomputed invoice to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Context, Decimal, localcontext
from typing import Any

from domain.billing import PlanSpec
from domain.pricing import BreakdownItem, Price, evaluate, round_money

ZERO = Decimal(0)
TIERED = ("graduated", "volume", "graduated_percentage")
_WIDE = Context(prec=100)


@dataclass(frozen=True)
class MeterUsage:
    """A meter's usage for one line: its quantity, the per-event values (log order, for
    percentage prices) and the trace reference that reproduces the facts behind it."""

    quantity: Decimal
    events: tuple[Decimal, ...] = ()
    trace: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DraftLine:
    kind: str  # usage | base_fee | minimum_true_up | usage_adjustment | minimum_adjustment
    description: str
    meter: str | None
    quantity: Decimal
    unit_price: Decimal | None
    breakdown: tuple[dict[str, Any], ...]
    amount: Decimal  # exact
    rounded: Decimal  # to the currency's minor unit
    period_start_us: int
    period_end_us: int
    model: str | None = None
    trace: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class InvoiceDraft:
    lines: tuple[DraftLine, ...]
    subtotal: Decimal
    credits_applied: Decimal
    total: Decimal

    def usage_line(self, meter: str) -> DraftLine | None:
        return next((x for x in self.lines if x.kind == "usage" and x.meter == meter), None)

    def line_of_kind(self, kind: str) -> DraftLine | None:
        return next((x for x in self.lines if x.kind == kind), None)


@dataclass(frozen=True)
class AdvanceFee:
    """The next period's base fee, billed in advance on this invoice."""

    plan: PlanSpec
    start_us: int
    end_us: int


def compute_invoice(
    plan: PlanSpec,
    period_start_us: int,
    period_end_us: int,
    usage: Mapping[str, MeterUsage],
    *,
    arrears_fee: bool,
    prepaid_fee: Decimal = ZERO,
    advance: AdvanceFee | None = None,
    currency: str | None = None,
) -> InvoiceDraft:
    """The lines a period's invoice holds, in a stable order: one usage line per priced
    meter (in the plan's order, zero usage included), the base fee in arrears, the next
    period's base fee in advance, then the minimum true-up.

    `prepaid_fee` is the rounded base fee already billed in advance for this period; it
    counts toward the minimum like an arrears fee does.
    """
    currency = currency or plan.currency
    lines: list[DraftLine] = []
    for price in plan.prices:
        assert price.meter is not None
        lines.append(
            usage_line(
                price,
                usage.get(price.meter, MeterUsage(ZERO)),
                currency,
                period_start_us,
                period_end_us,
            )
        )
    usage_total = sum((x.rounded for x in lines), ZERO)
    period_fee = prepaid_fee
    if arrears_fee and plan.base_fee > 0:
        fee = fee_line(plan, currency, period_start_us, period_end_us, "in arrears")
        lines.append(fee)
        period_fee = fee.rounded
    if advance is not None and advance.plan.in_advance:
        lines.append(
            fee_line(advance.plan, currency, advance.start_us, advance.end_us, "in advance")
        )
    credits = min(round_money(plan.included_credits, currency), max(usage_total, ZERO))
    if plan.minimum_amount is not None:
        owed = round_money(plan.minimum_amount, currency) - (usage_total + period_fee - credits)
        if owed > 0:
            lines.append(
                DraftLine(
                    kind="minimum_true_up",
                    description=f"Minimum {plan.minimum_amount} {currency} for the period",
                    meter=None,
                    quantity=Decimal(1),
                    unit_price=owed,
                    breakdown=(),
                    amount=owed,
                    rounded=owed,
                    period_start_us=period_start_us,
                    period_end_us=period_end_us,
                )
            )
    subtotal = sum((x.rounded for x in lines), ZERO)
    return InvoiceDraft(tuple(lines), subtotal, credits, subtotal - credits)


def usage_line(
    price: Price, usage: MeterUsage, currency: str, start_us: int, end_us: int
) -> DraftLine:
    """One priced meter. Negative usage (a SUM of corrections) is billed as zero."""
    if price.model == "percentage":
        result = evaluate(price, events=[max(v, ZERO) for v in usage.events])
    else:
        result = evaluate(price, max(usage.quantity, ZERO))
    return DraftLine(
        kind="usage",
        description=f"{price.meter} ({price.model.replace('_', ' ')})",
        meter=price.meter,
        quantity=usage.quantity,
        unit_price=price.unit_price if price.model == "per_unit" else None,
        breakdown=tuple(breakdown_dict(item) for item in result.breakdown),
        amount=result.amount,
        rounded=round_money(result.amount, currency),
        period_start_us=start_us,
        period_end_us=end_us,
        model=price.model,
        trace=usage.trace,
    )


def fee_line(plan: PlanSpec, currency: str, start_us: int, end_us: int, when: str) -> DraftLine:
    return DraftLine(
        kind="base_fee",
        description=f"{plan.name} base fee ({when})",
        meter=None,
        quantity=Decimal(1),
        unit_price=plan.base_fee,
        breakdown=(),
        amount=plan.base_fee,
        rounded=round_money(plan.base_fee, currency),
        period_start_us=start_us,
        period_end_us=end_us,
    )


def opening_invoice(plan: PlanSpec, start_us: int, end_us: int) -> InvoiceDraft:
    """The first period's base fee, billed in advance at its start."""
    line = fee_line(plan, plan.currency, start_us, end_us, "in advance")
    return InvoiceDraft((line,), line.rounded, ZERO, line.rounded)


def adjustment(base: InvoiceDraft, new: InvoiceDraft) -> InvoiceDraft:
    """What `new` adds to what `base` billed: usage lines whose quantity or amount moved,
    the minimum true-up's change, and the change in credits applied. Each adjustment
    line's rounded amount is the change of the rounded amount, so billed + adjustments
    equals `new` to the minor unit."""
    lines: list[DraftLine] = []
    for line in new.lines:
        if line.kind != "usage":
            continue
        old = base.usage_line(line.meter or "")
        old_quantity = old.quantity if old else ZERO
        old_amount = old.amount if old else ZERO
        old_rounded = old.rounded if old else ZERO
        if line.quantity == old_quantity and line.rounded == old_rounded:
            continue
        trace = dict(line.trace or {})
        trace["base"] = dict(old.trace) if old and old.trace else None
        lines.append(
            replace(
                line,
                kind="usage_adjustment",
                description=f"Late usage: {line.description}",
                quantity=line.quantity - old_quantity,
                unit_price=line.unit_price,
                amount=line.amount - old_amount,
                rounded=line.rounded - old_rounded,
                trace=trace,
            )
        )
    old_min = base.line_of_kind("minimum_true_up")
    new_min = new.line_of_kind("minimum_true_up")
    change = (new_min.rounded if new_min else ZERO) - (old_min.rounded if old_min else ZERO)
    if change:
        template = new_min or old_min
        assert template is not None
        lines.append(
            replace(
                template,
                kind="minimum_adjustment",
                description="Minimum true-up change",
                unit_price=change,
                amount=change,
                rounded=change,
            )
        )
    credits = new.credits_applied - base.credits_applied
    subtotal = sum((x.rounded for x in lines), ZERO)
    return InvoiceDraft(tuple(lines), subtotal, credits, subtotal - credits)


def breakdown_dict(item: BreakdownItem) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "description": item.description,
        "quantity": plain(item.quantity),
        "unit_price": None if item.unit_price is None else plain(item.unit_price),
        "flat_fee": plain(item.flat_fee),
        "amount": plain(item.amount),
        "tier": item.tier,
    }


def plain(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros ("1500", "0.25", "0")."""
    if not value:
        return "0"
    with localcontext(_WIDE):
        if value == value.to_integral_value():
            return format(value.quantize(Decimal(1)), "f")
        return format(value.normalize(), "f")


def money(value: Decimal, currency: str) -> str:
    """An amount in the currency's minor units ("12.50", "1500" for JPY, "1.235" KWD)."""
    return format(round_money(value, currency), "f")
