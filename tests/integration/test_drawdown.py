"""Real-time drawdown: usage is priced as it arrives and paid from the wallet; the
invoice counts what the wallet paid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from projections.invoices import invoices
from projections.wallets import wallet_transactions, wallets
from tests.integration.billing_helpers import bill, send_many, setup, subscribe
from tests.integration.helpers import item
from workers.runtime import Runtime

D = Decimal


def _sync(rt: Runtime, now: datetime) -> None:
    rt.usage.catch_up()
    rt.invoices.catch_up()  # subscriptions: which period and plan price the usage
    rt.drawdown.step(now)
    rt.wallet_book.catch_up()


def _wallet_row(rt: Runtime):
    with rt.read_engine.connect() as conn:
        return conn.execute(sa.select(wallets)).one()


def test_usage_is_debited_tier_by_tier_and_the_invoice_counts_it(runtime: Runtime) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=2)
    tenant = setup(
        runtime,
        interval="week",
        prices=[
            {
                "meter": "calls",
                "model": "graduated",
                "tiers": [
                    {"up_to": 10, "unit_price": "0.50"},
                    {"up_to": None, "unit_price": "0.10"},
                ],
            }
        ],
    )
    subscribe(runtime, tenant, start)
    wallet = runtime.wallets.open(
        tenant,
        {
            "customer": "c1",
            "currency": "USD",
            "low_balance_threshold": "2",
            "block_on_depletion": True,
        },
    )
    runtime.wallets.top_up(tenant, wallet.id, {"amount": "10", "idempotency_key": "t1"})
    runtime.wallets.grant(tenant, wallet.id, {"amount": "1"}, now + timedelta(days=30))

    send_many(
        runtime,
        tenant,
        [item(f"a{i}", event_type="api", timestamp=now - timedelta(minutes=i)) for i in range(8)],
        now,
    )
    _sync(runtime, now)
    assert _wallet_row(runtime).balance == D(11) - 8 * D("0.50")  # 7.00

    send_many(
        runtime,
        tenant,
        [item(f"b{i}", event_type="api", timestamp=now - timedelta(seconds=i)) for i in range(7)],
        now,
    )
    _sync(runtime, now)
    # 15 calls: 10 at 0.50 + 5 at 0.10 = 5.50; the second batch cost 5.50 - 4.00 = 1.50
    row = _wallet_row(runtime)
    assert row.balance == D("5.50")
    assert row.granted_balance == 0  # the grant was spent first
    _sync(runtime, now)  # nothing new: nothing charged twice
    assert _wallet_row(runtime).balance == D("5.50")

    with runtime.read_engine.connect() as conn:
        moves = conn.execute(
            sa.select(wallet_transactions).order_by(wallet_transactions.c.version)
        ).all()
    debits = [m for m in moves if m.type == "debit"]
    assert [m.amount for m in debits] == [D("-4.00"), D("-1.50")]
    assert sum(m.amount for m in moves) == D("5.50")  # top-ups + grants - debits
    cause = json.loads(debits[1].cause)
    assert cause["charge"].startswith("chg_") and len(cause["usage_events"]) == 7

    result = bill(runtime, start + timedelta(days=8))
    assert len(result.invoices) == 1
    with runtime.read_engine.connect() as conn:
        invoice = conn.execute(
            sa.select(invoices.c.subtotal, invoices.c.wallet_applied, invoices.c.total)
        ).one()
    assert (invoice.subtotal, invoice.wallet_applied, invoice.total) == (
        D("5.50"),
        D("5.50"),
        D("0.00"),
    )
    runtime.wallet_book.catch_up()
    assert _wallet_row(runtime).balance == D("5.50")  # the invoice took nothing more


def test_depletion_blocks_and_top_up_restores(runtime: Runtime) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    tenant = setup(runtime, interval="month")
    subscribe(runtime, tenant, now - timedelta(days=1))
    wallet = runtime.wallets.open(
        tenant, {"customer": "c1", "currency": "USD", "block_on_depletion": True}
    )
    runtime.wallets.top_up(tenant, wallet.id, {"amount": "3", "idempotency_key": "t1"})
    send_many(
        runtime,
        tenant,
        [item(f"a{i}", event_type="api", timestamp=now - timedelta(seconds=i)) for i in range(5)],
        now,
    )
    _sync(runtime, now)
    row = _wallet_row(runtime)
    assert row.balance == D(-2) and row.depleted  # usage already served is still billed
    runtime.wallets.top_up(tenant, wallet.id, {"amount": "10", "idempotency_key": "t2"})
    runtime.wallet_book.catch_up()
    row = _wallet_row(runtime)
    assert row.balance == D(8) and not row.depleted


def test_per_period_grant_refreshes_when_a_period_closes_and_lapsed_grants_expire(
    runtime: Runtime,
) -> None:
    from workers.drawdown import expire_grants

    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=2)
    tenant = setup(runtime, interval="week")  # 1.00 per call
    subscribe(runtime, tenant, start)
    wallet = runtime.wallets.open(tenant, {"customer": "c1", "currency": "USD"})
    runtime.wallets.grant(tenant, wallet.id, {"amount": "5", "refresh": "per_period"}, None)
    runtime.wallets.grant(tenant, wallet.id, {"amount": "2"}, now + timedelta(hours=1))
    send_many(
        runtime,
        tenant,
        [item(f"a{i}", event_type="api", timestamp=now - timedelta(minutes=i)) for i in range(3)],
        now,
    )
    _sync(runtime, now)
    # 3.00 drawn from the grant expiring soonest (2) then the per-period grant (1)
    assert _wallet_row(runtime).balance == D(4)

    bill(runtime, start + timedelta(days=7, hours=2))  # the week closes
    runtime.wallet_book.catch_up()
    row = _wallet_row(runtime)
    assert row.granted_balance == D(5)  # the per-period grant is whole again

    assert expire_grants(runtime, now + timedelta(hours=2)) == 0  # the 2 were spent already
    runtime.wallets.grant(tenant, wallet.id, {"amount": "3"}, now + timedelta(hours=1))
    assert expire_grants(runtime, now + timedelta(hours=2)) == 1
    runtime.wallet_book.catch_up()
    with runtime.read_engine.connect() as conn:
        last = conn.execute(
            sa.select(wallet_transactions).order_by(wallet_transactions.c.version.desc())
        ).first()
    assert (last.type, last.amount) == ("expiry", D(-3))
    assert _wallet_row(runtime).balance == D(5)


def test_a_depleted_wallet_blocks_access_and_its_movements_become_webhooks(
    runtime: Runtime,
) -> None:
    from projections.outbox import webhook_messages
    from tests.integration.alerts_support import access, settle

    now = datetime.now(UTC).replace(microsecond=0)
    tenant = setup(runtime, interval="month")  # 1.00 per call
    subscribe(runtime, tenant, now - timedelta(days=1))
    runtime.alerts.webhooks.register_endpoint(
        tenant, {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    )
    wallet = runtime.wallets.open(
        tenant,
        {
            "customer": "c1",
            "currency": "USD",
            "low_balance_threshold": "1",
            "block_on_depletion": True,
        },
    )
    runtime.wallets.top_up(tenant, wallet.id, {"amount": "2", "idempotency_key": "t1"})
    send_many(
        runtime,
        tenant,
        [item(f"a{i}", event_type="api", timestamp=now - timedelta(seconds=i)) for i in range(3)],
        now,
    )
    _sync(runtime, now)
    settle(runtime, now)
    reasons = access(runtime, tenant, "c1", "calls")
    assert [r["type"] for r in reasons] == ["wallet_depleted"]
    assert reasons[0]["balance"] == "-1.00"
    runtime.wallets.top_up(tenant, wallet.id, {"amount": "5", "idempotency_key": "t2"})
    settle(runtime, now)
    assert access(runtime, tenant, "c1", "calls") == []
    with runtime.read_engine.connect() as conn:
        kinds = [
            r.event_type
            for r in conn.execute(
                sa.select(webhook_messages.c.event_type).order_by(webhook_messages.c.position)
            )
        ]
    assert kinds == [
        "wallet.topped_up",
        "wallet.low_balance",
        "wallet.depleted",
        "wallet.topped_up",
        "access.restored",
    ]
