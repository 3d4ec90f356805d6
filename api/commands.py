"""The command API: writes only (usage ingestion, catalog)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from litestar import Request, patch, post

from api.auth import runtime_of
from api.errors import msgspec_error
from api.openapi import body
from api.schemas import (
    BatchIn,
    BatchOut,
    BatchResultOut,
    CancelIn,
    CustomerIn,
    CustomerUpdateIn,
    MeterIn,
    UsageBatchIn,
    UsageEventIn,
    UsageEventOut,
    decimal_text,
    instant_text,
)
from api.views import customer_out, meter_out, totals_for
from application.ingest import Outcome
from domain.errors import Conflict, DomainError, InvalidInput, NotFound
from domain.usage import UsageEvent

MAX_BATCH = 1000
CATALOG_WAIT_SECONDS = 1.0
_decode_batch = msgspec.json.Decoder(BatchIn, float_hook=Decimal)
_decode_event = msgspec.json.Decoder(UsageEventIn, float_hook=Decimal)
_decode_any = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)


def decode_json(body: bytes, decoder: msgspec.json.Decoder, prefix: str = "") -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        # A typed decoder may meet a wrong field before a syntax error further on:
        # malformed JSON is a 400 whatever comes first.
        _check_syntax(body)
        raise msgspec_error(str(error), prefix) from None
    except msgspec.DecodeError as error:
        raise MalformedJSON(f"malformed JSON: {error}") from None


def _check_syntax(body: bytes) -> None:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise MalformedJSON(f"malformed JSON: {error}") from None


class MalformedJSON(DomainError):
    kind = "invalid_json"


def as_item(event: UsageEventIn, prefix: str) -> dict[str, Any]:
    """The contract's field aliases resolved: customer_id for customer, meter_id."""
    if event.customer and event.customer_id and event.customer != event.customer_id:
        raise InvalidInput("customer and customer_id differ", prefix + "customer_id")
    return {
        "idempotency_key": event.idempotency_key,
        "customer": event.customer or event.customer_id,
        "event_type": event.event_type,
        "meter": event.meter_id,
        "value": event.value,
        "timestamp": event.timestamp,
        "properties": event.properties,
        "metadata": event.metadata,
    }


def event_out(outcome: Outcome) -> UsageEventOut:
    usage = outcome.usage
    assert usage is not None and outcome.event_id is not None and outcome.created_at
    return UsageEventOut(
        id="evt_" + outcome.event_id.hex,
        object="usage_event",
        idempotency_key=usage.idempotency_key,
        customer=usage.customer,
        meter_id=usage.meter,
        event_type=usage.event_type,
        value=decimal_text(usage.value),
        timestamp=instant_text(usage.occurred_at),
        status=outcome.status,
        created_at=instant_text(outcome.created_at),
    )


def parse_event_id(event_id: str) -> UUID:
    try:
        return UUID(event_id.removeprefix("evt_"))
    except ValueError:
        raise NotFound(f"no usage event {event_id!r}", "id") from None


