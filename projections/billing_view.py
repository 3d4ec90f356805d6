"""Queries over the billing and usage read models.

`load_facts` is the one way the usage behind an invoice line is found: for a billing
run, for the upcoming invoice and for the line's trace. A line's trace reference says
which facts: those of one meter and customer that happened in the window and were in the
log at or before the line's position bound, plus named late events, less named ignored
ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from domain.billing import SubscriptionState
from domain.trace import Fact
from projections.invoices import (
    billing_activity,
    invoice_lines,
    invoices,
    late_usage,
    plan_versions,
    plans,
    subscriptions,
    tenant_settings,
)
from projections.tables import meter_facts, usage_events

CHUNK = 500


def load_facts(conn: sa.Connection, trace: Mapping[str, Any]) -> list[Fact]:
    """The facts a trace reference names, in log order.

    Keys: meter_id, customer, end_us, from_us (None: since the beginning, for
    WEIGHTED_SUM levels), bound (highest log position), include (late event ids counted
    whatever their time), exclude (event ids never counted).
    """
    t = meter_facts
    query = sa.select(t.c.event_id, t.c.occurred_us, t.c.value, t.c.uniq, t.c.position).where(
        t.c.meter_id == trace["meter_id"],
        t.c.customer == trace["customer"],
        t.c.occurred_us < trace["end_us"],
        t.c.position <= trace["bound"],
    )
    if trace.get("from_us") is not None:
        query = query.where(t.c.occurred_us >= trace["from_us"])
    found = {r.event_id: Fact(*r) for r in conn.execute(query)}
    for chunk in _chunks(trace.get("include") or []):
        for r in conn.execute(
            sa.select(t.c.event_id, t.c.occurred_us, t.c.value, t.c.uniq, t.c.position).where(
                t.c.meter_id == trace["meter_id"], t.c.event_id.in_(chunk)
            )
        ):
            found[r.event_id] = Fact(*r)
    for event_id in trace.get("exclude") or []:
        found.pop(event_id, None)
    return sorted(found.values(), key=lambda f: f.position)


def late_facts(
    conn: sa.Connection,
    meter_ids: Iterable[str],
    customer: str,
    from_us: int,
    to_us: int,
    after: int,
    upto: int,
) -> list[tuple[str, str, int, int]]:
    """(event_id, meter_id, occurred_us, position) of facts in [from, to) that entered
    the log in (after, upto], in log order."""
    t = meter_facts
    ids = list(meter_ids)
    if not ids or from_us >= to_us:
        return []
    rows = conn.execute(
        sa.select(t.c.event_id, t.c.meter_id, t.c.occurred_us, t.c.position)
        .where(
            t.c.meter_id.in_(ids),
            t.c.customer == customer,
            t.c.occurred_us >= from_us,
            t.c.occurred_us < to_us,
            t.c.position > after,
            t.c.position <= upto,
        )
        .order_by(t.c.position)
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


def last_usage_position(conn: sa.Connection, tenant: str, customer: str) -> int:
    """The log position of the customer's latest usage event (0: none)."""
    return (
        conn.execute(
            sa.select(billing_activity.c.last_position).where(
                billing_activity.c.tenant_id == tenant, billing_activity.c.customer == customer
            )
        ).scalar()
        or 0
    )


def usage_event_rows(conn: sa.Connection, event_ids: Sequence[str]) -> dict[str, Any]:
    """idempotency key, timestamp and the like of usage events, by id."""
    found: dict[str, Any] = {}
    t = usage_events
    for chunk in _chunks(list(event_ids)):
        query = sa.select(t.c.id, t.c.idempotency_key, t.c.occurred_us, t.c.customer).where(
            t.c.id.in_(chunk)
        )
        for r in conn.execute(query):
            found[r.id] = r
    return found


# Subscriptions and plans


def subscription_states(
    conn: sa.Connection, tenant: str | None = None
) -> Iterator[SubscriptionState]:
    """Every subscription's billing state (of one tenant, or all), oldest first."""
    query = sa.select(subscriptions.c.state).order_by(subscriptions.c.position)
    if tenant is not None:
        query = query.where(subscriptions.c.tenant_id == tenant)
    for text in conn.execute(query).scalars().all():
        yield SubscriptionState.from_dict(json.loads(text))


def subscription_state(conn: sa.Connection, subscription_id: str) -> SubscriptionState | None:
    text = conn.execute(
        sa.select(subscriptions.c.state).where(subscriptions.c.subscription_id == subscription_id)
    ).scalar()
    return None if text is None else SubscriptionState.from_dict(json.loads(text))


