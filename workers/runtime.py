"""Builds the store, the read models and the projection runners for one process."""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from application.catalog import Catalog
from application.ingest import Ingestor
from application.settings import Settings
from application.store import Ledger, open_ledger
from projections.db import make_engine
from projections.runner import Runner, SQLTrackingView, create_tables
from projections.usage import UsageProjection

log = logging.getLogger(__name__)


class Runtime:
    """Everything a process needs: the ledger, the read-model engines, the runners."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ledger: Ledger = open_ledger(settings)
        self.catalog = Catalog(self.ledger)
        self.ingestor = Ingestor(self.ledger, self.catalog)
        schema = settings.eventsourcing_env().get("POSTGRES_SCHEMA")
        self.engine: sa.Engine = make_engine(settings.sqlalchemy_url(), schema, writer=True)
        self.read_engine: sa.Engine = make_engine(settings.sqlalchemy_url(), schema, writer=False)
        create_tables(self.engine)
        self.usage = Runner(
            self.ledger.recorder, self.engine, UsageProjection(), settings.projection_batch_size
        )
        self.view = SQLTrackingView(self.read_engine)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start_workers(self) -> None:
        """Run the projections as threads of this process (the embedded mode)."""
        for runner in (self.usage,):
            thread = threading.Thread(
                target=runner.run_forever,
                args=(self._stop,),
                daemon=True,
                name=f"projection-{runner.projection.name}",
            )
            thread.start()
            self._threads.append(thread)

    def wait_for_usage(self, position: int | None, timeout: float = 5.0) -> bool:
        """Until the usage read models include `position` (or the timeout passes)."""
        if position is None:
            return True
        return self.view.wait_for(self.usage.projection.name, position, timeout)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.engine.dispose()
        self.read_engine.dispose()
        self.ledger.close()
