"""Budgets, access checks and webhooks, wired for one process.

Built by `Runtime` (no threads, no broker, no Redis connection at construction);
`start` runs, as threads of this process: the access and outbox projections, the
budget processor, the access cache sync (Redis mode) and the webhook delivery
workers (a dramatiq Worker and the dispatcher). Tests drive each piece directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import sqlalchemy as sa

from application.budgets import Budgets
from application.catalog import Catalog
from application.settings import Settings
from application.store import Ledger
from application.webhooks import Webhooks
from projections.access import AccessProjection
from projections.outbox import OutboxProjection
from projections.runner import Runner
from workers.access import AccessReader, AccessSync, RedisAccessStore
from workers.budgets import BudgetProcessor
from workers.webhooks import Deliverer, DeliveryWorkers

IDLE = 0.05


class Alerts:
    """Everything of budgets, access and webhooks in this process."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        catalog: Catalog,
        engine: sa.Engine,
        read_engine: sa.Engine,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.read_engine = read_engine
        self.budgets = Budgets(ledger, catalog)
        self.webhooks = Webhooks(ledger)
        batch = settings.projection_batch_size
        self.access_runner = Runner(ledger.recorder, engine, AccessProjection(), batch)
        self.outbox_runner = Runner(ledger.recorder, engine, OutboxProjection(), batch)
        self.processor = BudgetProcessor(
            ledger.recorder,
            self.budgets,
            engine,
            read_engine,
            batch_size=batch,
            repository=ledger.repository,
        )
        self.access = AccessReader(read_engine, settings.redis_url, settings.redis_namespace)
        self.deliverer = Deliverer(
            engine, read_engine, self.webhooks, settings.webhook_retry_base_seconds
        )
        self.delivery: DeliveryWorkers | None = None
        self._redis_store: RedisAccessStore | None = None

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """Run the background work of this area as threads; answer them."""
        # 50 ms between polls when idle on the path to the access check (a crossing
        # still shows within a second), 100 ms for webhooks: a fraction of the CPU of
        # faster polling, which on a small machine competes with the API
        targets: list[tuple[str, Callable[[threading.Event], None]]] = [
            ("projection-access", partial(self.access_runner.run_forever, idle_seconds=IDLE)),
            ("projection-outbox", partial(self.outbox_runner.run_forever, idle_seconds=2 * IDLE)),
            ("budget-processor", partial(self.processor.run_forever, idle_seconds=IDLE)),
        ]
        if self.settings.redis_url:
            self._redis_store = RedisAccessStore(
                self.settings.redis_url, self.settings.redis_namespace
            )
            targets.append(
                ("access-cache-sync", AccessSync(self._redis_store, self.read_engine).run_forever)
            )
        threads = []
        for name, target in targets:
            thread = threading.Thread(target=target, args=(stop,), daemon=True, name=name)
            thread.start()
            threads.append(thread)
        self.delivery = DeliveryWorkers(
            self.settings, self.deliverer, self.engine, self.read_engine
        )
        threads += self.delivery.start(stop)
        return threads

    def close(self) -> None:
        """Stop what `start` began (the caller has set the stop event)."""
        if self.delivery is not None:
            self.delivery.close()
            self.delivery = None
        self.access.close()
        if self._redis_store is not None:
            self._redis_store.close()
