"""Ingestion benchmark: Xtopay's HTTP write path against PostgreSQL's raw COPY ceiling.

    .venv/bin/python benchmarks/ingest.py [--runs 3] [--workers 2] [--clients 4]
                                          [--events 200000] [--profile]

Each run starts `xtopay serve --no-workers` on a fresh PostgreSQL schema and measures
  (a) batch ingestion over HTTP, events/s, checked against the rows in the store;
  (b) the raw ceiling: a binary COPY of as many equivalent rows into a keyed table;
  (c) a / b;
  (d) single-event requests at a fixed offered rate (latency from the scheduled send
      time) and the closed-loop maximum;
  (e) the usage projection catching up on what (a) stored.
Medians and per-run values are printed and written to benchmarks/results/. See
benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import struct
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    REPO,
    CpuMeter,
    Profiler,
    Server,
    check_local,
    py_spy,
    scratch_schema,
    server_version,
    summarize_profile,
    wait_for_quiet,
)
from loadgen import (
    PhaseResult,
    encode_request,
    run_batches,
    run_closed_loop,
    run_open_loop,
)

ADMIN_URL = os.environ.get("XTOPAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZE = 1000
EVENT_TYPE = "llm.completion"
METER = {
    "key": "tokens",
    "name": "LLM tokens",
    "event_type": EVENT_TYPE,
    "aggregation": "SUM",
    "value_property": "tokens",
    "group_by": ["model"],
}
CUSTOMERS = [f"cus_{n:03d}" for n in range(100)]
MODELS = ("gpt-x", "gpt-x-mini", "claude-y", "llama-z")
REGIONS = ("eu", "us", "ap")
TARGETS = {"a_events_per_s": 25_000, "c_ratio": 0.25, "d_p99_ms": 10.0}


# Workload


def make_events(prefix: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Distinct usage events (unique idempotency keys) from the last day."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events = []
    for n in range(count):
        occurred = now - timedelta(seconds=rng.uniform(60, 86_000))
        events.append(
            {
                "idempotency_key": f"{prefix}-{n:08d}",
                "event_type": EVENT_TYPE,
                "customer": rng.choice(CUSTOMERS),
                "timestamp": occurred.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "properties": {
                    "tokens": rng.randint(1, 8000),
                    "model": rng.choice(MODELS),
                    "region": rng.choice(REGIONS),
                },
            }
        )
    return events


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def batch_requests(events: list[dict[str, Any]], port: int, secret: str) -> list[bytes]:
    return [
        encode_request(
            "POST",
            "/v1/usage-events/batch",
            port,
            secret,
            dumps({"events": events[i : i + BATCH_SIZE]}),
        )
        for i in range(0, len(events), BATCH_SIZE)
    ]


def single_requests(events: list[dict[str, Any]], port: int, secret: str) -> list[bytes]:
    return [encode_request("POST", "/v1/usage-events", port, secret, dumps(e)) for e in events]


def check_batch(status: int, body: bytes) -> str | None:
    return None if status == 200 else f"HTTP {status}: {body[:200]!r}"


def check_single(status: int, body: bytes) -> str | None:
    if status == 200 and b'"status":"accepted"' in body:
        return None
    return f"HTTP {status}: {body[:200]!r}"


def accepted_in(result: PhaseResult) -> int:
    """Events the server acknowledged as accepted across a batch phase's replies."""
    total = 0
    for reply in result.replies:
        counts = json.loads(reply)
        total += counts["accepted"]
        if counts["rejected"] or counts["duplicates"]:
            result.fail(f"{counts['rejected']} rejected, {counts['duplicates']} duplicates")
    return total


# Phases


