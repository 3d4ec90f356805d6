"""The webhook outbox: a projection over the event log that turns each event of a
webhook type into one message per subscribed endpoint.

Because the outbox is a projection, a message exists only for a committed event
(nothing is sent for a change that rolled back), and its rows commit with the
projection's tracking position (nothing is lost or doubled on a crash). The message
id is a uuid5 of the endpoint and the event's (aggregate id, version), so it is the
same on every replay and on every delivery attempt (`webhook-id`).

Tables:
- `webhook_endpoints`, `webhook_messages`: pure functions of the log (audited).
- `webhook_deliveries`: one row per message, inserted here as `pending` in the same
  transaction, then owned by the delivery workers (status, attempts, next attempt).
- `webhook_attempts`, `webhook_endpoint_health`: written by the delivery workers.
The last three are operational state, not read models: a rebuild leaves them alone.

New webhook types plug in by adding a payload builder to `PAYLOADS` (topic ->
function of the decoded event).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import msgspec
import sqlalchemy as sa
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.billing import Invoice, Subscription
from domain.budgets import Budget
from domain.instants import from_us, to_us
from domain.wallets import Wallet
from domain.webhooks import WebhookEndpoint, subscribes
from projections.access import instant_text, number_text
from projections.bulk import upsert
from projections.tables import ID, metadata
from projections.usage import untag

REGISTERED = get_topic(WebhookEndpoint.Registered)
DISABLED = get_topic(WebhookEndpoint.Disabled)
PENDING = "pending"

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("endpoint_id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_types", sa.Text, nullable=False),  # JSON list
    sa.Column("description", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),  # enabled | disabled
    sa.Column("disabled_reason", sa.Text),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("webhook_endpoints_by_tenant", "tenant_id"),
)

webhook_messages = sa.Table(
    "webhook_messages",
    metadata,
    sa.Column("message_id", sa.String(40), primary_key=True),  # whe_<hex>
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("endpoint_id", ID, nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("source_id", ID, nullable=False),
    sa.Column("source_version", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the exact body sent
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("webhook_messages_by_tenant", "tenant_id", "position"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("message_id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("endpoint_id", ID, nullable=False),
    # pending | delivered | failed (given up) | cancelled (endpoint disabled)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_us", sa.BigInteger),
    sa.Column("first_attempt_us", sa.BigInteger),
    sa.Column("last_attempt_us", sa.BigInteger),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_us", sa.BigInteger),
    sa.Index("webhook_deliveries_due", "status", "next_attempt_us"),
    sa.Index("webhook_deliveries_by_endpoint", "endpoint_id", "status"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("message_id", sa.String(40), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("attempted_us", sa.BigInteger, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("next_retry_us", sa.BigInteger),
)

webhook_endpoint_health = sa.Table(
    "webhook_endpoint_health",
    metadata,
    sa.Column("endpoint_id", ID, primary_key=True),
    sa.Column("failing_since_us", sa.BigInteger),  # first failure since the last success
    sa.Column("last_success_us", sa.BigInteger),
    sa.Column("last_failure_us", sa.BigInteger),
)

OUTBOX_TABLES = (webhook_endpoints, webhook_messages)
DELIVERY_TABLES = (webhook_deliveries, webhook_attempts, webhook_endpoint_health)


@dataclass(frozen=True)
class Payload:
    """A webhook message's content, built from one event alone."""

    tenant_id: str
    type: str
    data: dict[str, Any]


PayloadBuilder = Callable[[str, dict[str, Any]], Payload | None]


def _budget_ref(source_id: str, state: dict[str, Any]) -> dict[str, Any]:
    return {"budget": "bud_" + source_id, "customer": state["customer"], "meter": state["meter"]}


def _threshold_crossed(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state["tenant_id"],
        "budget.threshold_crossed",
        {
            **_budget_ref(source_id, state),
            "threshold": state["threshold"],
            "measured": number_text(state["measured"]),
            "limit": number_text(state["limit"]),
            "period_start": instant_text(state["period_start"]),
            "period_end": instant_text(state["period_end"]),
        },
    )