def customer_subscriptions(
    conn: sa.Connection,
    tenant: str,
    customer: str | None = None,
    limit: int = 1000,
    after: int | None = None,
) -> list[tuple[int, SubscriptionState, int]]:
    """(position, state, created_us) of a tenant's subscriptions, oldest first."""
    t = subscriptions
    query = sa.select(t.c.position, t.c.state, t.c.created_us).where(t.c.tenant_id == tenant)
    if customer is not None:
        query = query.where(t.c.customer == customer)
    if after is not None:
        query = query.where(t.c.position > after)
    rows = conn.execute(query.order_by(t.c.position).limit(limit))
    return [
        (r.position, SubscriptionState.from_dict(json.loads(r.state)), r.created_us) for r in rows
    ]


def current_subscription(
    conn: sa.Connection, tenant: str, customer: str, now_us: int
) -> SubscriptionState | None:
    """The customer's subscription that has not ended, or the latest one."""
    states = [s for _, s, _ in customer_subscriptions(conn, tenant, customer)]
    live = [s for s in states if s.ends_us is None or s.ends_us > now_us]
    return (live or states or [None])[-1]


def plan_rows(
    conn: sa.Connection, tenant: str, limit: int = 1000, after: str | None = None
) -> list[Any]:
    query = sa.select(plans).where(plans.c.tenant_id == tenant)
    if after is not None:
        query = query.where(plans.c.key > after)
    return list(conn.execute(query.order_by(plans.c.key).limit(limit)))


def plan_row(conn: sa.Connection, tenant: str, key: str) -> Any:
    return conn.execute(
        sa.select(plans).where(plans.c.tenant_id == tenant, plans.c.key == key)
    ).first()


def plan_version_spec(conn: sa.Connection, plan_id: str, version: int) -> dict[str, Any] | None:
    text = conn.execute(
        sa.select(plan_versions.c.spec).where(
            plan_versions.c.plan_id == plan_id, plan_versions.c.version == version
        )
    ).scalar()
    return None if text is None else json.loads(text)


def tenant_row(conn: sa.Connection, tenant: str) -> Any:
    return conn.execute(
        sa.select(tenant_settings).where(tenant_settings.c.tenant_id == tenant)
    ).first()


# Invoices


def invoice_row(conn: sa.Connection, tenant: str, invoice_id: str) -> Any:
    return conn.execute(
        sa.select(invoices).where(
            invoices.c.tenant_id == tenant, invoices.c.invoice_id == invoice_id
        )
    ).first()


def invoice_line_rows(conn: sa.Connection, invoice_ids: Sequence[str]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {i: [] for i in invoice_ids}
    for chunk in _chunks(list(invoice_ids)):
        query = (
            sa.select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_(chunk))
            .order_by(invoice_lines.c.invoice_id, invoice_lines.c.number)
        )
        for r in conn.execute(query):
            found[r.invoice_id].append(r)
    return found


def line_row(conn: sa.Connection, invoice_id: str, line_id: str) -> Any:
    return conn.execute(
        sa.select(invoice_lines).where(
            invoice_lines.c.invoice_id == invoice_id, invoice_lines.c.line_id == line_id
        )
    ).first()


def list_invoices(
    conn: sa.Connection,
    tenant: str,
    *,
    customer: str | None,
    status: str | None,
    subscription: str | None,
    limit: int,
    before: int | None,
) -> list[Any]:
    """Newest first, keyset-paginated by log position."""
    t = invoices
    query = sa.select(t).where(t.c.tenant_id == tenant)
    if customer:
        query = query.where(t.c.customer == customer)
    if status:
        query = query.where(t.c.status == status)
    if subscription:
        query = query.where(t.c.subscription_id == subscription)
    if before is not None:
        query = query.where(t.c.position < before)
    return list(conn.execute(query.order_by(t.c.position.desc()).limit(limit)))


def list_late_usage(
    conn: sa.Connection,
    tenant: str,
    *,
    customer: str | None,
    policy: str | None,
    limit: int,
    after: tuple[int, str] | None,
) -> list[Any]:
    t, u = late_usage, usage_events
    query = (
        sa.select(t, u.c.idempotency_key, u.c.occurred_us, u.c.value)
        .join(u, u.c.id == t.c.event_id, isouter=True)
        .where(t.c.tenant_id == tenant)
    )
    if customer:
        query = query.where(t.c.customer == customer)
    if policy:
        query = query.where(t.c.policy == policy)
    if after is not None:
        query = query.where(
            sa.tuple_(t.c.position, t.c.event_id)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    return list(conn.execute(query.order_by(t.c.position, t.c.event_id).limit(limit)))


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
