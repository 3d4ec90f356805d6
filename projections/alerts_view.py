"""Queries over the budgets, access and webhook tables (the query API's only source)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from projections.access import budgets
from projections.outbox import (
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
)


def list_budgets(
    conn: sa.Connection,
    tenant: str,
    *,
    customer: str | None,
    limit: int,
    after: tuple[str, str] | None,
) -> list[Any]:
    """Budgets ordered by (customer, id), keyset-paginated."""
    t = budgets
    q = sa.select(t).where(t.c.tenant_id == tenant)
    if customer is not None:
        q = q.where(t.c.customer == customer)
    if after is not None:
        q = q.where(
            sa.tuple_(t.c.customer, t.c.budget_id)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    return conn.execute(q.order_by(t.c.customer, t.c.budget_id).limit(limit)).all()


def budget_row(conn: sa.Connection, budget_id: str) -> Any:
    return conn.execute(sa.select(budgets).where(budgets.c.budget_id == budget_id)).first()


def list_endpoints(conn: sa.Connection, tenant: str) -> list[Any]:
    t = webhook_endpoints
    return conn.execute(
        sa.select(t).where(t.c.tenant_id == tenant).order_by(t.c.position, t.c.endpoint_id)
    ).all()


def endpoint_row(conn: sa.Connection, tenant: str, endpoint_id: str) -> Any:
    t = webhook_endpoints
    return conn.execute(
        sa.select(t).where(t.c.tenant_id == tenant, t.c.endpoint_id == endpoint_id)
    ).first()


def list_deliveries(
    conn: sa.Connection,
    tenant: str,
    *,
    endpoint: str | None,
    status: str | None,
    limit: int,
    before: tuple[int, str] | None,
) -> list[dict[str, Any]]:
    """Messages with their delivery state, newest first, and each one's attempts."""
    m, d = webhook_messages, webhook_deliveries
    q = (
        sa.select(
            m.c.message_id,
            m.c.endpoint_id,
            m.c.event_type,
            m.c.payload,
            m.c.created_us,
            m.c.position,
            d.c.status,
            d.c.attempts,
            d.c.next_attempt_us,
            d.c.last_status_code,
            d.c.last_error,
            d.c.delivered_us,
        )
        .join(d, d.c.message_id == m.c.message_id)
        .where(m.c.tenant_id == tenant)
    )
    if endpoint is not None:
        q = q.where(m.c.endpoint_id == endpoint)
    if status is not None:
        q = q.where(d.c.status == status)
    if before is not None:
        q = q.where(
            sa.tuple_(m.c.position, m.c.message_id)
            < sa.tuple_(sa.literal(before[0]), sa.literal(before[1]))
        )
    rows = [
        dict(r)
        for r in conn.execute(
            q.order_by(m.c.position.desc(), m.c.message_id.desc()).limit(limit)
        ).mappings()
    ]
    attempts: dict[str, list[Any]] = {r["message_id"]: [] for r in rows}
    if attempts:
        a = webhook_attempts
        for row in conn.execute(
            sa.select(a).where(a.c.message_id.in_(list(attempts))).order_by(a.c.attempt)
        ):
            attempts[row.message_id].append(row)
    for r in rows:
        r["attempt_log"] = attempts[r["message_id"]]
    return rows
