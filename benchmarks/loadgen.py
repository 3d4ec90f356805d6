"""A small asyncio HTTP/1.1 load generator for the ingestion benchmark.

Requests are encoded in full (request line, headers and body) before a phase starts,
so a send is one socket write and a reply is one header scan plus one read of
`content-length` bytes: a few tens of microseconds of client CPU per request, which
matters on a two-core machine where the client, the server and PostgreSQL share the
cores. The server always answers with `content-length` (no chunked encoding); any
other reply shape is reported as an error rather than guessed at.

Three drivers:
- `run_batches`: closed loop, each connection sends its next request when the
  previous reply arrives; used for the batch endpoint.
- `run_open_loop`: a fixed offered rate (the wrk2 method). Request i is due at
  t0 + i/rate whether or not earlier ones have been answered; its latency is
  measured from that due time, so a stall delays (and is charged to) every request
  scheduled during it instead of silently lowering the send rate (coordinated
  omission).
- `run_closed_loop`: as fast as the connections allow, for a fixed time.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REPLY_TIMEOUT = 60.0


def encode_request(method: str, path: str, port: int, secret: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 keep-alive request to 127.0.0.1."""
    head = (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class ReplyError(Exception):
    """A reply this client does not understand (no content-length, bad status line)."""


class Connection:
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send a pre-encoded request; answer (status, body)."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise ReplyError(f"bad status line: {head[:40]!r}")
        status = int(head[9:12])
        start = head.lower().find(b"\r\ncontent-length:")
        if start < 0:
            raise ReplyError("reply without content-length")
        end = head.index(b"\r\n", start + 2)
        body = await self.reader.readexactly(int(head[start + 17 : end]))
        return status, body

    def close(self) -> None:
        self.writer.close()


async def open_connections(port: int, count: int) -> list[Connection]:
    return list(await asyncio.gather(*(Connection.open(port) for _ in range(count))))


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.4999))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class PhaseResult:
    """What a driver observed: successes, failures, timings (seconds)."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    unsent: int = 0
    replies: list[bytes] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message[:300])

    def latency_ms(self) -> dict[str, float]:
        values = sorted(self.latencies)
        return {
            "p50": 1000 * percentile(values, 0.50),
            "p90": 1000 * percentile(values, 0.90),
            "p99": 1000 * percentile(values, 0.99),
            "p999": 1000 * percentile(values, 0.999),
            "max": 1000 * (values[-1] if values else 0.0),
        }


Check = Callable[[int, bytes], str | None]


async def _send(conn: Connection, raw: bytes, check: Check, result: PhaseResult) -> bytes | None:
    """One request; answers the reply body, or None (failure recorded) when it failed."""
    result.sent += 1
    try:
        status, body = await asyncio.wait_for(conn.request(raw), REPLY_TIMEOUT)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ReplyError) as error:
        result.fail(f"{type(error).__name__}: {error}")
        return None
    problem = check(status, body)
    if problem is not None:
        result.fail(problem)
        return None
    result.ok += 1
    return body


class _NoGC:
    """Keep the collector from pausing the client mid-measurement."""

    def __enter__(self) -> None:
        gc.collect()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable()


async def run_batches(
    port: int, requests: Sequence[bytes], clients: int, check: Check, deadline: float
) -> PhaseResult:
    """Send every request once over `clients` connections, closed loop. Replies are
    kept (the caller counts accepted events); `deadline` bounds the whole phase."""
    result = PhaseResult()
    conns = await open_connections(port, clients)
    pending = iter(range(len(requests)))
    replies: list[bytes | None] = [None] * len(requests)

    async def client(conn: Connection) -> None:
        for index in pending:
            sent_at = time.perf_counter()
            if sent_at > stop_at:
                result.unsent += 1
                continue
            reply = await _send(conn, requests[index], check, result)
            if reply is not None:
                result.latencies.append(time.perf_counter() - sent_at)
                replies[index] = reply
            else:  # the connection may be unusable now
                conn.close()
                conn = await Connection.open(port)
        conn.close()

    with _NoGC():
        started = time.perf_counter()
        stop_at = started + deadline
        await asyncio.gather(*(client(c) for c in conns))
        result.elapsed = time.perf_counter() - started
    result.replies = [r for r in replies if r is not None]
    return result


async def run_open_loop(
    port: int,
    requests: Sequence[bytes],
    rate: float,
    seconds: float,
    connections: int,
    check: Check,
) -> PhaseResult:
    """Offer `rate` requests/s for `seconds` over `connections` connections; latency is
    measured from each request's scheduled send time."""
    total = min(len(requests), int(rate * seconds))
    result = PhaseResult()
    conns = await open_connections(port, connections)
    next_index = 0
    last_done = 0.0

    async def worker(conn: Connection) -> None:
        nonlocal next_index, last_done
        while next_index < total:
            index = next_index
            next_index += 1
            due = t0 + index / rate
            if due > stop_at:  # the schedule has slipped past the phase bound
                result.unsent += total - index
                next_index = total
                return
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if await _send(conn, requests[index], check, result) is not None:
                last_done = time.perf_counter()
                result.latencies.append(last_done - due)
            else:
                conn.close()
                conn = await Connection.open(port)
        conn.close()

    with _NoGC():
        t0 = time.perf_counter() + 0.01
        stop_at = t0 + seconds + 30.0
        await asyncio.gather(*(worker(c) for c in conns))
        result.elapsed = max(last_done - t0, 1e-9)
    return result


async def run_closed_loop(
    port: int, requests: Sequence[bytes], seconds: float, connections: int, check: Check
) -> PhaseResult:
    """Each connection sends its next request as soon as the previous is answered."""
    result = PhaseResult()
    conns = await open_connections(port, connections)
    pending = iter(requests)

    async def worker(conn: Connection) -> None:
        for raw in pending:
            sent_at = time.perf_counter()
            if sent_at >= stop_at:
                break
            if await _send(conn, raw, check, result) is not None:
                result.latencies.append(time.perf_counter() - sent_at)
            else:
                conn.close()
                conn = await Connection.open(port)
        conn.close()

    with _NoGC():
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(worker(c) for c in conns))
        result.elapsed = time.perf_counter() - started
    return result