def _access_blocked(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state["tenant_id"],
        "access.blocked",
        {
            **_budget_ref(source_id, state),
            "reason": state["reason"],
            "threshold": state["threshold"],
            "measured": number_text(state["measured"]),
            "limit": number_text(state["limit"]),
            "period_start": instant_text(state["period_start"]),
            "period_end": instant_text(state["period_end"]),
        },
    )


def _access_restored(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state["tenant_id"],
        "access.restored",
        {
            **_budget_ref(source_id, state),
            "reason": state["reason"],
            "period_start": instant_text(state["period_start"]),
        },
    )


def _wallet_ref(source_id: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "wallet": "wal_" + source_id,
        "customer": state["customer"],
        "currency": state.get("currency"),
    }


def _wallet_topped_up(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state["tenant_id"],
        "wallet.topped_up",
        {
            **_wallet_ref(source_id, state),
            "top_up": state["top_up_id"],
            "amount": number_text(state["amount"]),
            "idempotency_key": state["idempotency_key"],
            "balance": number_text(state["balance_after"]),
        },
    )


def _wallet_low_balance(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state["tenant_id"],
        "wallet.low_balance",
        {
            **_wallet_ref(source_id, state),
            "balance": number_text(state["balance"]),
            "threshold": number_text(state["threshold"]),
        },
    )


def _wallet_depleted(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state["tenant_id"],
        "wallet.depleted",
        {
            **_wallet_ref(source_id, state),
            "balance": number_text(state["balance"]),
            "access_blocked": bool(state.get("blocks_access")),
        },
    )


def _wallet_replenished(source_id: str, state: dict[str, Any]) -> Payload | None:
    if not state.get("blocks_access"):
        return None  # access was never blocked: nothing to restore
    return Payload(
        state["tenant_id"],
        "access.restored",
        {
            **_wallet_ref(source_id, state),
            "reason": "wallet_topped_up",
            "balance": number_text(state["balance"]),
        },
    )


def _invoice_finalized(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state.get("tenant_id", ""),
        "invoice.finalized",
        {
            "invoice": "inv_" + source_id,
            "customer": state.get("customer"),
            "currency": state.get("currency"),
            "subtotal": state["subtotal"],
            "credits_applied": state["credits_applied"],
            "wallet_applied": state["wallet_applied"],
            "total": state["total"],
        },
    )


def _late_usage(source_id: str, state: dict[str, Any]) -> Payload:
    return Payload(
        state.get("tenant_id", ""),
        "usage.late_event",
        {
            "subscription": "sub_" + source_id,
            "customer": state.get("customer"),
            "policy": state["policy"],
            "events": [
                {
                    "id": "evt_" + e["event_id"],
                    "period_start": instant_text(from_us(e["period_start_us"])),
                }
                for e in state["events"]
            ],
            "adjustment_invoices": ["inv_" + a["id"] for a in state["adjustments"]],
        },
    )


PAYLOADS: dict[str, PayloadBuilder] = {
    get_topic(Invoice.Finalized): _invoice_finalized,
    get_topic(Subscription.LateUsageDecided): _late_usage,
    get_topic(Budget.ThresholdCrossed): _threshold_crossed,
    get_topic(Budget.AccessBlocked): _access_blocked,
    get_topic(Budget.AccessRestored): _access_restored,
    get_topic(Wallet.ToppedUp): _wallet_topped_up,
    get_topic(Wallet.LowBalanceReached): _wallet_low_balance,
    get_topic(Wallet.Depleted): _wallet_depleted,
    get_topic(Wallet.Replenished): _wallet_replenished,
}


def message_id_for(endpoint_id: str, source_id: str, version: int) -> str:
    """One message per (event, endpoint), the same on every replay."""
    return "whe_" + uuid5(UUID(endpoint_id), f"{source_id}:{version}").hex


def body_of(payload: Payload, timestamp: datetime) -> str:
    """The exact JSON body: {"type", "timestamp", "data"}."""
    return json.dumps(
        {"type": payload.type, "timestamp": instant_text(timestamp), "data": payload.data},
        separators=(",", ":"),
    )


@dataclass
class LiveEndpoint:
    endpoint_id: str
    tenant_id: str
    event_types: list[str]
    enabled: bool


