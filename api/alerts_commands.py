"""The command API for alerts: budgets and webhook endpoints."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from litestar import Request, Response, post

from api.alerts_views import BudgetIn, BudgetView, WebhookEndpointIn, budget_out
from api.auth import runtime_of
from api.commands import decode_json
from api.openapi import body
from api.schemas import instant_text
from workers.runtime import Runtime

_decode_any = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
SETTLE_SECONDS = 2.0


def _settle(runtime: Runtime, projection: str, position: int | None) -> None:
    """Wait (briefly) until a projection shows what was just recorded."""
    if position is not None:
        runtime.view.wait_for(projection, position, SETTLE_SECONDS)


class AlertCommands:
    """Budget and webhook-endpoint write handlers (mixed into the /v1 controller)."""

    @post(
        "/budgets",
        operation_id="setBudget",
        status_code=201,
        operation_class=body(BudgetIn),
    )
    async def set_budget(self, request: Request[Any, Any, Any], tenant: UUID) -> Response[Any]:
        """Set the customer's budget for a meter's units or for money per period: 201
        when new, 200 when it replaces the limit and rules of the existing one."""
        data = decode_json(await request.body(), _decode_any)
        runtime = runtime_of(request)
        outcome = await asyncio.to_thread(runtime.alerts.budgets.set_budget, tenant, data)
        await asyncio.to_thread(_settle, runtime, "access", outcome.position)
        view = BudgetView.of_aggregate(outcome.budget)

        def reply() -> dict[str, Any]:
            with runtime.read_engine.connect() as conn:
                return budget_out(runtime, conn, view)

        return Response(await asyncio.to_thread(reply), status_code=201 if outcome.created else 200)

    @post(
        "/webhook-endpoints",
        operation_id="createWebhookEndpoint",
        status_code=201,
        operation_class=body(WebhookEndpointIn),
    )
    async def create_endpoint(
        self, request: Request[Any, Any, Any], tenant: UUID
    ) -> dict[str, Any]:
        """Register an endpoint; the reply holds its signing secret, shown only this once."""
        data = decode_json(await request.body(), _decode_any)
        runtime = runtime_of(request)
        endpoint, position = await asyncio.to_thread(
            runtime.alerts.webhooks.register_endpoint, tenant, data
        )
        await asyncio.to_thread(_settle, runtime, "outbox", position)
        return {
            "id": "we_" + endpoint.id.hex,
            "object": "webhook_endpoint",
            "url": endpoint.url,
            "event_types": endpoint.event_types,
            "description": endpoint.description,
            "status": "enabled",
            "disabled_reason": None,
            "created_at": instant_text(endpoint.created_on),
            "secret": endpoint.secret,
        }
