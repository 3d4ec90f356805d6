"""Usage ingestion: validate, encode, and commit many events per transaction.

The lean write path builds the exact stored form the library's mapper would make
for `UsageEvent.Recorded` (a unit test holds the two equal) without building an
aggregate per event, and a group-commit writer lets concurrent requests share one
transaction. A reply is sent only after its transaction has committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from application.catalog import Catalog
from application.store import Ledger
from domain.errors import Conflict, DomainError, InvalidInput
from domain.usage import UsageEvent, UsageInput, check_usage, usage_id_for

RECORDED_TOPIC = get_topic(UsageEvent.Recorded)
AGGREGATE_TOPIC = get_topic(UsageEvent)
MAX_GROUP_EVENTS = 10_000


def _tag(value: Any) -> Any:
    """The library JSONTranscoder's form of a value (Decimals and datetimes tagged)."""
    if isinstance(value, Decimal):
        return {"_type_": "decimal_str", "_data_": str(value)}
    if isinstance(value, datetime):
        return {"_type_": "datetime_iso", "_data_": value.isoformat()}
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    return value


def _tag_flat(values: dict[str, Any]) -> dict[str, Any]:
    """`_tag` for the common case of flat properties with no Decimal in them."""
    for v in values.values():
        if type(v) not in (str, int, bool):
            return _tag(values)
    return values


def encode_recorded(
    tenant_id: UUID,
    usage: UsageInput,
    recorded_at: datetime,
    *,
    _recorded: str = "",
    _tenant: str = "",
) -> StoredEvent:
    """The stored `UsageEvent.Recorded` event, byte for byte what the mapper would write."""
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": _recorded or recorded_at.isoformat()},
        "originator_topic": AGGREGATE_TOPIC,
        "tenant_id": _tenant or tenant_id.hex,
        "idempotency_key": usage.idempotency_key,
        "customer": usage.customer,
        "event_type": usage.event_type,
        "meter": usage.meter,
        "value": {"_type_": "decimal_str", "_data_": str(usage.value)},
        "occurred_at": {"_type_": "datetime_iso", "_data_": usage.occurred_at.isoformat()},
        "properties": _tag_flat(usage.properties),
        "metadata": None if usage.metadata is None else _tag(usage.metadata),
        "payload_hash": usage.payload_hash,
    }
    return StoredEvent(
        originator_id=usage_id_for(tenant_id, usage.idempotency_key),
        originator_version=1,
        topic=RECORDED_TOPIC,
        state=msgspec.json.encode(state),
    )


