"""Wallet read models: balances and every movement, with the balance it left."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
import sqlalchemy as sa
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.instants import to_us
from domain.wallets import Wallet
from projections.tables import ID, Dec, metadata
from projections.usage import untag

wallets = sa.Table(
    "wallets",
    metadata,
    sa.Column("wallet_id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("balance", Dec, nullable=False),
    sa.Column("paid_balance", Dec, nullable=False),
    sa.Column("granted_balance", Dec, nullable=False),
    sa.Column("low_balance_threshold", Dec),
    sa.Column("block_on_depletion", sa.Boolean, nullable=False),
    sa.Column("depleted", sa.Boolean, nullable=False),
    sa.Column("low_balance", sa.Boolean, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("wallets_by_customer", "tenant_id", "customer"),
)

wallet_transactions = sa.Table(
    "wallet_transactions",
    metadata,
    sa.Column("wallet_id", ID, primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),  # the event's place in the wallet
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("amount", Dec, nullable=False),
    sa.Column("balance_after", Dec, nullable=False),
    sa.Column("cause", sa.Text, nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

WALLET_TABLES = (wallets, wallet_transactions)
TOPICS = {
    get_topic(getattr(Wallet, name)): name
    for name in (
        "Opened",
        "ToppedUp",
        "Granted",
        "GrantExpired",
        "GrantRefreshed",
        "Debited",
        "Refunded",
        "LowBalanceReached",
        "LowBalanceCleared",
        "Depleted",
        "Replenished",
    )
}
MOVEMENTS = {
    "ToppedUp": ("top_up", 1),
    "Granted": ("grant", 1),
    "GrantRefreshed": ("grant", 1),
    "Debited": ("debit", -1),
    "Refunded": ("refund", 1),
    "GrantExpired": ("expiry", -1),
}


class WalletProjection:
    """Keeps `wallets` and `wallet_transactions` in step with the Wallet events."""

    name = "wallets"

    def process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None:
        for note in notifications:
            kind = TOPICS.get(note.topic)
            if kind is None:
                continue
            state = untag(msgspec.json.decode(note.state))
            oid = note.originator_id
            wallet_id = oid.hex if isinstance(oid, UUID) else str(oid)
            if kind == "Opened":
                self._open(conn, note, wallet_id, state)
            elif kind in MOVEMENTS:
                self._move(conn, note, wallet_id, kind, state)
            else:
                self._flag(conn, note, wallet_id, kind)

    def _open(
        self, conn: sa.Connection, note: Notification, wallet_id: str, state: dict[str, Any]
    ) -> None:
        conn.execute(
            sa.insert(wallets).values(
                wallet_id=wallet_id,
                tenant_id=state["tenant_id"],
                customer=state["customer"],
                currency=state["currency"],
                balance=Decimal(0),
                paid_balance=Decimal(0),
                granted_balance=Decimal(0),
                low_balance_threshold=state["low_balance_threshold"],
                block_on_depletion=state["block_on_depletion"],
                depleted=False,
                low_balance=False,
                created_us=to_us(state["timestamp"]),
                position=note.id,
            )
        )

    def _move(
        self,
        conn: sa.Connection,
        note: Notification,
        wallet_id: str,
        kind: str,
        state: dict[str, Any],
    ) -> None:
        label, sign = MOVEMENTS[kind]
        amount = state["amount"]
        row = conn.execute(sa.select(wallets).where(wallets.c.wallet_id == wallet_id)).one()
        granted, paid = row.granted_balance, row.paid_balance
        if kind in ("Granted", "GrantRefreshed"):
            granted += amount
        elif kind == "GrantExpired":
            granted -= amount
        elif kind == "Debited":
            spent_grants = sum((Decimal(v) for v in state["from_grants"].values()), Decimal(0))
            granted -= spent_grants
            paid -= state["from_balance"]
        else:
            paid += amount
        conn.execute(
            sa.update(wallets)
            .where(wallets.c.wallet_id == wallet_id)
            .values(
                balance=state["balance_after"],
                paid_balance=paid,
                granted_balance=granted,
                position=note.id,
            )
        )
        conn.execute(
            sa.insert(wallet_transactions).values(
                wallet_id=wallet_id,
                version=note.originator_version,
                type=label,
                amount=sign * amount,
                balance_after=state["balance_after"],
                cause=json.dumps(_cause(kind, state), sort_keys=True, default=str),
                at_us=to_us(state["timestamp"]),
                position=note.id,
            )
        )

    def _flag(self, conn: sa.Connection, note: Notification, wallet_id: str, kind: str) -> None:
        values = {
            "LowBalanceReached": {"low_balance": True},
            "LowBalanceCleared": {"low_balance": False},
            "Depleted": {"depleted": True},
            "Replenished": {"depleted": False},
        }[kind]
        conn.execute(
            sa.update(wallets)
            .where(wallets.c.wallet_id == wallet_id)
            .values(position=note.id, **values)
        )


def _cause(kind: str, state: dict[str, Any]) -> dict[str, Any]:
    """What caused a movement, in the shape the transactions endpoint shows."""
    if kind == "ToppedUp":
        return {
            "top_up": state["top_up_id"],
            "idempotency_key": state["idempotency_key"],
            "reference": state["reference"],
        }
    if kind in ("Granted", "GrantRefreshed", "GrantExpired"):
        return {"grant": state["grant_id"]}
    if kind == "Debited":
        return {
            "charge": state["charge_id"],
            **state["cause"],
            "from_grants": {k: str(v) for k, v in state["from_grants"].items()},
            "from_balance": str(state["from_balance"]),
        }
    return {"refund": state["refund_id"], "reason": state["reason"]}