def measured(meter: CpuMeter, action: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run `action`, answering its result and the CPU each party used meanwhile."""
    before = meter.snapshot()
    outcome = action()
    return outcome, CpuMeter.usage(before, meter.snapshot())


def recorded_rows(schema: str) -> tuple[int, float]:
    """`UsageEvent.Recorded` rows in the event store, and their mean stored size."""
    query = sql.SQL(
        "SELECT count(*), coalesce(avg(length(state)), 0) FROM {}.ledger_events WHERE topic LIKE %s"
    ).format(sql.Identifier(schema))
    with psycopg.connect(ADMIN_URL, connect_timeout=5) as conn:
        row = conn.execute(query, ("%UsageEvent.Recorded",)).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def phase_batch(args: argparse.Namespace, server: Server, run: int, profile: Path | None) -> dict:
    """(a) Concurrent clients POST /v1/usage-events/batch, 1000 events per request."""
    assert server.secret is not None
    warm_events = make_events(f"warm-{run}", 2 * BATCH_SIZE * args.clients, seed=run)
    events = make_events(f"batch-{run}", args.events, seed=1000 + run)
    warm = batch_requests(warm_events, server.port, server.secret)
    bodies = batch_requests(events, server.port, server.secret)
    warmup = asyncio.run(run_batches(server.port, warm, args.clients, check_batch, 120))
    warm_accepted = accepted_in(warmup)
    meter = CpuMeter(server)
    with Profiler(server, profile) if profile else _nothing():
        result, cpu = measured(
            meter,
            lambda: asyncio.run(
                run_batches(server.port, bodies, args.clients, check_batch, args.batch_deadline)
            ),
        )
    accepted = accepted_in(result)
    latency = result.latency_ms()
    return {
        "events_offered": len(events),
        "accepted": accepted,
        "warmup_accepted": warm_accepted,
        "seconds": round(result.elapsed, 3),
        "events_per_s": round(accepted / result.elapsed, 1),
        "request_ms": {"p50": round(latency["p50"], 1), "max": round(latency["max"], 1)},
        "errors": result.errors + warmup.errors,
        "error_samples": result.error_samples + warmup.error_samples,
        "unsent_requests": result.unsent,
        "request_body_bytes": round(sum(map(len, bodies)) / len(bodies)),
        "cpu": cpu,
        "events": events,  # kept for (b); removed before the report is written
    }


def copy_rows(events: list[dict[str, Any]]) -> list[bytes]:
    """The same events as binary COPY data, encoded up front: (id, customer, payload),
    the payload shaped like the stored `UsageEvent.Recorded` state."""
    tenant = uuid.uuid4().hex
    recorded_at = datetime.now(UTC).isoformat()
    chunks, rows = [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)], []
    for e in events:
        payload = dumps(
            {
                "timestamp": {"_type_": "datetime_iso", "_data_": recorded_at},
                "originator_topic": "domain.usage:UsageEvent",
                "tenant_id": tenant,
                "idempotency_key": e["idempotency_key"],
                "customer": e["customer"],
                "event_type": e["event_type"],
                "meter": None,
                "value": {"_type_": "decimal_str", "_data_": "1"},
                "occurred_at": {"_type_": "datetime_iso", "_data_": e["timestamp"]},
                "properties": e["properties"],
                "metadata": None,
                "payload_hash": uuid.uuid4().hex * 2,
            }
        )
        customer = e["customer"].encode()
        key = uuid.uuid5(uuid.NAMESPACE_URL, tenant + e["idempotency_key"]).bytes
        rows.append(
            struct.pack("!hi", 3, 16)
            + key
            + struct.pack("!i", len(customer))
            + customer
            + struct.pack("!i", len(payload))
            + payload
        )
        if len(rows) == 2000:
            chunks.append(b"".join(rows))
            rows = []
    chunks.append(b"".join(rows) + struct.pack("!h", -1))
    return chunks


def phase_copy(schema: str, events: list[dict[str, Any]], meter: CpuMeter) -> dict:
    """(b) COPY the same number of equivalent rows into a table keyed by the id."""
    chunks = copy_rows(events)
    table = sql.Identifier(schema, "copy_ceiling")
    with psycopg.connect(ADMIN_URL, connect_timeout=5) as conn:
        conn.execute("SET statement_timeout = '300s'")
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id uuid PRIMARY KEY, customer text NOT NULL, "
                "payload bytea NOT NULL)"
            ).format(table)
        )
        conn.commit()

        def copy() -> float:
            started = time.perf_counter()
            with (
                conn.cursor() as cursor,
                cursor.copy(
                    sql.SQL("COPY {} (id, customer, payload) FROM STDIN (FORMAT BINARY)").format(
                        table
                    )
                ) as stream,
            ):
                for chunk in chunks:
                    stream.write(chunk)
            conn.commit()
            return time.perf_counter() - started

        elapsed, cpu = measured(meter, copy)
        row = conn.execute(
            sql.SQL("SELECT count(*), avg(length(payload)) FROM {}").format(table)
        ).fetchone()
    assert row is not None
    return {
        "rows": int(row[0]),
        "seconds": round(elapsed, 3),
        "events_per_s": round(int(row[0]) / elapsed, 1),
        "payload_bytes": round(float(row[1])),
        "cpu": cpu,
    }


def phase_projection(database_url: str, meter: CpuMeter) -> dict:
    """(e) The usage projection's catch-up, in this process, over what (a) stored."""
    from application.settings import Settings
    from workers.runtime import Runtime

    runtime = Runtime(Settings(database_url=database_url))
    try:

        def catch_up() -> tuple[int, float]:
            started = time.perf_counter()
            applied = runtime.usage.catch_up()
            return applied, time.perf_counter() - started

        (applied, elapsed), cpu = measured(meter, catch_up)
    except Exception as error:  # optional figure: report the failure, keep benchmarking
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        runtime.close()
    return {
        "applied": applied,
        "seconds": round(elapsed, 3),
        "events_per_s": round(applied / elapsed, 1),
        "cpu": {**cpu, "note": "client_cores is the projection itself"},
    }


def phase_single(args: argparse.Namespace, server: Server, run: int, profile: Path | None) -> dict:
    """(d) POST /v1/usage-events: a fixed offered rate, then the closed-loop maximum."""
    assert server.secret is not None
    conns, rate = args.connections, args.rate
    warm = make_events(f"single-warm-{run}", int(rate), seed=2000 + run)
    fixed = make_events(f"single-{run}", int(rate * args.open_seconds), seed=3000 + run)
    closed = make_events(f"closed-{run}", args.closed_pool, seed=4000 + run)
    warm_req = single_requests(warm, server.port, server.secret)
    fixed_req = single_requests(fixed, server.port, server.secret)
    closed_req = single_requests(closed, server.port, server.secret)
    meter = CpuMeter(server)
    warmup = asyncio.run(run_open_loop(server.port, warm_req, rate, 1.0, conns, check_single))
    time.sleep(0.5)
    opened, open_cpu = measured(
        meter,
        lambda: asyncio.run(
            run_open_loop(server.port, fixed_req, rate, args.open_seconds, conns, check_single)
        ),
    )
    time.sleep(0.5)
    with Profiler(server, profile) if profile else _nothing():
        shut, closed_cpu = measured(
            meter,
            lambda: asyncio.run(
                run_closed_loop(server.port, closed_req, args.closed_seconds, conns, check_single)
            ),
        )
    open_latency, closed_latency = opened.latency_ms(), shut.latency_ms()
    return {
        "offered_rps": rate,
        "connections": conns,
        "open_loop": {
            "requests": opened.sent,
            "ok": opened.ok,
            "errors": opened.errors,
            "unsent": opened.unsent,
            "achieved_rps": round(opened.ok / opened.elapsed, 1),
            "latency_ms": {k: round(v, 2) for k, v in open_latency.items()},
            "cpu": open_cpu,
        },
        "closed_loop": {
            "requests": shut.sent,
            "ok": shut.ok,
            "errors": shut.errors,
            "seconds": round(shut.elapsed, 3),
            "rps": round(shut.ok / shut.elapsed, 1),
            "latency_ms": {k: round(v, 2) for k, v in closed_latency.items()},
            "cpu": closed_cpu,
        },
        "accepted": warmup.ok + opened.ok + shut.ok,
        "error_samples": warmup.error_samples + opened.error_samples + shut.error_samples,
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def one_run(args: argparse.Namespace, run: int, stamp: str) -> dict:
    """(a) to (e) on a fresh schema and a fresh server; both are gone afterwards."""
    with scratch_schema(ADMIN_URL) as schema:
        database_url = f"{ADMIN_URL}?schema={schema}"
        server = Server(database_url, args.workers)
        idle_busy = wait_for_quiet(args.quiet_wait)
        if idle_busy > 10:
            print(f"run {run}: warning, the machine is {idle_busy:.0f}% busy without us")
        try:
            print(f"run {run}: starting the server on port {server.port}", flush=True)
            server.start()
            server.post_json("/v1/meters", METER, timeout=60)
            profile_a = RESULTS / f"profile-{stamp}-run{run}-batch.txt" if args.profile else None
            profile_d = RESULTS / f"profile-{stamp}-run{run}-single.txt" if args.profile else None

            print(f"run {run}: (a) batch ingestion of {args.events} events", flush=True)
            batch = phase_batch(args, server, run, profile_a)
            stored, state_bytes = recorded_rows(schema)
            expected = batch["accepted"] + batch["warmup_accepted"]
            batch["stored_rows"] = stored
            batch["stored_state_bytes"] = round(state_bytes)
            batch["durable"] = stored == expected
            meter = CpuMeter(server)

            print(f"run {run}: (b) COPY ceiling", flush=True)
            copy = phase_copy(schema, batch.pop("events"), meter)

            projection = None
            if not args.no_projection:
                print(f"run {run}: (e) projection catch-up", flush=True)
                projection = phase_projection(database_url, meter)

            print(f"run {run}: (d) single events at {args.rate:g} req/s", flush=True)
            single = phase_single(args, server, run, profile_d)
            total, _ = recorded_rows(schema)
            single["all_durable"] = total == expected + single["accepted"]
        finally:
            server.stop()
    record: dict[str, Any] = {
        "background_busy_pct": idle_busy,
        "batch": batch,
        "copy": copy,
        "single": single,
    }
    if projection:
        record["projection"] = projection
    if args.profile:
        record["profile"] = {
            "batch": summarize_profile(profile_a) if profile_a else None,
            "single_closed_loop": summarize_profile(profile_d) if profile_d else None,
        }
    record["figures"] = figures(record)
    return record


def figures(record: dict) -> dict[str, float | None]:
    batch, copy, single = record["batch"], record["copy"], record["single"]
    projection = record.get("projection")
    return {
        "a_events_per_s": batch["events_per_s"],
        "b_events_per_s": copy["events_per_s"],
        "c_ratio": round(batch["events_per_s"] / copy["events_per_s"], 3),
        "d_achieved_rps": single["open_loop"]["achieved_rps"],
        "d_p50_ms": single["open_loop"]["latency_ms"]["p50"],
        "d_p99_ms": single["open_loop"]["latency_ms"]["p99"],
        "d_closed_rps": single["closed_loop"]["rps"],
        "d_closed_p99_ms": single["closed_loop"]["latency_ms"]["p99"],
        "e_events_per_s": projection.get("events_per_s") if projection else None,
        # CPU cost, less sensitive than throughput to other load on the machine
        "a_server_us_per_event": _per(batch["cpu"]["server_cores"], batch["events_per_s"]),
        "a_postgres_us_per_event": _per(batch["cpu"]["postgres_cores"], batch["events_per_s"]),
        "d_server_us_per_request": _per(
            single["open_loop"]["cpu"]["server_cores"], single["open_loop"]["achieved_rps"]
        ),
    }


def _per(cores: float, rate: float) -> float | None:
    """Microseconds of CPU per item, from cores used at a rate of items per second."""
    return round(1e6 * cores / rate, 1) if rate else None


# Report

ROWS = [
    ("a_events_per_s", "(a) batch ingest over HTTP, events/s", ">= 25,000"),
    ("b_events_per_s", "(b) COPY ceiling, rows/s", ""),
    ("c_ratio", "(c) a / b", ">= 0.25"),
    ("d_achieved_rps", "(d) single events, achieved req/s", "= offered"),
    ("d_p50_ms", "(d) p50 latency, ms", ""),
    ("d_p99_ms", "(d) p99 latency, ms", "<= 10"),
    ("d_closed_rps", "(d) closed loop max, req/s", ""),
    ("d_closed_p99_ms", "(d) closed loop p99, ms", ""),
    ("e_events_per_s", "(e) projection catch-up, events/s", ""),
    ("a_server_us_per_event", "(a) server CPU per event, us", ""),
    ("a_postgres_us_per_event", "(a) PostgreSQL CPU per event, us", ""),
    ("d_server_us_per_request", "(d) server CPU per request, us", ""),
]


def medians(runs: list[dict]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, _, _ in ROWS:
        values = [r["figures"][key] for r in runs if r["figures"][key] is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def verdicts(median: dict[str, float | None], rate: float) -> dict[str, bool]:
    a, c, p99 = median["a_events_per_s"], median["c_ratio"], median["d_p99_ms"]
    achieved = median["d_achieved_rps"] or 0.0
    return {
        "a_at_least_25000_events_per_s": a is not None and a >= TARGETS["a_events_per_s"],
        "a_at_least_25pct_of_copy": c is not None and c >= TARGETS["c_ratio"],
        "d_p99_at_most_10ms_at_rate": p99 is not None
        and p99 <= TARGETS["d_p99_ms"]
        and achieved >= 0.98 * rate,
    }


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def print_report(runs: list[dict], median: dict, verdict: dict, args: argparse.Namespace) -> None:
    head = ["figure", "median", *[f"run {i + 1}" for i in range(len(runs))], "target"]
    lines = [
        [label, number(median[key]), *[number(r["figures"][key]) for r in runs], target]
        for key, label, target in ROWS
    ]
    widths = [max(len(str(row[i])) for row in [head, *lines]) for i in range(len(head))]
    print()
    print(
        f"Xtopay ingestion: {args.events:,} events in batches of {BATCH_SIZE}, "
        f"{args.clients} clients, {args.workers} server workers; single events at "
        f"{args.rate:g} req/s over {args.connections} connections"
    )
    for row in [head, *lines]:
        print(
            "  ".join(
                str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print()
    for name, ok in verdict.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    durable = all(r["batch"]["durable"] and r["single"]["all_durable"] for r in runs)
    errors = sum(
        r["batch"]["errors"]
        + r["single"]["open_loop"]["errors"]
        + r["single"]["closed_loop"]["errors"]
        for r in runs
    )
    print(f"  {'PASS' if durable else 'FAIL'}  every accepted event is in ledger_events")
    print(f"  {'PASS' if errors == 0 else 'FAIL'}  no failed requests ({errors} failed)")
    for n, run in enumerate(runs, 1):
        for sample in run["batch"]["error_samples"] + run["single"]["error_samples"]:
            print(f"        run {n}: {sample}")
        if "error" in (run.get("projection") or {}):
            print(f"  FAIL  (e) run {n}: {run['projection']['error']}")
    print()
    cores = os.cpu_count()
    print(f"CPU in cores (of {cores}), median over runs: client / server / postgres / other")
    for label, path in (
        ("(a) batch", ("batch", "cpu")),
        ("(b) COPY", ("copy", "cpu")),
        ("(e) projection", ("projection", "cpu")),
        ("(d) open loop", ("single", "open_loop", "cpu")),
        ("(d) closed loop", ("single", "closed_loop", "cpu")),
    ):
        samples = [_dig(r, path) for r in runs]
        samples = [s for s in samples if s]
        if not samples:
            continue

        def med(key: str, samples: list[dict] = samples) -> float:
            return statistics.median(s[key] for s in samples)

        print(
            f"  {label:<16} {med('client_cores'):.2f} / {med('server_cores'):.2f} / "
            f"{med('postgres_cores'):.2f} / {med('other_cores'):.2f}"
        )
    idle = [r["background_busy_pct"] for r in runs]
    print(f"  machine busy before each run (someone else's load): {idle} %")
    for run in runs:
        profile = run.get("profile")
        if not profile:
            continue
        for phase, summary in profile.items():
            if summary and summary["self"]:
                print(f"\npy-spy, server processes during {phase}, % of samples")
                print("  innermost function (self):")
                for name, pct in summary["self"][:12]:
                    print(f"    {pct:5.1f}  {name}")
                print("  Xtopay functions on the stack (inclusive):")
                for name, pct in summary["project"][:12]:
                    print(f"    {pct:5.1f}  {name}")
        break


def _dig(record: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--clients", type=int, default=4, help="concurrent batch clients")
    parser.add_argument("--events", type=int, default=200_000, help="events in (a) and (b)")
    parser.add_argument("--rate", type=float, default=1000.0, help="(d) offered req/s")
    parser.add_argument("--connections", type=int, default=32, help="(d) connections")
    parser.add_argument("--open-seconds", type=float, default=10.0)
    parser.add_argument("--closed-seconds", type=float, default=5.0)
    parser.add_argument(
        "--closed-pool", type=int, default=40_000, help="(d) most closed-loop requests"
    )
    parser.add_argument("--batch-deadline", type=float, default=600.0, help="(a) time bound, s")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for the machine to be idle",
    )
    parser.add_argument("--no-projection", action="store_true", help="skip (e)")
    parser.add_argument("--profile", action="store_true", help="py-spy the server in (a), (d)")
    args = parser.parse_args(argv)
    if args.events < BATCH_SIZE or args.runs < 1:
        parser.error("--events must be at least 1000 and --runs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_local(ADMIN_URL)
    if args.profile and py_spy() is None:
        print("py-spy not found (.venv/bin/pip install py-spy); running without --profile")
        args.profile = False
    signal.signal(signal.SIGTERM, _interrupt)  # so the cleanup in finally blocks runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs = [one_run(args, n, stamp) for n in range(1, args.runs + 1)]
    median = medians(runs)
    verdict = verdicts(median, args.rate)
    print_report(runs, median, verdict, args)
    report = {
        "benchmark": "ingest",
        "started_at": stamp,
        "config": {k: v for k, v in vars(args).items()},
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": server_version(ADMIN_URL),
            "machine": platform.machine(),
            "repo": str(REPO),
        },
        "targets": TARGETS,
        "median": median,
        "verdicts": verdict,
        "runs": runs,
    }
    out = RESULTS / f"ingest-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
