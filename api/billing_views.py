"""JSON shapes of plans, subscriptions, invoices and traces (commands and queries share them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from api.schemas import CustomerMeterOut, CustomerUsageOut, instant_text
from domain.billing import SubscriptionState
from domain.instants import from_us, to_us
from domain.invoicing import DraftLine, InvoiceDraft, money, plain
from domain.trace import Fact, contributions
from projections.billing_view import load_facts, tenant_row
from projections.usage_view import list_meters, meter_total
from workers.billing import PlanUse, upcoming_draft

TIERED = ("graduated", "volume", "graduated_percentage")


def instant_us(us: int) -> str:
    return instant_text(from_us(us))


def plan_json(spec: dict[str, Any], version: int) -> dict[str, Any]:
    return {"object": "plan", "version": version, **spec}


def subscription_json(state: SubscriptionState, now: datetime) -> dict[str, Any]:
    now_us = to_us(now)
    current = state.period_of(max(now_us, state.start_us))
    ended = state.ends_us is not None and state.ends_us <= now_us
    return {
        "id": "sub_" + state.subscription_id,
        "object": "subscription",
        "customer": state.customer,
        "plan": state.plan_at(current[0] if current else now_us),
        "interval": state.interval,
        "currency": state.currency,
        "timezone": state.timezone,
        "start_at": instant_us(state.start_us),
        "billing_anchor": instant_us(state.anchor_us),
        "status": "canceled" if ended else ("active" if now_us >= state.start_us else "scheduled"),
        "current_period_start": instant_us(current[0]) if current else None,
        "current_period_end": instant_us(current[1]) if current else None,
        "cancel_at": None if state.ends_us is None else instant_us(state.ends_us),
        "plan_changes": [
            {"plan": plan, "effective_at": instant_us(at)} for at, plan in state.plan_changes
        ],
    }


def tenant_json(conn: sa.Connection, tenant: str, default: str) -> dict[str, Any]:
    row = tenant_row(conn, tenant)
    override = row.late_event_policy if row is not None else None
    return {
        "object": "tenant",
        "id": "ten_" + tenant,
        "name": row.name if row is not None else None,
        "late_event_policy": override or default,
        "late_event_policy_is_default": override is None,
    }


# Invoices


def invoice_json(row: Any, lines: Sequence[Any]) -> dict[str, Any]:
    currency = row.currency
    return {
        "id": "inv_" + row.invoice_id,
        "object": "invoice",
        "customer": row.customer,
        "subscription": "sub_" + row.subscription_id,
        "kind": row.kind,
        "corrects": None if row.corrects is None else "inv_" + row.corrects,
        "status": row.status,
        "period_start": instant_us(row.period_start_us),
        "period_end": instant_us(row.period_end_us),
        "currency": currency,
        "plan": row.plan,
        "plan_version": row.plan_version,
        "lines": [line_json(x, currency) for x in lines],
        "subtotal": _money(row.subtotal, currency),
        "credits_applied": _money(row.credits_applied, currency),
        "wallet_applied": _money(row.wallet_applied, currency),
        "total": _money(row.total, currency),
        "closed_at_position": row.closed_at_position,
        "created_at": instant_us(row.created_us),
        "finalized_at": None if row.finalized_us is None else instant_us(row.finalized_us),
    }


def line_json(row: Any, currency: str) -> dict[str, Any]:
    breakdown = json.loads(row.breakdown)
    return _line(
        line_id="il_" + row.line_id,
        kind=row.kind,
        description=row.description,
        meter=row.meter,
        model=row.model,
        quantity=row.quantity,
        unit_price=row.unit_price,
        breakdown=breakdown,
        amount=row.amount_rounded if row.amount_rounded is not None else row.amount,
        exact=row.amount,
        start_us=row.period_start_us,
        end_us=row.period_end_us,
        currency=currency,
    )


def _line(
    *,
    line_id: str | None,
    kind: str,
    description: str,
    meter: str | None,
    model: str | None,
    quantity: Decimal,
    unit_price: Decimal | None,
    breakdown: list[dict[str, Any]],
    amount: Decimal,
    exact: Decimal,
    start_us: int,
    end_us: int,
    currency: str,
) -> dict[str, Any]:
    return {
        "id": line_id,
        "object": "line_item",
        "type": kind,
        "description": description,
        "meter": meter,
        "model": model,
        "quantity": plain(quantity),
        "unit_price": None if unit_price is None else plain(unit_price),
        "tiers": [b for b in breakdown if b["kind"] == "tier"] if model in TIERED else None,
        "breakdown": breakdown,
        "amount": money(amount, currency),
        "amount_exact": plain(exact),
        "period_start": instant_us(start_us),
        "period_end": instant_us(end_us),
    }


def draft_json(
    state: SubscriptionState, period: tuple[int, int], use: PlanUse, draft: InvoiceDraft
) -> dict[str, Any]:
    """The upcoming invoice: the same shape as an issued one, without ids."""
    currency = state.currency
    return {
        "id": None,
        "object": "invoice",
        "customer": state.customer,
        "subscription": "sub_" + state.subscription_id,
        "kind": "regular",
        "corrects": None,
        "status": "upcoming",
        "period_start": instant_us(period[0]),
        "period_end": instant_us(period[1]),
        "currency": currency,
        "plan": use.key,
        "plan_version": use.version,
        "lines": [draft_line_json(x, currency) for x in draft.lines],
        "subtotal": money(draft.subtotal, currency),
        "credits_applied": money(draft.credits_applied, currency),
        "wallet_applied": money(Decimal(0), currency),
        "total": money(draft.total, currency),
        "closed_at_position": None,
    }


def draft_line_json(line: DraftLine, currency: str) -> dict[str, Any]:
    return _line(
        line_id=None,
        kind=line.kind,
        description=line.description,
        meter=line.meter,
        model=line.model,
        quantity=line.quantity,
        unit_price=line.unit_price,
        breakdown=list(line.breakdown),
        amount=line.rounded,
        exact=line.amount,
        start_us=line.period_start_us,
        end_us=line.period_end_us,
        currency=currency,
    )


def _money(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else money(value, currency)


# Traces


def trace_events(conn: sa.Connection, trace: dict[str, Any]) -> list[tuple[Fact, Decimal]]:
    """Every usage event behind a line with its contribution to the line's quantity, in log
    order. For a correction, the change of each event's contribution (the late events and
    any whose share moved), so the values add up to the correction's quantity."""
    aggregation, start, end = trace["aggregation"], trace["start_us"], trace["end_us"]
    facts = load_facts(conn, trace)
    shares = contributions(aggregation, facts, start, end)
    base = trace.get("base")
    if not base:
        return list(zip(facts, shares, strict=True))
    base_facts = load_facts(conn, base)
    before = dict(
        zip(
            (f.event_id for f in base_facts),
            contributions(aggregation, base_facts, start, end),
            strict=True,
        )
    )
    added = set(trace.get("include") or []) - set(base.get("include") or [])
    result = []
    for fact, share in zip(facts, shares, strict=True):
        change = share - before.pop(fact.event_id, Decimal(0))
        if change or fact.event_id in added:
            result.append((fact, change))
    gone = [f for f in base_facts if before.get(f.event_id)]
    result += [(f, -before[f.event_id]) for f in gone]
    result.sort(key=lambda pair: pair[0].position)
    return result


# Customer usage


def subscription_usage(
    conn: sa.Connection, tenant: str, customer: str, now: datetime, default_policy: str
) -> CustomerUsageOut | None:
    """GET /v1/customers/{id}/usage for a customer with a subscription: its open period,
    each meter's quantity and, for priced meters, the amount the upcoming invoice bills
    (the same computation); `total` is the sum of those usage amounts."""
    found = upcoming_draft(conn, tenant, customer, now, default_policy)
    if found is None:
        return None
    state, (start, end), _, draft = found
    priced = {x.meter: x for x in draft.lines if x.kind == "usage"}
    meters = []
    for m in list_meters(conn, tenant):
        line = priced.get(m.spec.key)
        if line is not None:
            quantity, amount = line.quantity, money(line.rounded, state.currency)
        else:
            quantity = meter_total(conn, m, customer, from_us(start), from_us(end))
            amount = None
        meters.append(CustomerMeterOut(meter=m.spec.key, quantity=plain(quantity), amount=amount))
    total = sum((x.rounded for x in priced.values()), Decimal(0))
    return CustomerUsageOut(
        customer=customer,
        period_start=instant_us(start),
        period_end=instant_us(end),
        meters=meters,
        total=money(total, state.currency),
    )
