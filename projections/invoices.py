"""The billing read models: plans, subscriptions, invoices and lines, late usage.

Subscription rows hold the same `SubscriptionState` the aggregate holds, advanced by the
same methods, so the upcoming invoice (a query) and a billing run (a command) agree on
periods, plans and late usage. `billing_activity` keeps each customer's latest usage
position, so a billing run looks for late usage only where something arrived.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
import sqlalchemy as sa
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.billing import ClosedPeriod, Invoice, Plan, Subscription, SubscriptionState
from domain.instants import to_us
from domain.tenants import Tenant
from domain.usage import UsageEvent
from projections.bulk import upsert
from projections.tables import ID, Dec, metadata
from projections.usage import untag

tenant_settings = sa.Table(
    "tenant_settings",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("late_event_policy", sa.String(20)),
    sa.Column("position", sa.BigInteger, nullable=False),
)

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("plan_id", ID, nullable=False, unique=True),
    sa.Column("latest_version", sa.Integer, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

plan_versions = sa.Table(
    "plan_versions",
    metadata,
    sa.Column("plan_id", ID, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("subscription_id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("start_us", sa.BigInteger, nullable=False),
    sa.Column("ends_us", sa.BigInteger),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("subscriptions_by_customer", "tenant_id", "customer", "start_us"),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("invoice_id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("subscription_id", ID, nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("corrects", ID),
    sa.Column("period_start_us", sa.BigInteger, nullable=False),
    sa.Column("period_end_us", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("plan", sa.String(100), nullable=False),
    sa.Column("plan_version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("subtotal", Dec),
    sa.Column("credits_applied", Dec),
    sa.Column("wallet_applied", Dec),
    sa.Column("total", Dec),
    sa.Column("closed_at_position", sa.BigInteger, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("finalized_us", sa.BigInteger),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("invoices_by_tenant", "tenant_id", "position"),
    sa.Index("invoices_by_customer", "tenant_id", "customer", "position"),
)

invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    sa.Column("line_id", ID, primary_key=True),
    sa.Column("invoice_id", ID, nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("meter", sa.String(100)),
    sa.Column("model", sa.String(30)),
    sa.Column("quantity", Dec, nullable=False),
    sa.Column("unit_price", Dec),
    sa.Column("breakdown", sa.Text, nullable=False),
    sa.Column("amount", Dec, nullable=False),
    sa.Column("amount_rounded", Dec),
    sa.Column("period_start_us", sa.BigInteger, nullable=False),
    sa.Column("period_end_us", sa.BigInteger, nullable=False),
    sa.Column("trace", sa.Text),
    sa.Index("invoice_lines_by_invoice", "invoice_id", "number"),
)

late_usage = sa.Table(
    "late_usage",
    metadata,
    sa.Column("subscription_id", ID, primary_key=True),
    sa.Column("event_id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("policy", sa.String(20), nullable=False),
    sa.Column("period_start_us", sa.BigInteger, nullable=False),
    sa.Column("original_invoice_id", ID),
    sa.Column("adjustment_invoice_id", ID),
    sa.Column("decided_position", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("late_usage_by_tenant", "tenant_id", "policy", "position"),
)

billing_activity = sa.Table(
    "billing_activity",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("customer", sa.String(255), primary_key=True),
    sa.Column("last_position", sa.BigInteger, nullable=False),
)

BILLING_TABLES = (
    tenant_settings,
    plans,
    plan_versions,
    subscriptions,
    invoices,
    invoice_lines,
    late_usage,
    billing_activity,
)

RECORDED = get_topic(UsageEvent.Recorded)
TENANT_CREATED = get_topic(Tenant.Created)
POLICY_SET = get_topic(Tenant.LateEventPolicySet)
PLAN_CREATED = get_topic(Plan.Created)
PLAN_REVISED = get_topic(Plan.Revised)
SUBSCRIPTION_EVENTS = {
    get_topic(Subscription.Started): "started",
    get_topic(Subscription.PlanChanged): "plan_changed",
    get_topic(Subscription.Cancelled): "cancelled",
    get_topic(Subscription.PeriodOpened): "opened",
    get_topic(Subscription.PeriodClosed): "closed",
    get_topic(Subscription.LateUsageDecided): "late",
}
INVOICE_DRAFTED = get_topic(Invoice.Drafted)
LINE_ADDED = get_topic(Invoice.LineAdded)
INVOICE_FINALIZED = get_topic(Invoice.Finalized)
TOPICS = {TENANT_CREATED, POLICY_SET, PLAN_CREATED, PLAN_REVISED, INVOICE_DRAFTED}
TOPICS |= {LINE_ADDED, INVOICE_FINALIZED, *SUBSCRIPTION_EVENTS}


class _Customer(msgspec.Struct):
    """The only fields of a usage event this projection reads."""

    tenant_id: str
    customer: str


def _hex(oid: Any) -> str:
    return oid.hex if isinstance(oid, UUID) else str(oid).replace("-", "")


def _us(stamp: Any) -> int:
    return to_us(stamp if isinstance(stamp, datetime) else datetime.fromisoformat(stamp))


class InvoiceProjection:
    """Builds the billing read models from the log."""

    name = "invoices"

    def __init__(self) -> None:
        self._customer = msgspec.json.Decoder(_Customer)
        self._decoder = msgspec.json.Decoder()

    def process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None:
        activity: dict[tuple[str, str], int] = {}
        states: dict[str, SubscriptionState] = {}
        for note in notifications:
            topic = note.topic
            if topic == RECORDED:
                fields = self._customer.decode(note.state)
                activity[(fields.tenant_id, fields.customer)] = note.id
            elif topic in TOPICS:
                state = untag(self._decoder.decode(note.state))
                self._apply(conn, note, topic, state, states)
        if states:
            self._save_states(conn, states)
        upsert(
            conn,
            billing_activity,
            [{"tenant_id": t, "customer": c, "last_position": p} for (t, c), p in activity.items()],
            ("tenant_id", "customer"),
        )

    def _apply(
        self,
        conn: sa.Connection,
        note: Notification,
        topic: str,
        event: dict[str, Any],
        states: dict[str, SubscriptionState],
    ) -> None:
        oid = _hex(note.originator_id)
        if topic in SUBSCRIPTION_EVENTS:
            self._subscription(conn, note, SUBSCRIPTION_EVENTS[topic], oid, event, states)
        elif topic == INVOICE_DRAFTED:
            self._drafted(conn, note, oid, event)
        elif topic == LINE_ADDED:
            _insert_line(conn, oid, event["line"])
        elif topic == INVOICE_FINALIZED:
            self._finalized(conn, oid, event)
        elif topic == PLAN_CREATED:
            spec = event["spec"]
            conn.execute(
                sa.insert(plans).values(
                    tenant_id=event["tenant_id"],
                    key=spec["key"],
                    plan_id=oid,
                    latest_version=1,
                    created_us=_us(event["timestamp"]),
                    position=note.id,
                )
            )
            _insert_version(conn, oid, 1, spec, event)
        elif topic == PLAN_REVISED:
            latest = conn.execute(
                sa.select(plans.c.latest_version).where(plans.c.plan_id == oid)
            ).scalar_one()
            conn.execute(
                sa.update(plans)
                .where(plans.c.plan_id == oid)
                .values(latest_version=latest + 1, position=note.id)
            )
            _insert_version(conn, oid, latest + 1, event["spec"], event)
        elif topic == TENANT_CREATED:
            conn.execute(
                sa.insert(tenant_settings).values(
                    tenant_id=oid, name=event["name"], late_event_policy=None, position=note.id
                )
            )
        elif topic == POLICY_SET:
            conn.execute(
                sa.update(tenant_settings)
                .where(tenant_settings.c.tenant_id == oid)
                .values(late_event_policy=event["policy"], position=note.id)
            )

    def _subscription(
        self,
        conn: sa.Connection,
        note: Notification,
        kind: str,
        oid: str,
        event: dict[str, Any],
        states: dict[str, SubscriptionState],
    ) -> None:
        if kind == "started":
            state = SubscriptionState(
                subscription_id=oid,
                tenant_id=event["tenant_id"],
                customer=event["customer"],
                plan=event["plan"],
                start_us=to_us(event["start_at"]),
                anchor_us=to_us(event["billing_anchor"]),
                timezone=event["timezone"],
                interval=event["interval"],
                currency=event["currency"],
            )
            conn.execute(
                sa.insert(subscriptions).values(
                    subscription_id=oid,
                    tenant_id=state.tenant_id,
                    customer=state.customer,
                    start_us=state.start_us,
                    ends_us=None,
                    state="{}",
                    created_us=_us(event["timestamp"]),
                    position=note.id,
                )
            )
            states[oid] = state
            return
        state = states.get(oid) or _load_state(conn, oid)
        states[oid] = state
        if kind == "plan_changed":
            state.change_plan(event["plan"], to_us(event["effective_at"]))
        elif kind == "cancelled":
            state.cancel(to_us(event["ends_at"]))
        elif kind == "opened":
            state.open_first(event["invoice_id"], event["fee"], event["position"])
        elif kind == "closed":
            fields = {k: event[k] for k in ClosedPeriod.__dataclass_fields__}
            state.close(ClosedPeriod(**fields))
        elif kind == "late":
            state.decide_late(
                event["policy"], event["position"], event["events"], event["adjustments"]
            )
            self._late_rows(conn, note, state, event)

    def _late_rows(
        self, conn: sa.Connection, note: Notification, state: SubscriptionState, event: dict
    ) -> None:
        adjustment_of = {int(a["period_start_us"]): a["id"] for a in event["adjustments"]}
        rows = []
        for item in event["events"]:
            start = int(item["period_start_us"])
            closed = state.closed_at(start)
            rows.append(
                {
                    "subscription_id": state.subscription_id,
                    "event_id": item["event_id"],
                    "tenant_id": state.tenant_id,
                    "customer": state.customer,
                    "policy": event["policy"],
                    "period_start_us": start,
                    "original_invoice_id": closed.invoice_id if closed else None,
                    "adjustment_invoice_id": adjustment_of.get(start),
                    "decided_position": event["position"],
                    "position": note.id,
                }
            )
        upsert(conn, late_usage, rows, ("subscription_id", "event_id"))

    @staticmethod
    def _save_states(conn: sa.Connection, states: dict[str, SubscriptionState]) -> None:
        for oid, state in states.items():
            conn.execute(
                sa.update(subscriptions)
                .where(subscriptions.c.subscription_id == oid)
                .values(state=json.dumps(state.to_dict(), sort_keys=True), ends_us=state.ends_us)
            )

    @staticmethod
    def _drafted(conn: sa.Connection, note: Notification, oid: str, event: dict) -> None:
        conn.execute(
            sa.insert(invoices).values(
                invoice_id=oid,
                tenant_id=event["tenant_id"],
                subscription_id=event["subscription_id"],
                customer=event["customer"],
                kind=event["kind"],
                corrects=event["corrects"],
                period_start_us=event["period_start_us"],
                period_end_us=event["period_end_us"],
                currency=event["currency"],
                plan=event["plan"],
                plan_version=event["plan_version"],
                status="draft",
                closed_at_position=event["closed_at_position"],
                created_us=_us(event["timestamp"]),
                position=note.id,
            )
        )

    @staticmethod
    def _finalized(conn: sa.Connection, oid: str, event: dict) -> None:
        conn.execute(
            sa.update(invoices)
            .where(invoices.c.invoice_id == oid)
            .values(
                status="finalized",
                subtotal=Decimal(event["subtotal"]),
                credits_applied=Decimal(event["credits_applied"]),
                wallet_applied=Decimal(event["wallet_applied"]),
                total=Decimal(event["total"]),
                finalized_us=_us(event["timestamp"]),
            )
        )
        for line_id, amount in event["rounded"].items():
            conn.execute(
                sa.update(invoice_lines)
                .where(invoice_lines.c.line_id == line_id)
                .values(amount_rounded=Decimal(amount))
            )


def _load_state(conn: sa.Connection, oid: str) -> SubscriptionState:
    text = conn.execute(
        sa.select(subscriptions.c.state).where(subscriptions.c.subscription_id == oid)
    ).scalar_one()
    return SubscriptionState.from_dict(json.loads(text))


def _insert_version(
    conn: sa.Connection, plan_id: str, version: int, spec: dict, event: dict
) -> None:
    conn.execute(
        sa.insert(plan_versions).values(
            plan_id=plan_id,
            version=version,
            spec=json.dumps(spec, sort_keys=True),
            created_us=_us(event["timestamp"]),
        )
    )


def _insert_line(conn: sa.Connection, invoice_id: str, line: dict[str, Any]) -> None:
    conn.execute(
        sa.insert(invoice_lines).values(
            line_id=line["id"],
            invoice_id=invoice_id,
            number=line["number"],
            kind=line["kind"],
            description=line["description"],
            meter=line["meter"],
            model=line["model"],
            quantity=Decimal(line["quantity"]),
            unit_price=None if line["unit_price"] is None else Decimal(line["unit_price"]),
            breakdown=json.dumps(line["breakdown"]),
            amount=Decimal(line["amount"]),
            amount_rounded=None,
            period_start_us=line["period_start_us"],
            period_end_us=line["period_end_us"],
            trace=None if line["trace"] is None else json.dumps(line["trace"], sort_keys=True),
        )
    )
