"""Dump read-model tables in a canonical order and diff two dumps (rebuild checks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Difference:
    """One row that differs between two copies of a read model."""

    table: str
    key: tuple[Any, ...]
    column: str
    live: Any
    replayed: Any

    def __str__(self) -> str:
        return (
            f"{self.table} {self.key}: {self.column} live={self.live!r} replayed={self.replayed!r}"
        )


def dump(conn: sa.Connection, tables: Iterable[sa.Table]) -> dict[str, dict[tuple, dict]]:
    """Every row of every table, keyed by primary key."""
    result: dict[str, dict[tuple, dict]] = {}
    for table in tables:
        keys = [c.name for c in table.primary_key.columns]
        rows = conn.execute(sa.select(table)).mappings()
        result[table.name] = {tuple(r[k] for k in keys): dict(r) for r in rows}
    return result


def diff(
    live: dict[str, dict[tuple, dict]], replayed: dict[str, dict[tuple, dict]], limit: int = 50
) -> list[Difference]:
    """Rows missing on one side or with a different value; values compare as numbers
    where they are numbers, so 3.0 and 3 are the same amount."""
    found: list[Difference] = []
    for table in sorted(set(live) | set(replayed)):
        a, b = live.get(table, {}), replayed.get(table, {})
        for key in sorted(set(a) | set(b), key=repr):
            if key not in a or key not in b:
                found.append(Difference(table, key, "(row)", key in a, key in b))
            else:
                for column, value in a[key].items():
                    if value != b[key].get(column):
                        found.append(Difference(table, key, column, value, b[key].get(column)))
            if len(found) >= limit:
                return found
    return found
