"""Wallets under concurrent writers: no top-up or debit is ever lost."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from application.wallets import Wallets
from projections.runner import Runner, create_tables
from projections.wallets import WalletProjection, wallet_transactions, wallets
from workers.runtime import Runtime

D = Decimal


def test_eight_threads_of_top_ups_against_a_stream_of_debits(runtime: Runtime) -> None:
    service = Wallets(runtime.ledger)
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    wallet = service.open(tenant, {"customer": "c1", "currency": "USD",
                                   "low_balance_threshold": "5", "block_on_depletion": True})
    service.grant(tenant, wallet.id, {"amount": "7.25"}, datetime.now(UTC) + timedelta(days=1))
    rng = random.Random(11)
    top_ups = [[D(rng.randrange(1, 5000)) / 100 for _ in range(12)] for _ in range(8)]
    debits = [D(rng.randrange(1, 900)) / 100 for _ in range(60)]
    barrier = threading.Barrier(9)

    def topper(n: int) -> None:
        barrier.wait()
        for i, amount in enumerate(top_ups[n]):
            service.top_up(tenant, wallet.id, {"amount": str(amount),
                                              "idempotency_key": f"t{n}-{i}"})
            # a client retry of the same top-up changes nothing
            service.top_up(tenant, wallet.id, {"amount": str(amount),
                                              "idempotency_key": f"t{n}-{i}"})

    def debiter() -> None:
        barrier.wait()
        for i, amount in enumerate(debits):
            service.debit(tenant, wallet.id, f"chg_{i}", amount, {"usage_events": []},
                          datetime.now(UTC))
            service.debit(tenant, wallet.id, f"chg_{i}", amount, {"usage_events": []},
                          datetime.now(UTC))  # replayed charge: no second debit

    threads = [threading.Thread(target=topper, args=(n,)) for n in range(8)]
    threads.append(threading.Thread(target=debiter))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    expected = D("7.25") + sum(sum(t) for t in top_ups) - sum(debits)
    assert service.get(tenant, wallet.id).balance == expected

    create_tables(runtime.engine)
    Runner(runtime.ledger.recorder, runtime.engine, WalletProjection()).catch_up()
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(wallets)).one()
        moves = conn.execute(sa.select(wallet_transactions)
                             .order_by(wallet_transactions.c.version)).all()
    assert row.balance == expected
    assert row.paid_balance + row.granted_balance == expected
    assert len(moves) == 1 + 8 * 12 + 60
    assert sum(m.amount for m in moves) == expected  # top-ups + grants - debits
    running = D(0)
    for m in moves:  # every movement's balance_after follows from the one before
        running += m.amount
        assert m.balance_after == running
