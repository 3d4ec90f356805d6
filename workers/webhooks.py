"""Webhook delivery: a dispatcher hands due messages to a dramatiq broker, and the
`deliver_webhook` actor signs and POSTs them, recording every attempt.

- The outbox projection inserts each message with a `pending` delivery row, so a
  message reaches the broker only after the event behind it committed.
- The dispatcher claims due rows (a lease: `next_attempt_us` moves a minute ahead)
  before enqueueing their ids, so two dispatchers never both enqueue a row, and a
  message lost by the broker or by a crashed worker is enqueued again when the lease
  runs out. When the broker is unreachable the claims are handed back and retried:
  ingestion and queries never touch the broker.
- The actor takes a message id and is idempotent: it does nothing unless the row is
  still pending, and claims the attempt by its number, so a message enqueued twice
  is sent once per attempt. A failed attempt is retried after base x 2^(n-1) seconds
  (XTOPAY_WEBHOOK_RETRY_BASE_SECONDS) with the same `webhook-id`; an endpoint whose
  attempts have all failed for three days is disabled (a recorded event).
- Broker: dramatiq's RedisBroker when XTOPAY_REDIS_URL is set, else its StubBroker
  (an in-process queue); in both cases a dramatiq Worker runs the same actor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import dramatiq
import httpx
import redis
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.dialects import postgresql, sqlite

from application.settings import Settings
from application.webhooks import Webhooks
from domain.errors import NotFound
from domain.instants import from_us, to_us
from domain.webhooks import FAILING_LIMIT, retry_delay, signed_headers
from projections.outbox import (
    PENDING,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoint_health,
    webhook_messages,
)

log = logging.getLogger(__name__)

QUEUE = "webhooks"
LEASE = timedelta(seconds=60)
HTTP_TIMEOUT = 10.0
DELIVERED, FAILED, CANCELLED = "delivered", "failed", "cancelled"
USER_AGENT = "Xtopay-Webhooks/1"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def micros(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


class Deliverer:
    """Sends one message (one attempt) and records what happened."""

    def __init__(
        self,
        engine: sa.Engine,
        read_engine: sa.Engine,
        webhooks: Webhooks,
        base_seconds: float,
        clock: Clock = utc_now,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.read_engine = read_engine
        self.webhooks = webhooks
        self.base_seconds = base_seconds
        self.clock = clock
        self.transport = transport
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                timeout=HTTP_TIMEOUT,
                follow_redirects=False,
                transport=self.transport,
                headers={"user-agent": USER_AGENT},
            )
        return client

    def deliver(self, message_id: str) -> str:
        """Attempt the message once if it is still pending; answer its status."""
        now = self.clock()
        with self.read_engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    webhook_messages.c.payload,
                    webhook_messages.c.endpoint_id,
                    webhook_deliveries.c.status,
                    webhook_deliveries.c.attempts,
                    webhook_deliveries.c.first_attempt_us,
                )
                .join(
                    webhook_deliveries,
                    webhook_deliveries.c.message_id == webhook_messages.c.message_id,
                )
                .where(webhook_messages.c.message_id == message_id)
            ).first()
        if row is None:
            return "missing"
        if row.status != PENDING:
            return row.status
        try:
            endpoint = self.webhooks.endpoint(UUID(row.endpoint_id))
        except NotFound:
            endpoint = None
        if endpoint is None or endpoint.disabled:
            self._cancel(webhook_deliveries.c.message_id == message_id)
            return CANCELLED
        attempt = row.attempts + 1
        if not self._claim(message_id, row.attempts, now):
            return PENDING  # another worker holds this attempt
        body = row.payload.encode()
        headers = signed_headers(endpoint.secret, message_id, int(now.timestamp()), body)
        headers["content-type"] = "application/json"
        started = time.perf_counter()
        try:
            # only the status matters: the reply's body is never read
            with self._client().stream(
                "POST", endpoint.url, content=body, headers=headers
            ) as reply:
                code: int | None = reply.status_code
            error = None if 200 <= reply.status_code < 300 else f"HTTP {reply.status_code}"
        except httpx.HTTPError as failure:
            code, error = None, f"{type(failure).__name__}: {failure}".rstrip(": ")
        duration_ms = int((time.perf_counter() - started) * 1000)
        done = self.clock()
        status, failing_since = self._record(
            message_id, row.endpoint_id, attempt, now, done, code, error, duration_ms,
            row.first_attempt_us,
        )  # fmt: skip
        if failing_since is not None and done - failing_since >= FAILING_LIMIT:
            self._disable(row.endpoint_id, failing_since)
            return CANCELLED
        return status

    def _claim(self, message_id: str, seen: int, now: datetime) -> bool:
        t = webhook_deliveries
        with self.engine.begin() as conn:
            claimed = conn.execute(
                sa.update(t)
                .where(t.c.message_id == message_id, t.c.status == PENDING, t.c.attempts == seen)
                .values(attempts=seen + 1, next_attempt_us=to_us(now + LEASE))
            )
            return claimed.rowcount == 1

    def _record(
        self,
        message_id: str,
        endpoint_id: str,
        attempt: int,
        started: datetime,
        done: datetime,
        code: int | None,
        error: str | None,
        duration_ms: int,
        first_attempt_us: int | None,
    ) -> tuple[str, datetime | None]:
        """Write the attempt, the delivery's new state and the endpoint's health in one
        transaction; answer the status and, on failure, since when the endpoint fails."""
        first_us = first_attempt_us or to_us(started)
        next_us: int | None = None
        if error is None:
            status = DELIVERED
        elif to_us(done) - first_us >= micros(FAILING_LIMIT):
            status = FAILED  # given up: undelivered three days after the first attempt
        else:
            status = PENDING
            next_us = to_us(done + retry_delay(self.base_seconds, attempt))
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(webhook_attempts).values(
                    message_id=message_id,
                    attempt=attempt,
                    attempted_us=to_us(started),
                    status_code=code,
                    error=error,
                    duration_ms=duration_ms,
                    next_retry_us=next_us,
                )
            )
            conn.execute(
                sa.update(webhook_deliveries)
                .where(webhook_deliveries.c.message_id == message_id)
                .values(
                    status=status,
                    next_attempt_us=next_us,
                    first_attempt_us=first_us,
                    last_attempt_us=to_us(started),
                    last_status_code=code,
                    last_error=error,
                    delivered_us=to_us(done) if status == DELIVERED else None,
                )
            )
            failing = conn.execute(
                _health_upsert(conn, endpoint_id, error is None, started, done)
            ).scalar()
        return status, None if failing is None else from_us(failing)

    def _disable(self, endpoint_id: str, failing_since: datetime) -> None:
        days = FAILING_LIMIT.days
        self.webhooks.disable_endpoint(
            UUID(endpoint_id),
            reason=f"every delivery attempt failed for {days} days",
            failing_since=failing_since,
        )
        self._cancel(webhook_deliveries.c.endpoint_id == endpoint_id)
        log.warning("webhook endpoint we_%s disabled after %d days of failures", endpoint_id, days)

    def _cancel(self, where: sa.ColumnElement[bool]) -> None:
        t = webhook_deliveries
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(where, t.c.status == PENDING)
                .values(status=CANCELLED, next_attempt_us=None)
            )


def _health_upsert(
    conn: sa.Connection, endpoint_id: str, ok: bool, started: datetime, done: datetime
) -> Any:
    """Record a success (the endpoint is healthy again) or a failure (failing since the
    first failure after the last success), in one statement: deliveries to the same
    endpoint run concurrently. Returns `failing_since_us`."""
    h = webhook_endpoint_health
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    if ok:
        statement = insert(h).values(
            endpoint_id=endpoint_id, failing_since_us=None, last_success_us=to_us(done)
        )
        changes = {"failing_since_us": None, "last_success_us": statement.excluded.last_success_us}
    else:
        statement = insert(h).values(
            endpoint_id=endpoint_id, failing_since_us=to_us(started), last_failure_us=to_us(done)
        )
        changes = {
            "failing_since_us": sa.func.coalesce(
                h.c.failing_since_us, statement.excluded.failing_since_us
            ),
            "last_failure_us": statement.excluded.last_failure_us,
        }
    return statement.on_conflict_do_update(index_elements=["endpoint_id"], set_=changes).returning(
        h.c.failing_since_us
    )


class BrokerUnavailable(Exception):
    """The broker refused a message; the dispatcher hands its claims back."""


class Dispatcher:
    """Enqueues due deliveries on the broker, after claiming them."""

    def __init__(
        self,
        engine: sa.Engine,
        read_engine: sa.Engine,
        send: Callable[[str], object],
        clock: Clock = utc_now,
        batch_size: int = 100,
    ) -> None:
        self.engine = engine
        self.read_engine = read_engine
        self.send = send
        self.clock = clock
        self.batch_size = batch_size

    def due(self, now_us: int) -> list[str]:
        t = webhook_deliveries
        with self.read_engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t.c.message_id)
                    .where(t.c.status == PENDING, t.c.next_attempt_us <= now_us)
                    .order_by(t.c.next_attempt_us)
                    .limit(self.batch_size)
                ).scalars()
            )

    def run_once(self) -> int:
        """Enqueue the deliveries due now; answer how many."""
        now_us = to_us(self.clock())
        ids = self.due(now_us)
        if not ids:
            return 0
        t = webhook_deliveries
        with self.engine.begin() as conn:
            claimed = list(
                conn.execute(
                    sa.update(t)
                    .where(
                        t.c.message_id.in_(ids),
                        t.c.status == PENDING,
                        t.c.next_attempt_us <= now_us,
                    )
                    .values(next_attempt_us=now_us + micros(LEASE))
                    .returning(t.c.message_id)
                ).scalars()
            )
        for index, message_id in enumerate(claimed):
            try:
                self.send(message_id)
            except Exception as error:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.update(t)
                        .where(t.c.message_id.in_(claimed[index:]), t.c.status == PENDING)
                        .values(next_attempt_us=now_us)
                    )
                raise BrokerUnavailable(str(error)) from error
        return len(claimed)

    def run_forever(self, stop: threading.Event, idle_seconds: float = 0.1) -> None:
        backoff = 0.0
        while not stop.is_set():
            try:
                if self.run_once() == 0:
                    stop.wait(idle_seconds)
                if backoff:
                    log.warning("webhook broker reachable again; dispatching")
                backoff = 0.0
            except Exception as error:
                if not backoff:
                    log.warning("webhook dispatch failing (%s); messages stay pending", error)
                backoff = min(max(backoff * 2, 0.5), 5.0)
                stop.wait(backoff)


def make_broker(settings: Settings) -> dramatiq.Broker:
    """Redis in production; dramatiq's in-process StubBroker in the embedded mode."""
    if settings.redis_url:
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=10
        )
        return RedisBroker(client=client, namespace=f"{settings.redis_namespace}:dramatiq")
    return StubBroker()


