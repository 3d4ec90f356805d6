"""Follow the event log in batches; each batch's rows and its position commit together.

The library's stock runner commits once per event. Here a batch of up to thousands of
notifications is applied in one transaction with the tracking row, so every event is
applied exactly once across crashes, and two runners of one projection never both
apply a batch (the tracking row is locked and re-checked).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import sqlalchemy as sa
from eventsourcing.persistence import (
    ApplicationRecorder,
    Notification,
    Tracking,
    TrackingRecorder,
)

from projections.tables import metadata, tracking

log = logging.getLogger(__name__)


class Projection(Protocol):
    """Turns a batch of notifications into read-model rows on the given connection."""

    name: str

    def process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None: ...


class SQLTrackingView(TrackingRecorder):
    """The library's tracking interface over our `projection_tracking` table, so callers
    can wait until a projection has applied a given notification."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def insert_tracking(self, tracking_: Tracking) -> None:
        with self.engine.begin() as conn:
            save_position(conn, tracking_.application_name, tracking_.notification_id)

    def max_tracking_id(self, application_name: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(tracking.c.position).where(tracking.c.name == application_name)
            ).scalar()

    def has_tracking_id(self, application_name: str, notification_id: int | None) -> bool:
        if notification_id is None:
            return True
        return (self.max_tracking_id(application_name) or 0) >= notification_id

    def wait_for(self, name: str, position: int, timeout: float = 5.0) -> bool:
        """Block until projection `name` has applied `position`; False on timeout."""
        deadline = time.monotonic() + timeout
        while not self.has_tracking_id(name, position):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def save_position(conn: sa.Connection, name: str, position: int) -> None:
    updated = conn.execute(
        sa.update(tracking).where(tracking.c.name == name).values(position=position)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(tracking).values(name=name, position=position))


def locked_position(conn: sa.Connection, name: str) -> int:
    query = sa.select(tracking.c.position).where(tracking.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).scalar() or 0


class Runner:
    """Applies one projection to the log, a batch per transaction."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        engine: sa.Engine,
        projection: Projection,
        batch_size: int = 5000,
    ) -> None:
        self.recorder = recorder
        self.engine = engine
        self.projection = projection
        self.batch_size = batch_size
        self.view = SQLTrackingView(engine)

    def position(self) -> int:
        return self.view.max_tracking_id(self.projection.name) or 0

    def run_once(self, stop: int | None = None) -> int:
        """Apply the next batch (up to notification `stop`, when given); answer how many
        notifications it held (0: caught up)."""
        start = self.position()
        return self._apply(start, self._fetch(start, stop))

    def _fetch(self, start: int, stop: int | None) -> Sequence[Notification]:
        if stop is not None and start >= stop:
            return []
        return self.recorder.select_notifications(
            start=start, limit=self.batch_size, stop=stop, inclusive_of_start=False
        )

    def _apply(self, start: int, notes: Sequence[Notification]) -> int:
        if not notes:
            return 0
        with self.engine.begin() as conn:
            if locked_position(conn, self.projection.name) != start:
                return 0  # another runner applied this batch first
            self.projection.process(conn, notes)
            save_position(conn, self.projection.name, notes[-1].id)
        return len(notes)

    def catch_up(
        self, stop: int | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Apply batches until the log (or notification `stop`) is reached; answer how
        many notifications were applied. `progress` is told the position after each batch.

        The next batch is read while the current one is applied (reading the log and
        writing the read models overlap on a two-core machine)."""
        total = 0
        start = self.position()
        with ThreadPoolExecutor(1, thread_name_prefix="log-reader") as reader:
            notes = self._fetch(start, stop)
            while notes:
                following = reader.submit(self._fetch, notes[-1].id, stop)
                applied = self._apply(start, notes)
                if applied == 0:  # another runner moved on: start again from its position
                    following.result()
                    start = self.position()
                    notes = self._fetch(start, stop)
                    continue
                total += applied
                start = notes[-1].id
                if progress is not None:
                    progress(start)
                notes = following.result()
        return total

    def run_forever(self, stop: threading.Event, idle_seconds: float = 0.02) -> None:
        """Follow the log until `stop` is set; errors are logged and retried."""
        while not stop.is_set():
            try:
                if self.catch_up() == 0:
                    stop.wait(idle_seconds)
            except Exception:
                log.exception("projection %s failed; retrying", self.projection.name)
                stop.wait(1.0)
