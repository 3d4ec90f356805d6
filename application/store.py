"""The event store: the eventsourcing library's recorders, plus an insert that skips
events already stored, so a batch with a replayed key does not roll back the rest.

Both recorders keep the library's own guarantees: the PostgreSQL one takes the same
table lock and sends the same NOTIFY as `insert_events`, so notification ids are
issued in commit order and log followers never skip an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

from application.settings import Settings


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    """PostgreSQL recorder with an insert that reports which events were new."""

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        self.insert_new_statement = SQL(
            "INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "SELECT originator_id, originator_version, topic, state "
            "FROM unnest(%s::{schema}.{type}[]) "
            "ON CONFLICT DO NOTHING RETURNING originator_id, notification_id"
        ).format(
            table=table,
            schema=Identifier(self.datastore.schema),
            type=Identifier(self.stored_event_type_name),
        )
        self.select_first_states_statement = SQL(
            "SELECT originator_id, state FROM {table} "
            "WHERE originator_id = ANY(%s) AND originator_version = 1"
        ).format(table=table)

    def insert_new_events(self, stored_events: Sequence[StoredEvent]) -> dict[UUID, int]:
        """Insert the events whose (id, version) is new; answer {id: notification id}."""
        if not stored_events:
            return {}
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._lock_table(curs)
            self._notify_channel(curs)
            curs.execute(self.insert_new_statement, (rows,), prepare=True)
            return {row["originator_id"]: row["notification_id"] for row in curs.fetchall()}

    def select_first_states(self, ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The state of each aggregate's first event, for comparing a replayed key."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_first_states_statement, (list(ids),), prepare=True)
            return {row["originator_id"]: bytes(row["state"]) for row in curs.fetchall()}


class SQLiteLedgerRecorder(SQLiteApplicationRecorder):
    """SQLite recorder with an insert that reports which events were new."""

    def insert_new_events(self, stored_events: Sequence[StoredEvent]) -> dict[UUID, int]:
        if not stored_events:
            return {}
        statement = (
            f"INSERT OR IGNORE INTO {self.events_table_name} "
            "(originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)"
        )
        inserted: dict[UUID, int] = {}
        with self.datastore.transaction(commit=True) as c:
            for e in stored_events:
                oid = e.originator_id
                c.execute(statement, (_hex(oid), e.originator_version, e.topic, e.state))
                if c.sqlite_cursor.rowcount == 1:
                    inserted[oid] = c.lastrowid  # type: ignore[index]
        return inserted

    def select_first_states(self, ids: Sequence[UUID]) -> dict[UUID, bytes]:
        found: dict[UUID, bytes] = {}
        statement = (
            f"SELECT originator_id, state FROM {self.events_table_name} "
            "WHERE originator_id = ? AND originator_version = 1"
        )
        with self.datastore.transaction(commit=False) as c:
            for oid in ids:
                c.execute(statement, (_hex(oid),))
                row = c.fetchone()
                if row is not None:
                    found[oid] = bytes(row["state"])
        return found


def _hex(oid: UUID | str) -> str:
    return oid.hex if isinstance(oid, UUID) else oid


class Ledger(Application[UUID]):
    """The append-only store of every Xtopay fact."""

    name = "Ledger"

    @property
    def ledger_recorder(self) -> PostgresLedgerRecorder | SQLiteLedgerRecorder:
        recorder = self.recorder
        assert isinstance(recorder, (PostgresLedgerRecorder, SQLiteLedgerRecorder))
        return recorder


def open_ledger(settings: Settings) -> Ledger:
    """The store for these settings; tables are created on first use."""
    return Ledger(env=settings.eventsourcing_env())
