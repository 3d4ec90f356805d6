"""The access projection: budgets and access state, from Budget events.

`budgets` holds each budget's definition and its state in the current period
(thresholds crossed, blocked or not); `access_state` holds one row per budget scope
(a meter key, or "" for a money budget, which covers every meter) with the reasons
access is refused. Both are pure functions of the log, so `xtopay audit` rebuilds
and compares them. Every `access_state` row carries the position of the event that
last changed it: the access caches (in memory, or Redis) follow the table by
position, so they only ever see committed rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
import sqlalchemy as sa
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.budgets import Budget
from domain.instants import to_us
from domain.wallets import Wallet
from projections.tables import ID, Dec, metadata
from projections.usage import untag

SET = get_topic(Budget.Set)
CHANGED = get_topic(Budget.Changed)
CROSSED = get_topic(Budget.ThresholdCrossed)
BLOCKED = get_topic(Budget.AccessBlocked)
RESTORED = get_topic(Budget.AccessRestored)
BUDGET_TOPICS = (SET, CHANGED, CROSSED, BLOCKED, RESTORED)
ALL_METERS = ""  # the scope of a money budget: it blocks every meter
WALLET_SCOPE = "wallet:"  # + currency: a depleted wallet blocks every meter
DEPLETED = get_topic(Wallet.Depleted)
WALLET_TOPICS = (DEPLETED, get_topic(Wallet.Replenished))

budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("budget_id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("meter", sa.String(100)),
    sa.Column("limit_value", Dec, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("thresholds", sa.Text, nullable=False),  # JSON list of percentages
    sa.Column("block_at", sa.Integer),
    sa.Column("period_start_us", sa.BigInteger),
    sa.Column("crossed", sa.Text, nullable=False),  # JSON list, for period_start_us
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("budgets_by_customer", "tenant_id", "customer"),
)

access_state = sa.Table(
    "access_state",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("customer", sa.String(255), primary_key=True),
    sa.Column("scope", sa.String(100), primary_key=True),
    sa.Column("budget_id", ID, nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list of reason objects
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("access_state_by_position", "position"),
)

ACCESS_TABLES = (budgets, access_state)


def instant_text(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def number_text(value: Decimal) -> str:
    return format(value, "f")


def scope_of(meter: str | None) -> str:
    return ALL_METERS if meter is None else meter


def blocked_reason(budget_id: str, kind: str, currency: str | None, state: dict[str, Any]) -> dict:
    """Why access is refused, as the access check answers it."""
    return {
        "type": state["reason"],
        "budget": "bud_" + budget_id,
        "kind": kind,
        "meter": state["meter"],
        "threshold": state["threshold"],
        "limit": number_text(state["limit"]),
        "measured": number_text(state["measured"]),
        "currency": currency,
        "period_start": instant_text(state["period_start"]),
        "period_end": instant_text(state["period_end"]),
    }


class AccessProjection:
    """Budget events -> `budgets` and `access_state` rows."""

    name = "access"

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder()

    def process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None:
        for note in notifications:
            if note.topic in BUDGET_TOPICS:
                self._apply(conn, note)
            elif note.topic in WALLET_TOPICS:
                self._wallet(conn, note)

    def _wallet(self, conn: sa.Connection, note: Notification) -> None:
        """A wallet with block_on_depletion blocks every meter while its balance is at or
        below zero (scope `wallet:<currency>`)."""
        state = untag(self._decoder.decode(note.state))
        if not state.get("blocks_access"):
            return
        oid = note.originator_id
        wallet_id = oid.hex if isinstance(oid, UUID) else str(oid)
        blocked = note.topic == DEPLETED
        reasons = (
            [
                {
                    "type": "wallet_depleted",
                    "wallet": "wal_" + wallet_id,
                    "balance": number_text(state["balance"]),
                    "currency": state["currency"],
                }
            ]
            if blocked
            else []
        )
        values = {
            "budget_id": wallet_id,
            "blocked": blocked,
            "reasons": json.dumps(reasons),
            "position": note.id,
        }
        key = {
            "tenant_id": state["tenant_id"],
            "customer": state["customer"],
            "scope": WALLET_SCOPE + state["currency"],
        }
        updated = conn.execute(
            sa.update(access_state)
            .where(*(access_state.c[k] == v for k, v in key.items()))
            .values(**values)
        )
        if updated.rowcount == 0:
            conn.execute(sa.insert(access_state).values(**key, **values))

    def _apply(self, conn: sa.Connection, note: Notification) -> None:
        state = untag(self._decoder.decode(note.state))
        oid = note.originator_id
        budget_id = oid.hex if isinstance(oid, UUID) else str(oid)
        at = to_us(state["timestamp"])
        if note.topic == SET:
            self._set(conn, note.id, budget_id, state, at)
            return
        row = conn.execute(sa.select(budgets).where(budgets.c.budget_id == budget_id)).first()
        if row is None:  # cannot happen in a consistent log; never invent a budget
            return
        changes: dict[str, Any] = {"updated_us": at, "position": note.id}
        if note.topic == CHANGED:
            changes.update(
                limit_value=state["limit"],
                currency=state["currency"],
                thresholds=json.dumps(state["thresholds"]),
                block_at=state["block_at"],
            )
        else:
            start = to_us(state["period_start"])
            crossed = json.loads(row.crossed)
            if row.period_start_us is None or start > row.period_start_us:
                changes["period_start_us"] = start
                crossed = []
            if note.topic == CROSSED:
                crossed.append(state["threshold"])
            changes["crossed"] = json.dumps(crossed)
            if note.topic in (BLOCKED, RESTORED):
                changes["blocked"] = note.topic == BLOCKED
                reasons = (
                    [blocked_reason(budget_id, row.kind, row.currency, state)]
                    if note.topic == BLOCKED
                    else []
                )
                conn.execute(
                    sa.update(access_state)
                    .where(
                        access_state.c.tenant_id == row.tenant_id,
                        access_state.c.customer == row.customer,
                        access_state.c.scope == scope_of(row.meter),
                    )
                    .values(
                        blocked=note.topic == BLOCKED,
                        reasons=json.dumps(reasons),
                        position=note.id,
                    )
                )
        conn.execute(sa.update(budgets).where(budgets.c.budget_id == budget_id).values(**changes))

    def _set(
        self, conn: sa.Connection, position: int, budget_id: str, state: dict[str, Any], at: int
    ) -> None:
        conn.execute(
            sa.insert(budgets).values(
                budget_id=budget_id,
                tenant_id=state["tenant_id"],
                customer=state["customer"],
                kind=state["kind"],
                meter=state["meter"],
                limit_value=state["limit"],
                currency=state["currency"],
                thresholds=json.dumps(state["thresholds"]),
                block_at=state["block_at"],
                period_start_us=None,
                crossed="[]",
                blocked=False,
                created_us=at,
                updated_us=at,
                position=position,
            )
        )
        conn.execute(
            sa.insert(access_state).values(
                tenant_id=state["tenant_id"],
                customer=state["customer"],
                scope=scope_of(state["meter"]),
                budget_id=budget_id,
                blocked=False,
                reasons="[]",
                position=position,
            )
        )
