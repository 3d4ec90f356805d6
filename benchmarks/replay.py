"""Replay benchmark: how fast `xtopay audit verify` replays the log on PostgreSQL.

    .venv/bin/python benchmarks/replay.py [--events 1000000] [--customers 100]

One run, in this process, on a fresh PostgreSQL schema (dropped afterwards):
  1. a tenant, its customers and the ingest benchmark's meter (SUM of `tokens`, grouped
     by model);
  2. --events usage events ingested through `application.ingest` (Ingestor.prepare and
     record, as the batch endpoint does) in 1000-event batches;
  3. the live read models brought up to the log's head (every projection's catch-up);
  4. `workers.audit.verify` timed: the replay phase (every projection replayed from the
     log into a scratch schema), then the freeze and comparison with the live tables.
Replay speed = usage events / replay seconds (also log notifications / s). The figures
are printed and written to benchmarks/results/replay-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import REPO, check_local, scratch_schema, server_version

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
MODELS = ("gpt-x", "gpt-x-mini", "claude-y", "llama-z")
REGIONS = ("eu", "us", "ap")


def batch(rng: random.Random, number: int, customers: list[str], now: datetime) -> list[dict]:
    """1000 distinct events from the last day, in the ingestor's input shape."""
    return [
        {
            "idempotency_key": f"replay-{number:06d}-{n:04d}",
            "customer": rng.choice(customers),
            "event_type": EVENT_TYPE,
            "meter": None,
            "value": None,
            "timestamp": now - timedelta(seconds=rng.uniform(60, 86_000)),
            "properties": {
                "tokens": rng.randint(1, 8000),
                "model": rng.choice(MODELS),
                "region": rng.choice(REGIONS),
            },
            "metadata": None,
        }
        for n in range(BATCH_SIZE)
    ]


def ingest(runtime: Any, events: int, customers: int) -> dict[str, Any]:
    tenant = runtime.catalog.create_tenant("bench").tenant_id
    names = [f"cus_{n:05d}" for n in range(customers)]
    for name in names:
        runtime.catalog.create_customer(tenant, {"external_id": name, "timezone": "UTC"})
    runtime.catalog.create_meter(tenant, METER)
    rng = random.Random(7)
    started = time.perf_counter()
    accepted = 0
    for number in range(events // BATCH_SIZE):
        now = datetime.now(UTC)
        items = list(enumerate(batch(rng, number, names, now)))
        outcomes = runtime.ingestor.prepare(tenant, items, now, "events.{index}.")
        asyncio.run(runtime.ingestor.record(tenant, outcomes, now))
        accepted += sum(o.status == "accepted" for o in outcomes)
        if (number + 1) % 100 == 0:
            rate = accepted / (time.perf_counter() - started)
            print(f"  ingested {accepted:,} ({rate:,.0f} events/s)", flush=True)
    elapsed = time.perf_counter() - started
    return {
        "accepted": accepted,
        "seconds": round(elapsed, 1),
        "events_per_s": round(accepted / elapsed, 1),
    }


def catch_up(runtime: Any) -> dict[str, Any]:
    """The live read models up to the head, projection by projection."""
    runners = {
        "usage": runtime.usage,
        "invoices": runtime.invoices,
        "wallets": runtime.wallet_book,
        "access": runtime.alerts.access_runner,
        "outbox": runtime.alerts.outbox_runner,
    }
    seconds = {}
    for name, runner in runners.items():
        started = time.perf_counter()
        runner.catch_up()
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"  live {name}: {seconds[name]}s", flush=True)
    return seconds


def timed_verify(runtime: Any) -> dict[str, Any]:
    """`verify`, with the replay phase timed through its progress callback: a projection's
    replay ends at its last report (the position it was asked to reach)."""
    from workers.audit import projection_specs, verify

    names = [spec.name for spec in projection_specs()]
    last: dict[str, float] = {}
    reached: dict[str, int] = {}

    def progress(name: str, position: int, target: int) -> None:
        last[name] = time.perf_counter()
        reached[name] = position
        if position >= target:
            print(f"  replayed {name} to {position:,}", flush=True)

    started = time.perf_counter()
    found = verify(runtime, progress)
    ended = time.perf_counter()
    replay_end = max(last.values())
    per_projection, previous = {}, started
    for name in names:
        if name in last:
            per_projection[name] = round(last[name] - previous, 2)
            previous = last[name]
    return {
        "replay_seconds": round(replay_end - started, 2),
        "compare_seconds": round(ended - replay_end, 2),
        "verify_seconds": round(ended - started, 2),
        "per_projection_seconds": per_projection,
        "positions": reached,
        "differences": [str(d) for d in found],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100)
    args = parser.parse_args(argv)
    if args.events < BATCH_SIZE:
        parser.error("--events must be at least 1000")
    check_local(ADMIN_URL)
    signal.signal(signal.SIGTERM, _interrupt)  # so the schema is dropped
    from application.settings import Settings
    from workers.runtime import Runtime

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with scratch_schema(ADMIN_URL) as schema:
        runtime = Runtime(Settings(database_url=f"{ADMIN_URL}?schema={schema}"))
        try:
            print(f"ingesting {args.events:,} events into schema {schema}", flush=True)
            ingested = ingest(runtime, args.events, args.customers)
            print("bringing the live read models up to the head", flush=True)
            live = catch_up(runtime)
            head = runtime.ledger.recorder.max_notification_id() or 0
            print(f"audit verify over {head:,} log notifications", flush=True)
            verified = timed_verify(runtime)
        finally:
            runtime.close()
    replay = verified["replay_seconds"]
    figures = {
        "usage_events": ingested["accepted"],
        "log_notifications": head,
        "replay_events_per_s": round(ingested["accepted"] / replay, 1),
        "replay_notifications_per_s": round(head / replay, 1),
    }
    report = {
        "benchmark": "replay",
        "started_at": stamp,
        "config": vars(args),
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": server_version(ADMIN_URL),
            "machine": platform.machine(),
        },
        "figures": figures,
        "ingest": ingested,
        "live_catch_up_seconds": live,
        "verify": verified,
    }
    print()
    print(f"usage events            {figures['usage_events']:,}")
    print(f"replay (all projections) {replay}s: {figures['replay_events_per_s']:,.0f} events/s")
    print(f"  per projection         {verified['per_projection_seconds']}")
    print(f"compare with live        {verified['compare_seconds']}s")
    print(f"differences              {len(verified['differences'])}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"replay-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0 if not verified["differences"] else 1


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
