"""Audit replay: rebuild every read model from the log into scratch tables and compare
them with the live ones (verify), or swap them in (rebuild).

While the final comparison or swap runs, the live projections' tracking rows are
locked, so the live read models stand still at a known log position; ingestion and
queries keep going.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from projections.compare import Difference
from projections.db import make_engine
from projections.runner import Projection, Runner, create_tables, locked_position
from projections.tables import USAGE_TABLES, tracking
from projections.usage import UsageProjection
from workers.runtime import Runtime

Progress = Callable[[str, int, int], None]  # (projection, position, target)


@dataclass(frozen=True)
class ProjectionSpec:
    """A projection and the tables it owns."""

    name: str
    factory: Callable[[], Projection]
    tables: tuple[sa.Table, ...]


def projection_specs() -> list[ProjectionSpec]:
    return [ProjectionSpec("usage", UsageProjection, USAGE_TABLES)]


@contextmanager
def scratch_engine(runtime: Runtime) -> Iterator[sa.Engine]:
    """Empty read-model tables beside the live ones: a scratch schema on PostgreSQL,
    a scratch file on SQLite. Removed afterwards."""
    settings = runtime.settings
    if settings.is_postgres:
        schema = f"xtopay_scratch_{uuid.uuid4().hex[:10]}"
        with runtime.engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        engine = make_engine(settings.sqlalchemy_url(), schema)
        try:
            create_tables(engine)
            yield engine
        finally:
            engine.dispose()
            with runtime.engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        return
    path = Path(settings.sqlite_path).with_name(f".xtopay-scratch-{uuid.uuid4().hex[:10]}.db")
    engine = make_engine(f"sqlite:///{path}")
    try:
        create_tables(engine)
        yield engine
    finally:
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.remove(f"{path}{suffix}")


def _replay(
    runtime: Runtime, engine: sa.Engine, stop: int | None, progress: Progress | None
) -> dict[str, Runner]:
    target = stop or runtime.ledger.recorder.max_notification_id() or 0
    runners = {}
    for spec in projection_specs():
        runner = Runner(runtime.ledger.recorder, engine, spec.factory(), batch_size=5000)
        report = (lambda pos, name=spec.name: progress(name, pos, target)) if progress else None
        runner.catch_up(stop=stop, progress=report)
        runners[spec.name] = runner
    return runners


def verify(runtime: Runtime, progress: Progress | None = None, limit: int = 50) -> list[Difference]:
    """Differences between the live read models and a replay of the whole log."""
    with scratch_engine(runtime) as scratch:
        runners = _replay(runtime, scratch, None, progress)
        with runtime.engine.begin() as live:
            positions = _freeze(live)
            for spec in projection_specs():
                runners[spec.name].catch_up(stop=positions.get(spec.name, 0))
            with scratch.connect() as replayed:
                found: list[Difference] = []
                for spec in projection_specs():
                    live_pos = positions.get(spec.name, 0)
                    if runners[spec.name].position() != live_pos:
                        found.append(
                            Difference(
                                "projection_tracking",
                                (spec.name,),
                                "position",
                                live_pos,
                                runners[spec.name].position(),
                            )
                        )
                    for table in spec.tables:
                        found += compare_table(live, replayed, table, limit - len(found))
                        if len(found) >= limit:
                            return found
                return found


def rebuild(runtime: Runtime, progress: Progress | None = None) -> dict[str, int]:
    """Replace the live read models with a replay of the log; answer the positions.

    The replay is built aside while the live models keep serving; the swap happens
    in one transaction at the end, so readers see the old rows until it commits."""
    with scratch_engine(runtime) as scratch:
        runners = _replay(runtime, scratch, None, progress)
        if runtime.settings.is_postgres:
            return _swap_postgres(runtime, scratch, runners)
        return _swap_sqlite(runtime, scratch, runners)


def _freeze(live: sa.Connection) -> dict[str, int]:
    """Lock every projection's tracking row (its runner waits) and read the positions."""
    names = [spec.name for spec in projection_specs()]
    return {name: locked_position(live, name) for name in names}


