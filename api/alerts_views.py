"""Request and reply shapes of budgets, webhook endpoints, deliveries and access."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa

from api.schemas import decimal_text, instant_text
from domain.budgets import MONEY
from domain.instants import from_us
from workers.runtime import Runtime

MONEY_NOTICE = (
    "money budgets are measured by the period's usage charges, which exist once usage "
    "is priced by a plan; until then the measured amount is 0 and the budget never fires"
)


class BudgetIn(msgspec.Struct):
    """A budget: money per period ({"customer", "amount"}) or units of one meter
    ({"customer", "meter", "units"}); thresholds in percent; block_at in percent
    (default none: alerts only, access never blocked)."""

    customer: str
    amount: Decimal | None = None
    meter: str | None = None
    units: Decimal | None = None
    thresholds: list[int] = msgspec.field(default_factory=lambda: [80, 100])
    block_at: int | None = None


class WebhookEndpointIn(msgspec.Struct):
    """An endpoint for the listed event types ("*": all); the reply holds its signing
    secret, shown this once."""

    url: str
    event_types: list[str]
    description: str | None = None


class AccessOut(msgspec.Struct):
    allowed: bool
    reasons: list[dict[str, Any]]


@dataclass(frozen=True)
class BudgetView:
    """A budget's fields, from the aggregate (commands) or the read model (queries)."""

    budget_id: str
    tenant_id: str
    customer: str
    kind: str
    meter: str | None
    limit: Decimal
    currency: str | None
    thresholds: list[int]
    block_at: int | None
    period_start: datetime | None
    crossed: list[int]
    blocked: bool

    @classmethod
    def of_row(cls, row: Any) -> BudgetView:
        return cls(
            row.budget_id,
            row.tenant_id,
            row.customer,
            row.kind,
            row.meter,
            row.limit_value,
            row.currency,
            json.loads(row.thresholds),
            row.block_at,
            None if row.period_start_us is None else from_us(row.period_start_us),
            json.loads(row.crossed),
            row.blocked,
        )

    @classmethod
    def of_aggregate(cls, budget: Any) -> BudgetView:
        return cls(
            budget.id.hex,
            budget.tenant_id,
            budget.customer,
            budget.kind,
            budget.meter,
            budget.limit,
            budget.currency,
            list(budget.thresholds),
            budget.block_at,
            budget.period_start,
            list(budget.crossed),
            budget.blocked,
        )


def budget_out(runtime: Runtime, conn: sa.Connection, view: BudgetView) -> dict[str, Any]:
    """The budget as the API shows it, measured now in its current period, exactly as
    the budget processor measures it."""
    processor = runtime.alerts.processor
    period = processor.period_for(conn, view, datetime.now(UTC))
    measured = processor.measures[view.kind].measure(conn, view, period)
    current = view.period_start == period.start
    out: dict[str, Any] = {
        "id": "bud_" + view.budget_id,
        "object": "budget",
        "customer": view.customer,
        "kind": view.kind,
        "meter": view.meter,
    }
    if view.kind == MONEY:
        out.update(amount=decimal_text(view.limit), currency=view.currency, notice=MONEY_NOTICE)
    else:
        out["units"] = decimal_text(view.limit)
    out.update(
        thresholds=view.thresholds,
        block_at=view.block_at,
        period_start=instant_text(period.start),
        period_end=instant_text(period.end),
        measured=decimal_text(measured),
        crossed_thresholds=sorted(view.crossed) if current else [],
        blocked=view.blocked,
    )
    return out


def endpoint_out(row: Any) -> dict[str, Any]:
    return {
        "id": "we_" + row.endpoint_id,
        "object": "webhook_endpoint",
        "url": row.url,
        "event_types": json.loads(row.event_types),
        "description": row.description,
        "status": row.status,
        "disabled_reason": row.disabled_reason,
        "created_at": instant_text(from_us(row.created_us)),
    }


def _at(us: int | None) -> str | None:
    return None if us is None else instant_text(from_us(us))


def delivery_out(row: dict[str, Any]) -> dict[str, Any]:
    pending = row["status"] == "pending"
    return {
        "id": row["message_id"],
        "object": "webhook_delivery",
        "endpoint": "we_" + row["endpoint_id"],
        "type": row["event_type"],
        "status": row["status"],
        "attempt_count": row["attempts"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "next_retry_at": _at(row["next_attempt_us"]) if pending and row["attempts"] else None,
        "delivered_at": _at(row["delivered_us"]),
        "created_at": _at(row["created_us"]),
        "payload": json.loads(row["payload"]),
        "attempts": [
            {
                "attempt": a.attempt,
                "attempted_at": _at(a.attempted_us),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "next_retry_at": _at(a.next_retry_us),
            }
            for a in row["attempt_log"]
        ],
    }