class UsageCommands:
    """Usage ingestion handlers (mixed into the /v1 controller by create_app)."""

    @post(
        "/usage-events",
        operation_id="createUsageEvent",
        status_code=200,
        operation_class=body(UsageEventIn),
    )
    async def create(
        self, request: Request[Any, Any, Any], tenant: UUID, include: str | None = None
    ) -> UsageEventOut:
        """Record one usage event; answered only once it is durably stored."""
        body = await request.body()
        event = decode_json(body, _decode_event)
        runtime = runtime_of(request)
        now = datetime.now(UTC)
        outcome = runtime.ingestor.prepare(tenant, [(0, as_item(event, ""))], now, "")[0]
        if outcome.error is None:
            await runtime.ingestor.record(tenant, [outcome], now)
        if outcome.error is not None:
            raise outcome.error
        reply = event_out(outcome)
        if include == "aggregated_total":
            await totals_for(runtime, tenant, outcome, reply)
        return reply

    @post(
        "/usage-events/batch",
        operation_id="createUsageEventBatch",
        status_code=200,
        operation_class=body(UsageBatchIn),
    )
    async def batch(self, request: Request[Any, Any, Any], tenant: UUID) -> BatchOut:
        """Record up to 1000 events; valid ones are stored even when others are rejected."""
        batch = decode_json(await request.body(), _decode_batch)
        if len(batch.events) > MAX_BATCH:
            raise InvalidInput(f"a batch holds at most {MAX_BATCH} events", "events")
        items: list[dict[str, Any] | DomainError] = []
        for index, raw in enumerate(batch.events):
            prefix = f"events.{index}."
            try:
                items.append(as_item(decode_json(raw, _decode_event, prefix), prefix))
            except DomainError as error:
                items.append(error)
        runtime = runtime_of(request)
        now = datetime.now(UTC)
        indexed = [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]
        prepared = {
            o.index: o for o in runtime.ingestor.prepare(tenant, indexed, now, "events.{index}.")
        }
        outcomes = [
            prepared[i] if i in prepared else Outcome(index=i, status="rejected", error=item)
            for i, item in enumerate(items)
            if i in prepared or isinstance(item, DomainError)
        ]
        await runtime.ingestor.record(tenant, outcomes, now)
        return _batch_out(outcomes)

    @post(
        "/usage-events/{event_id:str}/cancel",
        operation_id="cancelUsageEvent",
        status_code=200,
        operation_class=body(CancelIn),
    )
    async def cancel(
        self, request: Request[Any, Any, Any], tenant: UUID, event_id: str
    ) -> dict[str, Any]:
        """Remove an event from usage through a correction event."""
        body = await request.body()
        data = decode_json(body, msgspec.json.Decoder(CancelIn)) if body.strip() else CancelIn()
        runtime = runtime_of(request)
        try:
            event: UsageEvent = runtime.ledger.repository.get(parse_event_id(event_id))
        except AggregateNotFoundError:
            raise NotFound(f"no usage event {event_id!r}", "id") from None
        if event.tenant_id != tenant.hex:
            raise NotFound(f"no usage event {event_id!r}", "id")
        event.check_not_cancelled()
        # 409 once the event's billing period is closed: an invoice never changes
        runtime.billing.check_usage_cancellable(
            tenant, event.customer, event.occurred_at, datetime.now(UTC)
        )
        event.cancel(reason=data.reason)
        try:
            recordings = runtime.ledger.save(event)
        except IntegrityError:
            raise Conflict(f"usage event {event_id!r} was changed concurrently") from None
        await read_your_writes(runtime, recordings[-1].notification.id if recordings else None)
        return {
            "id": "evt_" + event.id.hex,
            "object": "usage_event",
            "status": "cancelled",
            "reason": data.reason,
        }


async def read_your_writes(runtime: Any, position: int | None = None) -> None:
    """Give the projections a moment to show what this request wrote, so a read that
    follows sees it; waiting happens off the event loop and never longer than a second
    (a process without projection workers must not stall its callers)."""
    if position is None:
        position = await asyncio.to_thread(runtime.ledger.recorder.max_notification_id)
    await asyncio.to_thread(runtime.wait_for_usage, position, CATALOG_WAIT_SECONDS)


def _batch_out(outcomes: list[Outcome]) -> BatchOut:
    results = []
    for outcome in outcomes:
        if outcome.status == "rejected":
            error = outcome.error
            assert error is not None
            results.append(
                BatchResultOut(
                    index=outcome.index,
                    status="rejected",
                    error={"type": error.kind, "message": error.message, "field": error.field},
                )
            )
        else:
            assert outcome.event_id is not None
            results.append(
                BatchResultOut(
                    index=outcome.index, status=outcome.status, id="evt_" + outcome.event_id.hex
                )
            )
    return BatchOut(
        accepted=sum(o.status == "accepted" for o in outcomes),
        duplicates=sum(o.status == "duplicate" for o in outcomes),
        rejected=sum(o.status == "rejected" for o in outcomes),
        results=results,
    )


class CatalogCommands:
    """Catalog handlers: customers and meters."""

    @post(
        "/customers",
        operation_id="createCustomer",
        status_code=201,
        operation_class=body(CustomerIn),
    )
    async def create_customer(
        self, request: Request[Any, Any, Any], tenant: UUID
    ) -> dict[str, Any]:
        data = decode_json(await request.body(), _decode_any)
        runtime = runtime_of(request)
        customer = await asyncio.to_thread(runtime.catalog.create_customer, tenant, data)
        await read_your_writes(runtime)
        return customer_out(customer)

    @patch(
        "/customers/{external_id:str}",
        operation_id="updateCustomer",
        operation_class=body(CustomerUpdateIn),
    )
    async def update_customer(
        self, request: Request[Any, Any, Any], tenant: UUID, external_id: str
    ) -> dict[str, Any]:
        data = decode_json(await request.body(), _decode_any)
        runtime = runtime_of(request)
        customer = await asyncio.to_thread(
            runtime.catalog.update_customer, tenant, external_id, data
        )
        await read_your_writes(runtime)
        return customer_out(customer)

    @post("/meters", operation_id="createMeter", status_code=201, operation_class=body(MeterIn))
    async def create_meter(self, request: Request[Any, Any, Any], tenant: UUID) -> dict[str, Any]:
        data = decode_json(await request.body(), _decode_any)
        runtime = runtime_of(request)
        spec = await asyncio.to_thread(runtime.catalog.create_meter, tenant, data)
        await read_your_writes(runtime)
        return meter_out(spec)
