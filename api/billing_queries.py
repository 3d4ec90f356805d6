"""The query API for billing: invoices, their lines' usage traces, the upcoming invoice,
plans, subscriptions and late usage. Answered from the read models only."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar import Request, get

from api.auth import runtime_of
from api.billing_views import (
    draft_json,
    instant_us,
    invoice_json,
    plan_json,
    subscription_json,
    tenant_json,
    trace_events,
)
from api.queries import check_limit, decode_cursor, encode_cursor
from api.schemas import ListOut
from domain.errors import InvalidInput, NotFound
from domain.invoicing import plain
from domain.tenants import LATE_EVENT_POLICIES
from projections.billing_view import (
    customer_subscriptions,
    invoice_line_rows,
    invoice_row,
    line_row,
    list_invoices,
    list_late_usage,
    plan_row,
    plan_rows,
    plan_version_spec,
    subscription_state,
    usage_event_rows,
)
from projections.usage_view import customer_row
from workers.billing import upcoming_draft

STATUSES = ("draft", "finalized", "paid", "void")


def _uuid_hex(text: str, prefix: str, what: str) -> str:
    try:
        return UUID(text.removeprefix(prefix)).hex
    except ValueError:
        raise NotFound(f"no {what} {text!r}", "id") from None


def trace_page(conn: Any, trace: dict[str, Any], limit: int, cursor: str | None) -> ListOut:
    after = decode_cursor(cursor)
    events = trace_events(conn, trace)
    if after:
        events = [(f, v) for f, v in events if f.position > after[0]]
    page = events[:limit]
    rows = usage_event_rows(conn, [f.event_id for f, _ in page])
    data = [
        {
            "id": "evt_" + fact.event_id,
            "idempotency_key": rows[fact.event_id].idempotency_key
            if fact.event_id in rows
            else None,
            "timestamp": instant_us(fact.occurred_us),
            "value": plain(value),
        }
        for fact, value in page
    ]
    more = len(events) > limit
    return ListOut(data=data, next_cursor=encode_cursor([page[-1][0].position]) if more else None)


class BillingQueries:
    """Billing read handlers (mixed into the /v1 controller by create_app)."""

    @get("/invoices", operation_id="listInvoices", sync_to_thread=True)
    def list_invoices(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        customer: str | None = None,
        status: str | None = None,
        subscription: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        """The tenant's invoices, newest first."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", "status")
        before = decode_cursor(cursor)
        sub = _uuid_hex(subscription, "sub_", "subscription") if subscription else None
        with runtime_of(request).read_engine.connect() as conn:
            rows = list_invoices(
                conn,
                tenant.hex,
                customer=customer,
                status=status,
                subscription=sub,
                limit=check_limit(limit) + 1,
                before=before[0] if before else None,
            )
            page = rows[:limit]
            lines = invoice_line_rows(conn, [r.invoice_id for r in page])
        more = len(rows) > limit
        return ListOut(
            data=[invoice_json(r, lines[r.invoice_id]) for r in page],
            next_cursor=encode_cursor([page[-1].position]) if more else None,
        )

    @get("/invoices/{invoice_id:str}", operation_id="getInvoice", sync_to_thread=True)
    def get_invoice(
        self, request: Request[Any, Any, Any], tenant: UUID, invoice_id: str
    ) -> dict[str, Any]:
        oid = _uuid_hex(invoice_id, "inv_", "invoice")
        with runtime_of(request).read_engine.connect() as conn:
            row = invoice_row(conn, tenant.hex, oid)
            if row is None:
                raise NotFound(f"no invoice {invoice_id!r}", "id")
            return invoice_json(row, invoice_line_rows(conn, [oid])[oid])

    @get(
        "/invoices/{invoice_id:str}/lines/{line_id:str}/events",
        operation_id="listInvoiceLineEvents",
        sync_to_thread=True,
    )
    def line_events(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        invoice_id: str,
        line_id: str,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        """Every usage event behind a line, in log order, each with its contribution to the
        line's quantity; the contributions add up to the quantity exactly."""
        oid = _uuid_hex(invoice_id, "inv_", "invoice")
        lid = _uuid_hex(line_id, "il_", "line")
        check_limit(limit)
        with runtime_of(request).read_engine.connect() as conn:
            if invoice_row(conn, tenant.hex, oid) is None:
                raise NotFound(f"no invoice {invoice_id!r}", "id")
            line = line_row(conn, oid, lid)
            if line is None:
                raise NotFound(f"no line {line_id!r} on invoice {invoice_id!r}", "line_id")
            if line.trace is None:  # a fee or a true-up: no usage behind it
                return ListOut(data=[], next_cursor=None)
            return trace_page(conn, json.loads(line.trace), limit, cursor)

    @get(
        "/customers/{external_id:str}/upcoming-invoice",
        operation_id="getUpcomingInvoice",
        sync_to_thread=True,
    )
    def upcoming_invoice(
        self, request: Request[Any, Any, Any], tenant: UUID, external_id: str
    ) -> dict[str, Any]:
        """What the customer's open period would bill if it closed now."""
        runtime = runtime_of(request)
        with runtime.read_engine.connect() as conn:
            if customer_row(conn, tenant.hex, external_id) is None:
                raise NotFound(f"no customer {external_id!r}", "external_id")
            found = upcoming_draft(
                conn, tenant.hex, external_id, datetime.now(UTC), runtime.settings.late_event_policy
            )
        if found is None:
            raise NotFound(
                f"customer {external_id!r} has no open subscription period", "external_id"
            )
        return draft_json(*found)

    @get("/plans", operation_id="listPlans", sync_to_thread=True)
    def list_plans(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        after = decode_cursor(cursor)
        with runtime_of(request).read_engine.connect() as conn:
            rows = plan_rows(conn, tenant.hex, check_limit(limit) + 1, after[0] if after else None)
            page = rows[:limit]
            data = [
                plan_json(
                    plan_version_spec(conn, r.plan_id, r.latest_version) or {}, r.latest_version
                )
                for r in page
            ]
        more = len(rows) > limit
        return ListOut(data=data, next_cursor=encode_cursor([page[-1].key]) if more else None)

    @get("/plans/{key:str}", operation_id="getPlan", sync_to_thread=True)
    def get_plan(
        self, request: Request[Any, Any, Any], tenant: UUID, key: str, version: int | None = None
    ) -> dict[str, Any]:
        """The plan's latest version, or `?version=n`."""
        with runtime_of(request).read_engine.connect() as conn:
            row = plan_row(conn, tenant.hex, key)
            if row is None:
                raise NotFound(f"no plan {key!r}", "key")
            spec = plan_version_spec(conn, row.plan_id, version or row.latest_version)
            if spec is None:
                raise NotFound(f"plan {key!r} has no version {version}", "version")
            return plan_json(spec, version or row.latest_version)

    @get("/subscriptions", operation_id="listSubscriptions", sync_to_thread=True)
    def list_subscriptions(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        customer: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        after = decode_cursor(cursor)
        now = datetime.now(UTC)
        with runtime_of(request).read_engine.connect() as conn:
            rows = customer_subscriptions(
                conn, tenant.hex, customer, check_limit(limit) + 1, after[0] if after else None
            )
        page = rows[:limit]
        more = len(rows) > limit
        return ListOut(
            data=[subscription_json(state, now) for _, state, _ in page],
            next_cursor=encode_cursor([page[-1][0]]) if more else None,
        )

    @get(
        "/subscriptions/{subscription_id:str}", operation_id="getSubscription", sync_to_thread=True
    )
    def get_subscription(
        self, request: Request[Any, Any, Any], tenant: UUID, subscription_id: str
    ) -> dict[str, Any]:
        oid = _uuid_hex(subscription_id, "sub_", "subscription")
        with runtime_of(request).read_engine.connect() as conn:
            state = subscription_state(conn, oid)
        if state is None or state.tenant_id != tenant.hex:
            raise NotFound(f"no subscription {subscription_id!r}", "id")
        return subscription_json(state, datetime.now(UTC))

    @get("/tenant", operation_id="getTenant", sync_to_thread=True)
    def get_tenant(self, request: Request[Any, Any, Any], tenant: UUID) -> dict[str, Any]:
        """The key's tenant and its settings (the late-event policy)."""
        runtime = runtime_of(request)
        with runtime.read_engine.connect() as conn:
            return tenant_json(conn, tenant.hex, runtime.settings.late_event_policy)

    @get("/late-usage-events", operation_id="listLateUsageEvents", sync_to_thread=True)
    def late_usage_events(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        customer: str | None = None,
        policy: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        """Usage that arrived after its period closed, and what the policy decided
        (`?policy=ignore` lists the events stored but never billed)."""
        if policy is not None and policy not in LATE_EVENT_POLICIES:
            raise InvalidInput(f"policy must be one of {', '.join(LATE_EVENT_POLICIES)}", "policy")
        after = decode_cursor(cursor)
        with runtime_of(request).read_engine.connect() as conn:
            rows = list_late_usage(
                conn,
                tenant.hex,
                customer=customer,
                policy=policy,
                limit=check_limit(limit) + 1,
                after=(after[0], after[1]) if after else None,
            )
        page = rows[:limit]
        more = len(rows) > limit
        return ListOut(
            data=[_late_json(r) for r in page],
            next_cursor=encode_cursor([page[-1].position, page[-1].event_id]) if more else None,
        )


def _late_json(r: Any) -> dict[str, Any]:
    return {
        "id": "evt_" + r.event_id,
        "object": "late_usage_event",
        "idempotency_key": r.idempotency_key,
        "customer": r.customer,
        "timestamp": None if r.occurred_us is None else instant_us(r.occurred_us),
        "value": None if r.value is None else plain(r.value),
        "subscription": "sub_" + r.subscription_id,
        "period_start": instant_us(r.period_start_us),
        "policy": r.policy,
        "original_invoice": None
        if r.original_invoice_id is None
        else "inv_" + r.original_invoice_id,
        "adjustment_invoice": None
        if r.adjustment_invoice_id is None
        else "inv_" + r.adjustment_invoice_id,
        "decided_at_position": r.decided_position,
    }
