"""The wallet ledger identity after a randomized concurrent workload on PostgreSQL:
balance = top-ups + grants - debits - expiries + refunds, for every wallet, checked by
the audit tool from the event store."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from application.settings import Settings
from projections.wallets import wallets
from workers.audit import wallet_ledger
from workers.runtime import Runtime

D = Decimal


def test_random_concurrent_movements_keep_the_ledger_identity(pg_url: str) -> None:
    rt = Runtime(Settings(database_url=pg_url))
    try:
        tenant = rt.catalog.create_tenant("acme").tenant_id
        ids = [
            rt.wallets.open(
                tenant, {"customer": f"c{n}", "currency": "USD", "low_balance_threshold": "20"}
            ).id
            for n in range(3)
        ]
        expected = {w: D(0) for w in ids}
        lock = threading.Lock()
        now = datetime.now(UTC)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for step in range(40):
                wallet = rng.choice(ids)
                amount = D(rng.randrange(1, 10_000)) / 100
                kind = rng.choice(["top_up", "top_up", "grant", "debit", "debit", "refund"])
                if kind == "top_up":
                    rt.wallets.top_up(
                        tenant, wallet, {"amount": str(amount), "idempotency_key": f"{seed}-{step}"}
                    )
                elif kind == "grant":  # half of them lapse at once and expire below
                    lapse = now - timedelta(seconds=1) if step % 2 else now + timedelta(days=9)
                    rt.wallets.grant(tenant, wallet, {"amount": str(amount)}, lapse)
                    if step % 2:
                        amount = D(0)  # expires: adds nothing in the end
                elif kind == "debit":
                    rt.wallets.debit(tenant, wallet, f"chg-{seed}-{step}", amount, {}, now)
                    amount = -amount
                else:
                    rt.wallets.refund(tenant, wallet, amount, "goodwill")
                with lock:
                    expected[wallet] += amount

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for wallet in ids:
            rt.wallets.expire_grants(tenant, wallet, now)
        rt.wallet_book.catch_up()
        for wallet in ids:
            assert rt.wallets.get(tenant, wallet).balance == expected[wallet]
        assert wallet_ledger(rt) == []
    finally:
        rt.close()


def test_the_audit_notices_a_wallet_read_model_that_drifted(pg_url: str) -> None:
    rt = Runtime(Settings(database_url=pg_url))
    try:
        tenant = rt.catalog.create_tenant("acme").tenant_id
        wallet = rt.wallets.open(tenant, {"customer": "c1", "currency": "USD"})
        rt.wallets.top_up(tenant, wallet.id, {"amount": "10", "idempotency_key": "k"})
        rt.wallet_book.catch_up()
        assert wallet_ledger(rt) == []
        with rt.engine.begin() as conn:
            conn.execute(sa.update(wallets).values(balance=D("10.01")))
        problems = wallet_ledger(rt)
        assert len(problems) == 1 and "10.01" in problems[0]
    finally:
        rt.close()
