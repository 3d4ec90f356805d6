"""Support for the budget and webhook tests: driving the pipeline without threads,
counting recorded events, and a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from workers.runtime import Runtime


def settle(rt: Runtime, now: datetime | None = None) -> None:
    """Run the pipeline to the end of the log: usage, access, the budget processor
    (whose events the access and outbox projections then apply)."""
    rt.usage.catch_up()
    rt.alerts.access_runner.catch_up()
    rt.alerts.processor.catch_up(now or datetime.now(UTC))
    for runner in (rt.usage, rt.alerts.access_runner, rt.alerts.outbox_runner):
        runner.catch_up()


def events_of(rt: Runtime, event_class: type) -> list[Any]:
    """Every recorded event of one class, in log order, as domain events."""
    topic = get_topic(event_class)
    notes = rt.ledger.recorder.select_notifications(start=0, limit=1_000_000, topics=[topic])
    return [rt.ledger.mapper.to_domain_event(n) for n in notes]


def access(rt: Runtime, tenant: UUID, customer: str, meter: str | None = None) -> list[dict]:
    """The access check's reasons (empty: allowed), through the cache the API reads."""
    rt.alerts.access.refresh()
    return asyncio.run(rt.alerts.access.reasons(tenant.hex, customer, meter))


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A loopback HTTP server recording every POST; answers `codes` in turn, then 200."""

    url: str
    requests: list[Received] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)


@contextmanager
def receiver(codes: list[int] | None = None) -> Iterator[Receiver]:
    state = Receiver(url="", codes=list(codes or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                state.requests.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
                code = state.codes.pop(0) if state.codes else 200
            self.send_response(code)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