class UsageWriter:
    """Group commit: submissions waiting together are inserted in one transaction."""

    def __init__(self, ledger: Ledger) -> None:
        self.recorder = ledger.ledger_recorder
        self._queue: queue.SimpleQueue[tuple[list[StoredEvent], concurrent.futures.Future]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def submit(self, events: list[StoredEvent]) -> concurrent.futures.Future[dict[UUID, int]]:
        """Queue events; the future answers {id: notification id} for those newly stored."""
        future: concurrent.futures.Future[dict[UUID, int]] = concurrent.futures.Future()
        self._queue.put((events, future))
        return future

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            size = len(group[0][0])
            while size < MAX_GROUP_EVENTS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                group.append(item)
                size += len(item[0])
            self._commit(group)

    def _commit(self, group: list[tuple[list[StoredEvent], concurrent.futures.Future]]) -> None:
        owner: dict[UUID, int] = {}
        unique: list[StoredEvent] = []
        for number, (events, _) in enumerate(group):
            for e in events:
                if e.originator_id not in owner:
                    owner[e.originator_id] = number  # type: ignore[index]
                    unique.append(e)
        try:
            inserted = self.recorder.insert_new_events(unique)
        except Exception as error:  # every waiting request learns of the failure
            for _, future in group:
                future.set_exception(error)
            return
        for number, (events, future) in enumerate(group):
            mine = {
                e.originator_id: inserted[e.originator_id]
                for e in events
                if owner[e.originator_id] == number and e.originator_id in inserted  # type: ignore[index]
            }
            future.set_result(mine)  # type: ignore[arg-type]


@dataclass
class Outcome:
    """What happened to one submitted usage event."""

    index: int
    status: str  # accepted | duplicate | rejected
    usage: UsageInput | None = None
    event_id: UUID | None = None
    created_at: datetime | None = None
    position: int | None = None
    error: DomainError | None = None
    prefix: str = ""


class Ingestor:
    """Records usage events: one or many, deduplicated by the store itself."""

    def __init__(self, ledger: Ledger, catalog: Catalog) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.writer = UsageWriter(ledger)

    def prepare(
        self, tenant_id: UUID, items: list[tuple[int, dict[str, Any]]], now: datetime, prefix: str
    ) -> list[Outcome]:
        """Validate each event against the contract and the tenant's meters."""
        specs, by_type = self.catalog.meters(tenant_id)
        outcomes = []
        for index, item in items:
            where = prefix.format(index=index)
            try:
                assigned = "" if item.get("idempotency_key") else f"auto_{uuid.uuid4().hex}"
                usage = check_usage(**item, now=now, assigned_key=assigned, prefix=where)
                self._check_meters(usage, specs, by_type, where)
                outcomes.append(Outcome(index=index, status="accepted", usage=usage, prefix=where))
            except DomainError as error:
                outcomes.append(Outcome(index=index, status="rejected", error=error))
        return outcomes

    @staticmethod
    def _check_meters(
        usage: UsageInput, specs: dict, by_type: dict[str, list[str]], where: str
    ) -> None:
        if usage.meter is not None:
            spec = specs.get(usage.meter)
            if spec is None:
                raise InvalidInput(f"no meter {usage.meter!r}", where + "meter_id")
            spec.check_event(usage.properties, where)
            return
        for key in by_type.get(usage.event_type or "", []):
            spec = specs[key]
            if spec.matches(usage.event_type, usage.properties):
                spec.check_event(usage.properties, where)

    async def record(self, tenant_id: UUID, outcomes: list[Outcome], now: datetime) -> None:
        """Store the accepted outcomes; mark replays duplicate or conflicting."""
        events: list[StoredEvent] = []
        first_of: dict[UUID, Outcome] = {}
        recorded, tenant_hex = now.isoformat(), tenant_id.hex  # the same for every event
        for outcome in outcomes:
            if outcome.usage is None:
                continue
            stored = encode_recorded(
                tenant_id, outcome.usage, now, _recorded=recorded, _tenant=tenant_hex
            )
            outcome.event_id = stored.originator_id  # type: ignore[assignment]
            outcome.created_at = now
            earlier = first_of.get(outcome.event_id)  # type: ignore[arg-type]
            if earlier is not None:  # the same key twice in one request
                assert earlier.usage is not None
                _compare(
                    outcome,
                    earlier.usage.payload_hash,
                    earlier.created_at,
                    earlier.usage.occurred_at,
                )
                continue
            first_of[outcome.event_id] = outcome  # type: ignore[index]
            events.append(stored)
        if not events:
            return
        inserted = await asyncio.wrap_future(self.writer.submit(events))
        replayed = [oid for oid in first_of if oid not in inserted]
        originals = self.ledger.ledger_recorder.select_first_states(replayed) if replayed else {}
        for oid, outcome in first_of.items():
            if oid in inserted:
                outcome.position = inserted[oid]
                continue
            state = msgspec.json.decode(originals[oid])
            _compare(
                outcome,
                state["payload_hash"],
                datetime.fromisoformat(state["timestamp"]["_data_"]),
                datetime.fromisoformat(state["occurred_at"]["_data_"]),
            )


def _compare(
    outcome: Outcome, original_hash: str, created: datetime | None, occurred: datetime | None
) -> None:
    """A replayed key: the same payload is a duplicate of the original, another is a 409."""
    usage = outcome.usage
    assert usage is not None
    if usage.payload_hash == original_hash:
        outcome.status = "duplicate"
        outcome.created_at = created
        if occurred is not None:  # a defaulted timestamp answers the original's
            outcome.usage = replace(usage, occurred_at=occurred)
    else:
        outcome.status = "rejected"
        outcome.error = Conflict(
            f"idempotency_key {usage.idempotency_key!r} was already used with a different payload",
            outcome.prefix + "idempotency_key",
        )
