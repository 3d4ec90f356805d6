"""The command API for billing: plans, subscriptions, billing runs, price evaluation and
the tenant's late-event policy. Blocking work runs in a thread, never on the event loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import msgspec
from litestar import Request, patch, post

from api.auth import runtime_of
from api.billing_views import plan_json, subscription_json, tenant_json
from api.commands import decode_json
from api.openapi import body
from application.billing import parse_instant
from domain.errors import InvalidInput
from domain.invoicing import breakdown_dict, plain
from domain.pricing import PriceError, evaluate, parse_price
from workers.billing import run_billing
from workers.runtime import Runtime

_decode_any = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
FUTURE_TOLERANCE = timedelta(minutes=5)
Timing = Literal["in_advance", "in_arrears"]
Policy = Literal["next_period", "current_period", "ignore"]


# Request bodies as the OpenAPI document shows them; handlers validate the raw JSON
# themselves (exact decimals, dotted field paths in errors).


class BaseFeeIn(msgspec.Struct):
    amount: Decimal
    timing: Timing = "in_arrears"


class PlanIn(msgspec.Struct):
    """A plan. A price: {"meter", "model", "included_units", "divide_by", "rounding",
    "minimum_amount", "maximum_amount", ...model parameters}."""

    key: str
    name: str | None = None
    currency: str = "USD"
    interval: Literal["week", "month", "year"] = "month"
    base_fee: BaseFeeIn | None = None
    minimum_amount: Decimal | None = None
    included_credits: Decimal | None = None
    prices: list[dict[str, Any]] = []


class PlanRevisionIn(msgspec.Struct):
    """The fields that change; the rest of the latest version is kept."""

    name: str | None = None
    base_fee: BaseFeeIn | None = None
    minimum_amount: Decimal | None = None
    included_credits: Decimal | None = None
    prices: list[dict[str, Any]] | None = None


class SubscriptionIn(msgspec.Struct):
    customer: str
    plan: str
    start_at: datetime | None = None
    billing_anchor: datetime | None = None


class SubscriptionUpdateIn(msgspec.Struct):
    plan: str


class BillingRunIn(msgspec.Struct):
    as_of: datetime | None = None


class PriceEvaluationIn(msgspec.Struct):
    price: dict[str, Any]
    quantity: Decimal | None = None
    events: list[Decimal] | None = None


class TenantUpdateIn(msgspec.Struct):
    late_event_policy: Policy | None = None


def _body(raw: bytes) -> dict[str, Any]:
    return decode_json(raw, _decode_any) if raw.strip() else {}


async def _settled(runtime: Runtime, timeout: float = 5.0) -> None:
    """Wait until the billing read models show what was just recorded."""
    position = runtime.ledger.recorder.max_notification_id()
    await asyncio.to_thread(runtime.wait_for_invoices, position, timeout)


class BillingCommands:
    """Billing write handlers (mixed into the /v1 controller by create_app)."""

    @post("/plans", operation_id="createPlan", status_code=201, operation_class=body(PlanIn))
    async def create_plan(self, request: Request[Any, Any, Any], tenant: UUID) -> dict[str, Any]:
        """A plan (version 1): base fee, minimum, included credits and a price per meter."""
        data = _body(await request.body())
        runtime = runtime_of(request)
        plan = await asyncio.to_thread(runtime.billing.create_plan, tenant, data)
        await _settled(runtime)
        return plan_json(plan.spec(), plan.latest)

    @patch("/plans/{key:str}", operation_id="revisePlan", operation_class=body(PlanRevisionIn))
    async def revise_plan(
        self, request: Request[Any, Any, Any], tenant: UUID, key: str
    ) -> dict[str, Any]:
        """A new version of the plan, used by every invoice issued from now on."""
        data = _body(await request.body())
        runtime = runtime_of(request)
        plan = await asyncio.to_thread(runtime.billing.revise_plan, tenant, key, data)
        await _settled(runtime)
        return plan_json(plan.spec(), plan.latest)

    @post(
        "/subscriptions",
        operation_id="createSubscription",
        status_code=201,
        operation_class=body(SubscriptionIn),
    )
    async def create_subscription(
        self, request: Request[Any, Any, Any], tenant: UUID
    ) -> dict[str, Any]:
        """Subscribe a customer to a plan; periods run in the customer's time zone."""
        data = _body(await request.body())
        runtime = runtime_of(request)
        now = datetime.now(UTC)
        subscription = await asyncio.to_thread(
            runtime.billing.create_subscription, tenant, data, now
        )
        await _settled(runtime)
        return subscription_json(subscription.state, now)

    @post(
        "/subscriptions/{subscription_id:str}",
        operation_id="updateSubscription",
        status_code=200,
        operation_class=body(SubscriptionUpdateIn),
    )
    async def update_subscription(
        self, request: Request[Any, Any, Any], tenant: UUID, subscription_id: str
    ) -> dict[str, Any]:
        """Change the plan from the start of the next period: {"plan": key}."""
        data = _body(await request.body())
        runtime = runtime_of(request)
        now = datetime.now(UTC)
        subscription = await asyncio.to_thread(
            runtime.billing.change_plan, tenant, subscription_id, data, now
        )
        await _settled(runtime)
        return subscription_json(subscription.state, now)

    @post(
        "/subscriptions/{subscription_id:str}/cancel",
        operation_id="cancelSubscription",
        status_code=200,
    )
    async def cancel_subscription(
        self, request: Request[Any, Any, Any], tenant: UUID, subscription_id: str
    ) -> dict[str, Any]:
        """End the subscription at the end of its current period."""
        runtime = runtime_of(request)
        now = datetime.now(UTC)
        subscription = await asyncio.to_thread(
            runtime.billing.cancel_subscription, tenant, subscription_id, now
        )
        await _settled(runtime)
        return subscription_json(subscription.state, now)

    @post(
        "/billing-runs",
        operation_id="createBillingRun",
        status_code=200,
        operation_class=body(BillingRunIn),
    )
    async def billing_run(self, request: Request[Any, Any, Any], tenant: UUID) -> dict[str, Any]:
        """Close this tenant's periods that ended at or before as_of minus the grace window
        and issue their invoices; running it again issues nothing new."""
        data = _body(await request.body())
        for name in data:
            if name != "as_of":
                raise InvalidInput("unknown field", str(name))
        now = datetime.now(UTC)
        as_of = parse_instant(data["as_of"], "as_of") if data.get("as_of") else now
        if as_of > now + FUTURE_TOLERANCE:
            raise InvalidInput(
                "as_of must not be in the future: periods close after they end", "as_of"
            )
        runtime = runtime_of(request)
        result = await asyncio.to_thread(run_billing, runtime, as_of, tenant=tenant)
        await _settled(runtime, 30.0)
        return {
            "object": "billing_run",
            "as_of": as_of.isoformat().replace("+00:00", "Z"),
            "closed_at_position": result.position,
            "invoices": ["inv_" + i for i in result.invoices],
            "late_usage_events": result.late_events,
            "failed_subscriptions": ["sub_" + i for i in result.failed],
        }

    @post(
        "/prices/evaluate",
        operation_id="evaluatePrice",
        status_code=200,
        operation_class=body(PriceEvaluationIn),
    )
    async def evaluate_price(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """A price's amount and breakdown for a quantity (or per-event values), exactly as
        an invoice line computes it, before rounding to the currency."""
        data = _body(await request.body())
        for name in data:
            if name not in ("price", "quantity", "events"):
                raise InvalidInput("unknown field", str(name))
        raw = data.get("price")
        if not isinstance(raw, dict):
            raise InvalidInput("price is required (an object)", "price")
        events = data.get("events")
        if events is not None and not isinstance(events, list):
            raise InvalidInput("events must be a list of numbers", "events")
        try:
            price = parse_price(raw)
            result = evaluate(price, data.get("quantity"), events)
        except PriceError as error:
            usage = error.field.startswith(("quantity", "events"))
            field = error.field if usage else f"price.{error.field}".rstrip(".")
            raise InvalidInput(error.message, field) from None
        return {
            "object": "price_evaluation",
            "model": price.model,
            "quantity": plain(result.quantity),
            "billable_quantity": plain(result.billable_quantity),
            "amount": plain(result.amount),
            "breakdown": [breakdown_dict(item) for item in result.breakdown],
        }

    @patch("/tenant", operation_id="updateTenant", operation_class=body(TenantUpdateIn))
    async def update_tenant(self, request: Request[Any, Any, Any], tenant: UUID) -> dict[str, Any]:
        """Settings of the key's tenant: {"late_event_policy": "next_period" |
        "current_period" | "ignore" | null (the server default)}."""
        data = _body(await request.body())
        for name in data:
            if name != "late_event_policy":
                raise InvalidInput("unknown field", str(name))
        runtime = runtime_of(request)
        if "late_event_policy" in data:
            await asyncio.to_thread(
                runtime.billing.set_late_event_policy, tenant, data["late_event_policy"]
            )
        await _settled(runtime)
        with runtime.read_engine.connect() as conn:
            return tenant_json(conn, tenant.hex, runtime.settings.late_event_policy)
