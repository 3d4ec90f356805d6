"""Wallet handlers: open, top up, grant (commands); balance and movements (queries)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import msgspec
import sqlalchemy as sa
from litestar import Request, get, post

from api.auth import runtime_of
from api.commands import _decode_any, decode_json
from api.openapi import body
from api.queries import check_limit, decode_cursor, encode_cursor, parse_instant
from api.schemas import decimal_text, instant_text
from domain.errors import NotFound
from domain.instants import from_us
from domain.wallets import Wallet
from projections.wallets import wallet_transactions, wallets


class WalletIn(msgspec.Struct):
    """A prepaid wallet for one customer and currency."""

    customer: str
    currency: str = "USD"
    low_balance_threshold: str | None = None
    block_on_depletion: bool = False


class TopUpIn(msgspec.Struct):
    """Money added to a wallet; the idempotency key makes a retry safe."""

    amount: str
    idempotency_key: str
    reference: str | None = None


class GrantIn(msgspec.Struct):
    """Free credits, spent before the paid balance."""

    amount: str
    expires_at: str | None = None
    refresh: str | None = None


def wallet_uuid(wallet_id: str) -> UUID:
    try:
        return UUID(wallet_id.removeprefix("wal_"))
    except ValueError:
        raise NotFound(f"no wallet {wallet_id!r}", "id") from None


def wallet_out(w: Wallet) -> dict[str, Any]:
    return {
        "id": "wal_" + w.id.hex,
        "object": "wallet",
        "customer": w.customer,
        "currency": w.currency,
        "balance": decimal_text(w.balance),
        "paid_balance": decimal_text(w.paid),
        "granted_balance": decimal_text(w.balance - w.paid),
        "low_balance_threshold": None
        if w.low_balance_threshold is None
        else decimal_text(w.low_balance_threshold),
        "block_on_depletion": w.block_on_depletion,
        "depleted": w.depleted,
    }


class WalletCommands:
    """POST /v1/wallets, /v1/wallets/{id}/top-ups, /v1/wallets/{id}/grants."""

    @post(
        "/wallets",
        operation_id="createWallet",
        status_code=201,
        operation_class=body(WalletIn),
    )
    async def create_wallet(self, request: Request[Any, Any, Any], tenant: UUID) -> dict[str, Any]:
        data = decode_json(await request.body(), _decode_any)
        wallet = await asyncio.to_thread(runtime_of(request).wallets.open, tenant, data)
        await _shown(request)
        return wallet_out(wallet)

    @post(
        "/wallets/{wallet_id:str}/top-ups",
        operation_id="topUpWallet",
        status_code=200,
        operation_class=body(TopUpIn),
    )
    async def top_up(
        self, request: Request[Any, Any, Any], tenant: UUID, wallet_id: str
    ) -> dict[str, Any]:
        data = decode_json(await request.body(), _decode_any)
        service = runtime_of(request).wallets
        top_up_id, replayed = await asyncio.to_thread(
            service.top_up, tenant, wallet_uuid(wallet_id), data
        )
        wallet = await asyncio.to_thread(service.get, tenant, wallet_uuid(wallet_id))
        await _shown(request)
        return {
            "id": top_up_id,
            "object": "wallet_top_up",
            "wallet": "wal_" + wallet.id.hex,
            "amount": decimal_text(wallet.top_ups[data["idempotency_key"]][1]),
            "idempotency_key": data["idempotency_key"],
            "status": "duplicate" if replayed else "accepted",
            "balance": decimal_text(wallet.balance),
        }

    @post(
        "/wallets/{wallet_id:str}/grants",
        operation_id="grantWalletCredits",
        status_code=200,
        operation_class=body(GrantIn),
    )
    async def grant(
        self, request: Request[Any, Any, Any], tenant: UUID, wallet_id: str
    ) -> dict[str, Any]:
        data = decode_json(await request.body(), _decode_any)
        expires = parse_instant(data.get("expires_at"), "expires_at")
        service = runtime_of(request).wallets
        grant_id = await asyncio.to_thread(
            service.grant, tenant, wallet_uuid(wallet_id), data, expires
        )
        wallet = await asyncio.to_thread(service.get, tenant, wallet_uuid(wallet_id))
        await _shown(request)
        grant = wallet.grants[grant_id]
        return {
            "id": grant_id,
            "object": "wallet_grant",
            "wallet": "wal_" + wallet.id.hex,
            "amount": decimal_text(grant["amount"]),
            "expires_at": None if expires is None else instant_text(expires),
            "refresh": grant["refresh"],
            "balance": decimal_text(wallet.balance),
        }


class WalletQueries:
    """GET /v1/wallets/{id} and its transactions, from the wallet read models."""

    @get("/wallets/{wallet_id:str}", operation_id="getWallet", sync_to_thread=True)
    def get_wallet(
        self, request: Request[Any, Any, Any], tenant: UUID, wallet_id: str
    ) -> dict[str, Any]:
        with runtime_of(request).read_engine.connect() as conn:
            row = _wallet_row(conn, tenant, wallet_id)
        return {
            "id": "wal_" + row.wallet_id,
            "object": "wallet",
            "customer": row.customer,
            "currency": row.currency,
            "balance": decimal_text(row.balance),
            "paid_balance": decimal_text(row.paid_balance),
            "granted_balance": decimal_text(row.granted_balance),
            "low_balance_threshold": None
            if row.low_balance_threshold is None
            else decimal_text(row.low_balance_threshold),
            "block_on_depletion": row.block_on_depletion,
            "depleted": row.depleted,
            "low_balance": row.low_balance,
            "created_at": instant_text(from_us(row.created_us)),
        }

    @get(
        "/wallets/{wallet_id:str}/transactions",
        operation_id="listWalletTransactions",
        sync_to_thread=True,
    )
    def transactions(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        wallet_id: str,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        after = decode_cursor(cursor)
        t = wallet_transactions
        with runtime_of(request).read_engine.connect() as conn:
            row = _wallet_row(conn, tenant, wallet_id)
            query = sa.select(t).where(t.c.wallet_id == row.wallet_id)
            if after:
                query = query.where(t.c.version > after[0])
            rows = conn.execute(query.order_by(t.c.version).limit(check_limit(limit) + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "data": [
                {
                    "id": f"wtx_{r.wallet_id}_{r.version}",
                    "object": "wallet_transaction",
                    "type": r.type,
                    "amount": decimal_text(r.amount),
                    "balance_after": decimal_text(r.balance_after),
                    "cause": json.loads(r.cause),
                    "created_at": instant_text(from_us(r.at_us)),
                }
                for r in rows
            ],
            "next_cursor": encode_cursor([rows[-1].version]) if more else None,
        }


async def _shown(request: Request[Any, Any, Any]) -> None:
    """Read your writes: give the wallet projection up to a second to show this change."""
    runtime = runtime_of(request)
    position = await asyncio.to_thread(runtime.ledger.recorder.max_notification_id)
    await asyncio.to_thread(runtime.view.wait_for, "wallets", position or 0, 1.0)


def _wallet_row(conn: sa.Connection, tenant: UUID, wallet_id: str) -> Any:
    row = conn.execute(
        sa.select(wallets).where(wallets.c.wallet_id == wallet_uuid(wallet_id).hex)
    ).first()
    if row is None or row.tenant_id != tenant.hex:
        raise NotFound(f"no wallet {wallet_id!r}", "id")
    return row
