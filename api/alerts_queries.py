"""The query API for alerts: budgets, webhook endpoints and deliveries, and the
access check an API gateway calls before serving a request."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request, get

from api.alerts_views import AccessOut, BudgetView, budget_out, delivery_out, endpoint_out
from api.auth import runtime_of
from api.queries import check_limit, decode_cursor, encode_cursor
from api.schemas import ListOut
from domain.errors import InvalidInput, NotFound
from projections.alerts_view import endpoint_row, list_budgets, list_deliveries, list_endpoints

DELIVERY_STATUSES = ("pending", "delivered", "failed", "cancelled")


def endpoint_hex(text: str) -> str:
    try:
        return UUID(text.removeprefix("we_")).hex
    except ValueError:
        raise NotFound(f"no webhook endpoint {text!r}", "endpoint") from None


class AlertQueries:
    """Budget, webhook and access read handlers (mixed into the /v1 controller)."""

    @get("/customers/{external_id:str}/access", operation_id="getCustomerAccess")
    async def access(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        external_id: str,
        meter: str | None = None,
    ) -> AccessOut:
        """May the customer use `meter` now (any meter, without it)? Answered from a
        cache kept in step with the budgets: no database query on the usual path."""
        reader = runtime_of(request).alerts.access
        if not await reader.customer_exists(tenant.hex, external_id):
            raise NotFound(f"no customer {external_id!r}", "external_id")
        if meter is not None and not await reader.meter_exists(tenant.hex, meter):
            raise NotFound(f"no meter {meter!r}", "meter")
        reasons = await reader.reasons(tenant.hex, external_id, meter)
        return AccessOut(allowed=not reasons, reasons=reasons)

    @get("/budgets", operation_id="listBudgets", sync_to_thread=True)
    def list_budgets(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        customer: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        """The tenant's budgets (of one customer), each measured in its current period."""
        after = decode_cursor(cursor)
        runtime = runtime_of(request)
        with runtime.read_engine.connect() as conn:
            rows = list_budgets(
                conn,
                tenant.hex,
                customer=customer,
                limit=check_limit(limit) + 1,
                after=(after[0], after[1]) if after else None,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            data = [budget_out(runtime, conn, BudgetView.of_row(r)) for r in rows]
        next_cursor = encode_cursor([rows[-1].customer, rows[-1].budget_id]) if more else None
        return ListOut(data=data, next_cursor=next_cursor)

    @get("/webhook-endpoints", operation_id="listWebhookEndpoints", sync_to_thread=True)
    def list_endpoints(self, request: Request[Any, Any, Any], tenant: UUID) -> ListOut:
        """The tenant's endpoints (their secrets are never shown again)."""
        with runtime_of(request).read_engine.connect() as conn:
            rows = list_endpoints(conn, tenant.hex)
        return ListOut(data=[endpoint_out(r) for r in rows], next_cursor=None)

    @get("/webhook-deliveries", operation_id="listWebhookDeliveries", sync_to_thread=True)
    def list_deliveries(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        endpoint: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        """Webhook messages, newest first: status, every attempt with its status code,
        and the next retry."""
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(DELIVERY_STATUSES)}", "status")
        before = decode_cursor(cursor)
        with runtime_of(request).read_engine.connect() as conn:
            endpoint_id = None
            if endpoint is not None:
                endpoint_id = endpoint_hex(endpoint)
                if endpoint_row(conn, tenant.hex, endpoint_id) is None:
                    raise NotFound(f"no webhook endpoint {endpoint!r}", "endpoint")
            rows = list_deliveries(
                conn,
                tenant.hex,
                endpoint=endpoint_id,
                status=status,
                limit=check_limit(limit) + 1,
                before=(before[0], before[1]) if before else None,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            encode_cursor([rows[-1]["position"], rows[-1]["message_id"]]) if more else None
        )
        return ListOut(data=[delivery_out(r) for r in rows], next_cursor=next_cursor)
