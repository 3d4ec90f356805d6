"""Batched writes: COPY on PostgreSQL (the fastest way in), executemany elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[Any]) -> None:
    """Append rows (dicts, or tuples in column order) inside the caller's transaction."""
    if not rows:
        return
    names = [c.name for c in table.columns]
    if not isinstance(rows[0], dict):
        rows = (
            [dict(zip(names, row, strict=True)) for row in rows]
            if conn.dialect.name != "postgresql"
            else rows
        )
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(table), rows)
        return
    if not isinstance(rows[0], dict):
        _copy_tuples(conn, table, names, rows)
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cur,
        cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row([row[n] for n in names])


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    update: bool = True,
) -> None:
    """Insert rows, replacing (or, with update=False, keeping) rows with the same key."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    if update:
        changing = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
        statement = statement.on_conflict_do_update(index_elements=list(keys), set_=changing)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    for start in range(0, len(rows), 2000):
        conn.execute(statement, list(rows[start : start + 2000]))


def pg_copy_merge(
    conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], on_conflict: str
) -> None:
    """PostgreSQL: COPY rows into a scratch table, then merge them in with one
    INSERT ... SELECT ... ON CONFLICT, so a batch costs two statements."""
    if not rows:
        return
    names = [c.name for c in table.columns]
    stage = f"stage_{table.name}"
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY {stage} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[n] for n in names])
        cur.execute(
            f"INSERT INTO {table.name} AS t ({', '.join(names)}) "
            f"SELECT {', '.join(names)} FROM {stage} {on_conflict}"
        )
        cur.execute(f"DELETE FROM {stage}")


def _copy_tuples(
    conn: sa.Connection, table: sa.Table, names: list[str], rows: Sequence[Any]
) -> None:
    """Binary COPY: PostgreSQL skips parsing text, the cheapest way rows get in."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cur,
        cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types([_pg_type(c) for c in table.columns])
        for row in rows:
            copy.write_row(row)


def _pg_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.types.TypeDecorator):
        return "numeric"
    return "text"