class DeliveryWorkers:
    """The broker, the actor bound to it, a dramatiq Worker running it, and the
    dispatcher feeding it. Built when the workers start, never at import time."""

    def __init__(
        self,
        settings: Settings,
        deliverer: Deliverer,
        engine: sa.Engine,
        read_engine: sa.Engine,
        worker_threads: int = 4,
    ) -> None:
        self.broker = make_broker(settings)

        def deliver_webhook(message_id: str) -> None:
            deliverer.deliver(message_id)

        self.actor = dramatiq.actor(
            deliver_webhook,
            broker=self.broker,
            actor_name="deliver_webhook",
            queue_name=QUEUE,
            max_retries=0,  # retries are ours: persistent, visible, same webhook-id
            time_limit=int(LEASE.total_seconds() * 1000),
        )
        self.worker = dramatiq.Worker(
            self.broker, worker_threads=worker_threads, worker_timeout=100
        )
        self.dispatcher = Dispatcher(engine, read_engine, self.actor.send, deliverer.clock)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        self.worker.start()
        thread = threading.Thread(
            target=self.dispatcher.run_forever, args=(stop,), daemon=True, name="webhook-dispatch"
        )
        thread.start()
        return [thread]

    def close(self) -> None:
        try:
            self.worker.stop(timeout=5000)
        finally:
            self.broker.close()