class OutboxProjection:
    """Webhook-type events -> one `webhook_messages` row per subscribed endpoint."""

    name = "outbox"

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder()
        self._endpoints: dict[str, dict[str, LiveEndpoint]] | None = None  # by tenant

    def _load(self, conn: sa.Connection) -> dict[str, dict[str, LiveEndpoint]]:
        if self._endpoints is None:
            found: dict[str, dict[str, LiveEndpoint]] = {}
            for r in conn.execute(sa.select(webhook_endpoints)):
                found.setdefault(r.tenant_id, {})[r.endpoint_id] = LiveEndpoint(
                    r.endpoint_id, r.tenant_id, json.loads(r.event_types), r.status == "enabled"
                )
            self._endpoints = found
        return self._endpoints

    def process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None:
        try:
            self._process(conn, notifications)
        except Exception:
            self._endpoints = None  # the transaction rolls back; reload next time
            raise

    def _process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None:
        live = self._load(conn)
        messages: list[dict[str, Any]] = []
        for note in notifications:
            topic = note.topic
            if topic in (REGISTERED, DISABLED):
                self._endpoint(conn, note, live)
            elif topic in PAYLOADS:
                messages += self._messages(note, live)
        if messages:
            upsert(conn, webhook_messages, messages, ("message_id",), update=False)
            upsert(
                conn,
                webhook_deliveries,
                [_pending(m) for m in messages],
                ("message_id",),
                update=False,
            )

    def _messages(
        self, note: Notification, live: dict[str, dict[str, LiveEndpoint]]
    ) -> list[dict[str, Any]]:
        state = untag(self._decoder.decode(note.state))
        oid = note.originator_id
        source_id = oid.hex if isinstance(oid, UUID) else str(oid)
        payload = PAYLOADS[note.topic](source_id, state)
        if payload is None or not payload.tenant_id:
            return []
        targets = [
            e
            for e in live.get(payload.tenant_id, {}).values()
            if e.enabled and subscribes(e.event_types, payload.type)
        ]
        if not targets:
            return []
        timestamp: datetime = state["timestamp"]
        body = body_of(payload, timestamp)
        return [
            {
                "message_id": message_id_for(e.endpoint_id, source_id, note.originator_version),
                "tenant_id": payload.tenant_id,
                "endpoint_id": e.endpoint_id,
                "event_type": payload.type,
                "source_id": source_id,
                "source_version": note.originator_version,
                "payload": body,
                "created_us": to_us(timestamp),
                "position": note.id,
            }
            for e in sorted(targets, key=lambda e: e.endpoint_id)
        ]

    def _endpoint(
        self, conn: sa.Connection, note: Notification, live: dict[str, dict[str, LiveEndpoint]]
    ) -> None:
        state = untag(self._decoder.decode(note.state))
        oid = note.originator_id
        endpoint_id = oid.hex if isinstance(oid, UUID) else str(oid)
        if note.topic == REGISTERED:
            live.setdefault(state["tenant_id"], {})[endpoint_id] = LiveEndpoint(
                endpoint_id, state["tenant_id"], list(state["event_types"]), True
            )
            conn.execute(
                sa.insert(webhook_endpoints).values(
                    endpoint_id=endpoint_id,
                    tenant_id=state["tenant_id"],
                    url=state["url"],
                    event_types=json.dumps(state["event_types"]),
                    description=state["description"],
                    status="enabled",
                    disabled_reason=None,
                    created_us=to_us(state["timestamp"]),
                    position=note.id,
                )
            )
            return
        for endpoints in live.values():
            if endpoint_id in endpoints:
                endpoints[endpoint_id].enabled = False
        conn.execute(
            sa.update(webhook_endpoints)
            .where(webhook_endpoints.c.endpoint_id == endpoint_id)
            .values(status="disabled", disabled_reason=state["reason"], position=note.id)
        )


def _pending(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": message["message_id"],
        "tenant_id": message["tenant_id"],
        "endpoint_id": message["endpoint_id"],
        "status": PENDING,
        "attempts": 0,
        "next_attempt_us": message["created_us"],
        "first_attempt_us": None,
        "last_attempt_us": None,
        "last_status_code": None,
        "last_error": None,
        "delivered_us": None,
    }