def _swap_postgres(
    runtime: Runtime, scratch: sa.Engine, runners: dict[str, Runner]
) -> dict[str, int]:
    scratch_schema = _schema_of(scratch)
    with runtime.engine.begin() as live:
        _freeze(live)
        head = runtime.ledger.recorder.max_notification_id() or 0
        positions = {}
        for spec in projection_specs():
            runners[spec.name].catch_up(stop=head)
            positions[spec.name] = runners[spec.name].position()
            for table in spec.tables:
                live.execute(sa.delete(table))
                live.exec_driver_sql(
                    f"INSERT INTO {table.name} SELECT * FROM {scratch_schema}.{table.name}"
                )
            _set_position(live, spec.name, positions[spec.name])
        return positions


def _swap_sqlite(
    runtime: Runtime, scratch: sa.Engine, runners: dict[str, Runner]
) -> dict[str, int]:
    path = scratch.url.database
    raw = runtime.engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        dbapi.execute(f"ATTACH DATABASE '{path}' AS scratch")
        try:
            dbapi.execute("BEGIN IMMEDIATE")  # the live runner waits from here
            head = runtime.ledger.recorder.max_notification_id() or 0
            positions = {}
            for spec in projection_specs():
                runners[spec.name].catch_up(stop=head)
                positions[spec.name] = runners[spec.name].position()
                for table in spec.tables:
                    dbapi.execute(f"DELETE FROM main.{table.name}")
                    dbapi.execute(
                        f"INSERT INTO main.{table.name} SELECT * FROM scratch.{table.name}"
                    )
                dbapi.execute(
                    "UPDATE main.projection_tracking SET position = ? WHERE name = ?",
                    (positions[spec.name], spec.name),
                )
            dbapi.execute("COMMIT")
        except BaseException:
            dbapi.execute("ROLLBACK")
            raise
        finally:
            dbapi.execute("DETACH DATABASE scratch")
    finally:
        raw.close()
    return positions


def _set_position(conn: sa.Connection, name: str, position: int) -> None:
    updated = conn.execute(
        sa.update(tracking).where(tracking.c.name == name).values(position=position)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(tracking).values(name=name, position=position))


def _schema_of(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT current_schema()").scalar()


def compare_table(
    live: sa.Connection, replayed: sa.Connection, table: sa.Table, limit: int
) -> list[Difference]:
    """Walk both copies in primary-key order side by side; report what differs."""
    keys = list(table.primary_key.columns)
    # Byte order on both sides, the order Python compares the keys in below.
    order = [
        sa.collate(k, "C")
        if live.dialect.name == "postgresql" and isinstance(k.type, sa.String)
        else k
        for k in keys
    ]
    query = sa.select(table).order_by(*order)
    left = live.execution_options(stream_results=True, yield_per=5000).execute(query).mappings()
    right = (
        replayed.execution_options(stream_results=True, yield_per=5000).execute(query).mappings()
    )
    found: list[Difference] = []
    a, b = next(left, None), next(right, None)
    while (a is not None or b is not None) and len(found) < limit:
        ka = None if a is None else tuple(a[k.name] for k in keys)
        kb = None if b is None else tuple(b[k.name] for k in keys)
        if kb is None or (ka is not None and ka < kb):
            found.append(Difference(table.name, ka, "(row)", "present", "missing"))
            a = next(left, None)
        elif ka is None or kb < ka:
            found.append(Difference(table.name, kb, "(row)", "missing", "present"))
            b = next(right, None)
        else:
            for column in table.columns:
                if a[column.name] != b[column.name]:
                    found.append(
                        Difference(table.name, ka, column.name, a[column.name], b[column.name])
                    )
            a, b = next(left, None), next(right, None)
    return found
