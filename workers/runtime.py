"""Builds the store, the read models and the projection runners for one process."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import sqlalchemy as sa

from application.billing import Billing
from application.catalog import Catalog
from application.ingest import Ingestor
from application.settings import Settings
from application.store import Ledger, open_ledger
from application.wallets import Wallets
from projections.db import make_engine
from projections.invoices import InvoiceProjection
from projections.runner import Runner, SQLTrackingView, create_tables
from projections.usage import UsageProjection
from projections.wallets import WalletProjection
from workers.alerts import Alerts
from workers.drawdown import Drawdown, expire_grants

log = logging.getLogger(__name__)


class Runtime:
    """Everything a process needs: the ledger, the read-model engines, the runners."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ledger: Ledger = open_ledger(settings)
        self.catalog = Catalog(self.ledger)
        self.ingestor = Ingestor(self.ledger, self.catalog)
        self.billing = Billing(self.ledger, self.catalog, settings)
        self.wallets = Wallets(self.ledger)
        schema = settings.eventsourcing_env().get("POSTGRES_SCHEMA")
        self.engine: sa.Engine = make_engine(settings.sqlalchemy_url(), schema, writer=True)
        self.read_engine: sa.Engine = make_engine(settings.sqlalchemy_url(), schema, writer=False)
        create_tables(self.engine)
        self.usage = Runner(
            self.ledger.recorder, self.engine, UsageProjection(), settings.projection_batch_size
        )
        self.invoices = Runner(
            self.ledger.recorder, self.engine, InvoiceProjection(), settings.projection_batch_size
        )
        self.wallet_book = Runner(
            self.ledger.recorder, self.engine, WalletProjection(), settings.projection_batch_size
        )
        self.view = SQLTrackingView(self.read_engine)
        self.drawdown = Drawdown(self)
        self.alerts = Alerts(settings, self.ledger, self.catalog, self.engine, self.read_engine)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start_workers(self) -> None:
        """Run the projections and the billing scheduler as threads of this process."""
        for runner in (self.usage, self.invoices, self.wallet_book):
            self._spawn(runner.run_forever, f"projection-{runner.projection.name}")
        self._spawn(self._schedule_billing, "billing-scheduler")
        self._spawn(self.drawdown.run_forever, "drawdown")
        self._threads += self.alerts.start(self._stop)  # budgets, access, webhooks

    def _spawn(self, target, name: str) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=(self._stop,), daemon=True, name=name)
        thread.start()
        self._threads.append(thread)

    def _schedule_billing(self, stop: threading.Event) -> None:
        """Every XTOPAY_BILLING_INTERVAL_SECONDS: a billing run as of now."""
        from workers.billing import run_billing

        while not stop.wait(self.settings.billing_interval_seconds):
            try:
                expire_grants(self, datetime.now(UTC))
                result = run_billing(self, datetime.now(UTC))
                if result.invoices or result.failed:
                    log.info(
                        "billing run issued %d invoices, %d subscriptions failed",
                        len(result.invoices),
                        len(result.failed),
                    )
            except Exception:
                log.exception("scheduled billing run failed; retrying next interval")

    def wait_for_usage(self, position: int | None, timeout: float = 5.0) -> bool:
        """Until the usage read models include `position` (or the timeout passes)."""
        if position is None:
            return True
        return self.view.wait_for(self.usage.projection.name, position, timeout)

    def wait_for_invoices(self, position: int | None, timeout: float = 5.0) -> bool:
        """Until the billing read models include `position` (or the timeout passes)."""
        if position is None:
            return True
        return self.view.wait_for(self.invoices.projection.name, position, timeout)

    def sync_read_models(self, position: int, timeout: float = 60.0) -> bool:
        """Apply the log up to `position` to the usage and billing read models (helping the
        projection threads, or doing it when there are none); False on timeout."""
        for runner in (self.usage, self.invoices):
            try:
                runner.catch_up()
            except Exception:  # another runner applied the batch first; its work stands
                log.debug("catch-up of %s lost a race", runner.projection.name, exc_info=True)
            if not self.view.wait_for(runner.projection.name, position, timeout):
                return False
        return True

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.alerts.close()
        self.engine.dispose()
        self.read_engine.dispose()
        self.ledger.close()
