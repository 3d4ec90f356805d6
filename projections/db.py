"""Database engines for the read models, in the same database as the event store."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def make_engine(url: str, schema: str | None = None, *, writer: bool = True) -> sa.Engine:
    """An engine for read models. On SQLite a writer takes the write lock at BEGIN,
    so a batch never fails half-way on a lock upgrade; readers never block."""
    if url.startswith("postgresql"):
        options = f"-csearch_path={schema}" if schema else ""
        return sa.create_engine(
            url,
            pool_size=8,
            max_overflow=8,
            pool_pre_ping=True,
            connect_args={"options": options, "connect_timeout": 5},
        )
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None  # BEGIN is issued below
        dbapi_conn.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine
