"""Access-check benchmark: GET /v1/customers/{id}/access at a fixed offered rate.

    .venv/bin/python benchmarks/access.py [--mode both|redis|embedded] [--rate 500]
        [--seconds 10] [--connections 8] [--runs 1] [--quiet-wait 30] [--stop-workers]

Needs PostgreSQL and Redis on 127.0.0.1 (XTOPAY_BENCH_PG, XTOPAY_BENCH_REDIS) for the
`redis` mode; run it on an otherwise idle machine (it waits up to --quiet-wait seconds
for one before measuring, and prints the CPU others used meanwhile). Each run, on a
fresh store:
- `redis` (the production layout): `xtopay serve --no-workers` (one process) and
  `xtopay worker` beside it, on a PostgreSQL scratch schema and a Redis namespace of
  its own; a check is one Redis round trip. With --stop-workers the worker is stopped
  once the customer is blocked, so the figure is the check's alone (on a two-core
  machine the worker's polling otherwise competes with the API for the cores).
- `embedded`: `xtopay serve` on a SQLite file, workers in the same process; a check is
  a look-up in the in-process cache.
It creates two customers and a 10-unit budget blocking at 100 % for one of them, sends
it 11 units and waits until its check answers `allowed: false`. Then, after a 2 s
warm-up, it offers checks of both customers, alternating, open loop over keep-alive
connections from loopback (see `open_loop` for how latency is measured). Every reply
is checked (status 200, `allowed` consistent with `reasons`).

Reported: p50/p90/p99/p99.9/max in ms, the achieved rate, and the CPU of the server
and of everything else; target p99 at most 2 ms at 500 requests/s. Results go to
benchmarks/results/access-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    REPO,
    CpuMeter,
    Server,
    check_local,
    scratch_schema,
    wait_for_quiet,
)
from loadgen import (
    REPLY_TIMEOUT,
    Connection,
    PhaseResult,
    ReplyError,
    encode_request,
    open_connections,
    percentile,
)

ADMIN_URL = os.environ.get("XTOPAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("XTOPAY_BENCH_REDIS", "redis://127.0.0.1:6379/0")
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_P99_MS = 2.0
WARMUP_SECONDS = 2.0


class ApiServer(Server):
    """`xtopay serve` (one process), with its workers in it unless `separate_workers`;
    the environment holds the mode's settings (database, Redis)."""

    def __init__(self, database_url: str, env: dict[str, str], separate_workers: bool) -> None:
        super().__init__(database_url, workers=1)
        self.extra_env = {"XTOPAY_DATABASE_URL": database_url, **env}
        self.separate_workers = separate_workers
        self.worker: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        command = super().command()
        return command if self.separate_workers else [p for p in command if p != "--no-workers"]

    def start(self, timeout: float = 90.0) -> None:
        saved = {k: os.environ.get(k) for k in self.extra_env}
        os.environ.update(self.extra_env)
        try:
            super().start(timeout)
            if self.separate_workers:  # the production layout: `xtopay worker` beside the API
                program = Path(sys.executable).with_name("xtopay")
                self.worker = subprocess.Popen(
                    [str(program), "worker"],
                    cwd=REPO,
                    env=dict(os.environ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def stop_worker(self) -> None:
        """Stop the separate `xtopay worker` (the API and the Redis cache stay up)."""
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(5)

    def stop(self) -> None:
        try:
            if self.worker is not None and self.worker.poll() is None:
                self.worker.send_signal(signal.SIGTERM)
                try:
                    self.worker.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.worker.pid, signal.SIGKILL)
                    self.worker.wait(5)
        finally:
            super().stop()

    def get_json(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url(path), headers={"Authorization": f"Bearer {self.secret}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())


def prepare(server: ApiServer) -> tuple[str, str, str]:
    """Two customers, one of them blocked; answers (blocked, allowed, meter)."""
    tag = uuid.uuid4().hex[:8]
    blocked, allowed, meter = f"cus_blocked_{tag}", f"cus_allowed_{tag}", f"tokens_{tag}"
    for customer in (blocked, allowed):
        server.post_json("/v1/customers", {"external_id": customer})
    server.post_json(
        "/v1/meters",
        {"key": meter, "event_type": f"llm_{tag}", "aggregation": "SUM", "value_property": "t"},
    )
    server.post_json(
        "/v1/budgets", {"customer": blocked, "meter": meter, "units": 10, "block_at": 100}
    )
    server.post_json(
        "/v1/usage-events",
        {"event_type": f"llm_{tag}", "customer": blocked, "properties": {"t": 11}},
    )
    deadline = time.monotonic() + 10
    while server.get_json(f"/v1/customers/{blocked}/access?meter={meter}")["allowed"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the budget never blocked the customer")
        time.sleep(0.05)
    return blocked, allowed, meter


def run_once(mode: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    with store(mode) as (database_url, env):
        server = ApiServer(database_url, env, separate_workers=mode == "redis")
        try:
            server.start()
            assert server.secret is not None
            blocked, allowed, meter = prepare(server)
            if args.stop_workers and mode == "redis":
                server.stop_worker()  # measure the check alone, without the background work
            paths = [
                f"/v1/customers/{blocked}/access?meter={meter}",
                f"/v1/customers/{allowed}/access?meter={meter}",
            ]
            total = int(args.rate * (args.seconds + WARMUP_SECONDS)) + 1
            raws = [
                encode_request("GET", paths[i % 2], server.port, server.secret, b"")
                for i in range(total)
            ]
            warm = int(args.rate * WARMUP_SECONDS)
            asyncio.run(open_loop(server.port, raws[:warm], args.rate, args.connections))
            busy = wait_for_quiet(args.quiet_wait) if args.quiet_wait else None
            meter_cpu = CpuMeter(server)
            before = meter_cpu.snapshot()
            result, from_send = asyncio.run(
                open_loop(server.port, raws[warm:], args.rate, args.connections)
            )
            cpu = CpuMeter.usage(before, meter_cpu.snapshot())
        finally:
            server.stop()
    values = sorted(from_send)
    return {
        "mode": mode + ("-api-only" if args.stop_workers and mode == "redis" else ""),
        "run": run,
        "requests": result.sent,
        "ok": result.ok,
        "errors": result.errors,
        "error_samples": result.error_samples,
        "achieved_per_s": round(result.ok / result.elapsed, 1),
        "latency_ms": {
            k: round(1000 * percentile(values, f), 3)
            for k, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))
        }
        | {"max": round(1000 * values[-1], 3) if values else 0.0},
        "latency_from_due_ms": {k: round(v, 3) for k, v in result.latency_ms().items()},
        "cpu": cpu,
        "machine_busy_before_pct": busy,
    }


async def open_loop(
    port: int, requests: list[bytes], rate: float, connections: int
) -> tuple[PhaseResult, list[float]]:
    """Offer `requests` at `rate` per second (request i due at t0 + i/rate).

    Two latencies per request. From its due time (loadgen's wrk2 method), which also
    charges the client's own timer lateness: asyncio sleeps in whole milliseconds, so
    a request is typically sent 0.5-1 ms after it is due even on an idle machine.
    And the one reported as the figure: from the moment it was sent when a connection
    was free at its due time (the lateness is the client's), but still from its due
    time when every connection was busy then (the wait is the server's fault, so a
    stall is charged to every request scheduled during it: no coordinated omission)."""
    result = PhaseResult()
    corrected: list[float] = []
    conns = await open_connections(port, connections)
    next_index = 0
    last_done = 0.0

    async def worker(conn: Connection) -> None:
        nonlocal next_index, last_done
        while next_index < len(requests):
            index = next_index
            next_index += 1
            due = t0 + index / rate
            picked = time.perf_counter()
            if due > picked:
                await asyncio.sleep(due - picked)
            sent = time.perf_counter()
            result.sent += 1
            try:
                status, body = await asyncio.wait_for(conn.request(requests[index]), REPLY_TIMEOUT)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ReplyError) as error:
                result.fail(f"{type(error).__name__}: {error}")
                conn.close()
                conn = await Connection.open(port)
                continue
            done = time.perf_counter()
            problem = check(status, body)
            if problem is not None:
                result.fail(problem)
                continue
            result.ok += 1
            last_done = done
            result.latencies.append(done - due)
            corrected.append(done - (sent if picked <= due else due))
        conn.close()

    gc.collect()
    gc.disable()  # no collector pause in the client mid-measurement
    try:
        t0 = time.perf_counter() + 0.01
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        gc.enable()
    result.elapsed = max(last_done - t0, 1e-9)
    return result, corrected


def check(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    reply = json.loads(body)
    if reply["allowed"] == bool(reply["reasons"]):
        return f"inconsistent reply {reply}"
    return None


class store:
    """A fresh store (and Redis namespace) for one run, removed afterwards."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __enter__(self) -> tuple[str, dict[str, str]]:
        if self.mode == "embedded":
            self.tmp = tempfile.TemporaryDirectory(prefix="xtopay-access-")
            return f"sqlite:///{self.tmp.name}/xtopay.db", {"XTOPAY_REDIS_URL": ""}
        self.schema_cm = scratch_schema(ADMIN_URL)
        schema = self.schema_cm.__enter__()
        self.namespace = f"xtopay-bench-{uuid.uuid4().hex[:8]}"
        env = {"XTOPAY_REDIS_URL": REDIS_URL, "XTOPAY_REDIS_NAMESPACE": self.namespace}
        return f"{ADMIN_URL}?schema={schema}", env

    def __exit__(self, *exc: object) -> None:
        if self.mode == "embedded":
            self.tmp.cleanup()
            return
        self.schema_cm.__exit__(None, None, None)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{self.namespace}*"))
        if keys:
            client.delete(*keys)
        client.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("both", "redis", "embedded"), default="both")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument(
        "--stop-workers",
        action="store_true",
        help="redis mode: stop `xtopay worker` once the customer is blocked, so the figures "
        "are the access check's alone (on a 2-core machine the worker's polling competes "
        "with the API for the same cores)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_local(ADMIN_URL)
    check_local(REDIS_URL)
    signal.signal(signal.SIGTERM, _interrupt)  # so the clean-up in finally blocks runs
    modes = ("redis", "embedded") if args.mode == "both" else (args.mode,)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs = [run_once(mode, args, n) for mode in modes for n in range(1, args.runs + 1)]
    print(
        f"\nGET /v1/customers/{{id}}/access, open loop at {args.rate:g} req/s for "
        f"{args.seconds:g} s, {args.connections} connections (target p99 <= {TARGET_P99_MS} ms)"
    )
    print(
        f"{'mode':<15} {'run':>3} {'ok':>6} {'err':>4} {'req/s':>7} {'p50':>7} {'p90':>7} "
        f"{'p99':>7} {'p99.9':>7} {'max':>7}  server/other cores  verdict"
    )
    for r in runs:
        lat = r["latency_ms"]
        verdict = "PASS" if lat["p99"] <= TARGET_P99_MS and not r["errors"] else "FAIL"
        print(
            f"{r['mode']:<15} {r['run']:>3} {r['ok']:>6} {r['errors']:>4} "
            f"{r['achieved_per_s']:>7} {lat['p50']:>7.3f} {lat['p90']:>7.3f} {lat['p99']:>7.3f} "
            f"{lat['p999']:>7.3f} {lat['max']:>7.3f}  "
            f"{r['cpu']['server_cores']:>6.2f} / {r['cpu']['other_cores']:<6.2f}     {verdict}"
        )
        due = r["latency_from_due_ms"]
        print(
            f"{'':<20} measured from the due time: p50 {due['p50']:.3f}  p99 {due['p99']:.3f}  "
            f"max {due['max']:.3f} (includes the client's timer lateness)"
        )
        for sample in r["error_samples"]:
            print(f"    error: {sample}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"access-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "access",
                "started_at": stamp,
                "config": vars(args),
                "environment": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                },
                "target_p99_ms": TARGET_P99_MS,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
