"""The event store: the eventsourcing library's recorders, plus an insert that skips
events already stored, so a batch with a replayed key does not roll back the rest.

Both recorders keep the library's own guarantees: the PostgreSQL one takes the same
table lock and sends the same NOTIFY as `insert_events`, so notification ids are
issued in commit order and log followers never skip an event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from application.settings import Settings

SMALL_GROUP = 64  # below this a multi-row INSERT beats COPY's extra round trips


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    """PostgreSQL recorder with an insert that reports which events were new."""

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        self.copy_statement = SQL(
            "COPY {table} (originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(table=table)
        self.select_positions_statement = SQL(
            "SELECT originator_id, originator_version, notification_id FROM {table} "
            "WHERE originator_id = ANY(%s)"
        ).format(table=table)
        self.insert_new_statement = SQL(
            "INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%s::uuid[], %s::int8[], %s::text[], %s::bytea[]) "
            "ON CONFLICT DO NOTHING RETURNING originator_id, notification_id"
        ).format(table=table)
        # The library's lock and NOTIFY, sent with BEGIN as one simple query.
        self.begin = SQL("; ").join(
            [
                SQL("BEGIN"),
                *self.lock_table_statements,
                SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
            ]
        )
        self.insert_one_statement = SQL(
            "INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING originator_id, "
            "notification_id"
        ).format(table=table)
        self.select_first_states_statement = SQL(
            "SELECT originator_id, state FROM {table} "
            "WHERE originator_id = ANY(%s) AND originator_version = 1"
        ).format(table=table)
        # Rendered once: psycopg would compose these SQL objects again on every
        # execute, which here cost more CPU than the rest of a single-event commit.
        for name in (
            "copy_statement",
            "select_positions_statement",
            "insert_new_statement",
            "begin",
            "select_first_states_statement",
            "insert_one_statement",
        ):
            setattr(self, name, getattr(self, name).as_bytes(None))

    def insert_new_events(self, stored_events: Sequence[StoredEvent]) -> dict[UUID, int]:
        """Insert the events whose (id, version) is new; answer {id: notification id}.

        Under the library's table lock no other writer can insert, so the events
        found absent are copied in with COPY (about twice as fast as a multi-row
        INSERT here) without risking a unique violation.
        """
        if not stored_events:
            return {}
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            # BEGIN with the library's lock and NOTIFY as one simple query, and COMMIT:
            # two round trips of overhead per group, where a transaction block adds four.
            conn.execute(self.begin)
            try:
                if len(stored_events) <= SMALL_GROUP:
                    inserted = self._insert_small(curs, stored_events)
                else:
                    inserted = self._copy_new(curs, stored_events)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
            return inserted

    def _insert_small(self, curs: Any, stored_events: Sequence[StoredEvent]) -> dict[UUID, int]:
        if len(stored_events) == 1:  # the usual single-event request: no arrays to build
            e = stored_events[0]
            curs.execute(
                self.insert_one_statement,
                (e.originator_id, e.originator_version, e.topic, e.state),
                prepare=True,
            )
            return dict(curs.fetchall())
        """A few events (single-event requests): a multi-row INSERT instead of COPY's
        extra round trips."""
        columns = list(
            zip(
                *((e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events),
                strict=True,
            )
        )
        curs.execute(self.insert_new_statement, [list(c) for c in columns], prepare=True)
        return dict(curs.fetchall())

    def _copy_new(self, curs: Any, stored_events: Sequence[StoredEvent]) -> dict[UUID, int]:
        ids = list({e.originator_id for e in stored_events})
        curs.execute(self.select_positions_statement, (ids,), prepare=True)
        existing = {(r[0], r[1]) for r in curs.fetchall()}
        new = [e for e in stored_events if (e.originator_id, e.originator_version) not in existing]
        if not new:
            return {}
        with curs.copy(self.copy_statement) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea"])
            for e in new:
                copy.write_row((e.originator_id, e.originator_version, e.topic, e.state))
        curs.execute(
            self.select_positions_statement, ([e.originator_id for e in new],), prepare=True
        )
        wanted = {(e.originator_id, e.originator_version) for e in new}
        return {r[0]: r[2] for r in curs.fetchall() if (r[0], r[1]) in wanted}

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
