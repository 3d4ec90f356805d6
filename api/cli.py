"""The `xtopay` command: serve, worker, tenants, audit."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from datetime import datetime

from application.settings import Settings
from domain.tenants import tenant_id_for

DEV_TENANT = "development"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xtopay", description="Usage metering and billing")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API (with projections unless --no-workers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.add_argument("--no-workers", action="store_true", help="do not run projections here")
    commands.add_parser("worker", help="run projections and background work")
    tenants = commands.add_parser("tenants", help="manage tenants and keys")
    tenant_commands = tenants.add_subparsers(dest="tenant_command", required=True)
    create = tenant_commands.add_parser("create", help="create a tenant; prints its secret key")
    create.add_argument("name")
    keys = tenant_commands.add_parser("keys", help="issue or revoke keys")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    issue = key_commands.add_parser("issue")
    issue.add_argument("name", help="tenant name")
    revoke = key_commands.add_parser("revoke")
    revoke.add_argument("key", help="the secret key, or its SHA-256 hash")
    audit = commands.add_parser("audit", help="replay the store and check the read models")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_commands.add_parser("verify", help="replay into scratch tables and diff with live")
    audit_commands.add_parser("rebuild", help="replace the live read models from the log")
    trace = audit_commands.add_parser(
        "trace", help="every line of an invoice with the usage events behind it"
    )
    trace.add_argument("invoice_id", help="inv_... (or the invoice's UUID)")
    trace.add_argument("--json", action="store_true", help="machine-readable output")
    leakage = audit_commands.add_parser(
        "leakage", help="account for every accepted usage event; check the wallet ledgers"
    )
    leakage.add_argument("--from", dest="start", type=_rfc3339, metavar="RFC3339")
    leakage.add_argument("--to", dest="end", type=_rfc3339, metavar="RFC3339")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "serve":
        return serve_command(settings, args)
    if args.command == "worker":
        return worker_command(settings)
    if args.command == "audit":
        return audit_command(settings, args)
    return tenants_command(settings, args)


def _runtime(settings: Settings):
    from workers.runtime import Runtime

    return Runtime(settings)


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    runtime = _runtime(settings)
    try:
        ensure_dev_tenant(runtime)
    finally:
        runtime.close()
    os.environ["XTOPAY_RUN_WORKERS"] = "0" if args.no_workers else "1"
    print(
        f"Xtopay listening on http://{args.host}:{args.port} (store: {settings.database_url})",
        flush=True,
    )
    Granian(
        "api.server:app_factory",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        factory=True,
        log_access=False,
    ).serve()
    return 0


def ensure_dev_tenant(runtime) -> None:
    """On a store's first start, create a development tenant and print its key once."""
    from eventsourcing.application import AggregateNotFoundError

    try:
        runtime.ledger.repository.get(tenant_id_for(DEV_TENANT))
    except AggregateNotFoundError:
        issued = runtime.catalog.create_tenant(DEV_TENANT)
        print("Created the development tenant. Its secret key (shown once):", flush=True)
        print(issued.secret, flush=True)


def worker_command(settings: Settings) -> int:
    runtime = _runtime(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.start_workers()
    print("Xtopay worker running", flush=True)
    stop.wait()
    runtime.close()
    return 0


def tenants_command(settings: Settings, args: argparse.Namespace) -> int:
    runtime = _runtime(settings)
    try:
        if args.tenant_command == "create":
            issued = runtime.catalog.create_tenant(args.name)
            print(f"Tenant {args.name} ({issued.tenant_id.hex}). Secret key, shown once:")
            print(issued.secret)
        elif args.key_command == "issue":
            issued = runtime.catalog.issue_key(tenant_id_for(args.name), label="cli")
            print(issued.secret)
        else:
            runtime.catalog.revoke_key(args.key)
            print("revoked")
    finally:
        runtime.close()
    return 0


def audit_command(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when everything is consistent; otherwise print a readable diff, exit 1."""
    from workers import audit

    runtime = _runtime(settings)
    try:
        if args.audit_command == "trace":
            return _trace_command(runtime, args)
        if args.audit_command == "leakage":
            with _progress("checking") as progress:
                report = audit.leakage(runtime, args.start, args.end, progress)
            return _print_leakage(report, args.start, args.end)
        with _progress() as progress:
            if args.audit_command == "verify":
                found = audit.verify(runtime, progress)
                if not found:
                    print("verify: the read models equal a replay of the whole log")
                    return 0
                print(f"verify: {len(found)} difference(s) (table, key, column: live / replayed)")
                for difference in found:
                    print(f"  {difference}")
                return 1
            positions = audit.rebuild(runtime, progress)
            print(
                "rebuild: read models replaced; positions "
                + ", ".join(f"{name}={position}" for name, position in positions.items())
            )
            return 0
    finally:
        runtime.close()


def _rfc3339(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 instant with an offset (2026-03-01T00:00:00Z)"
        )
    return instant


def _trace_command(runtime, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """`audit trace`: JSON with --json, a rich table on a terminal, plain text in a pipe."""
    from api.billing_views import trace_events
    from workers import audit

    try:
        found = audit.trace(runtime, args.invoice_id, trace_events)
    except LookupError as error:
        print(f"trace: {error.args[0]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found, indent=2))
    elif sys.stdout.isatty():
        _trace_table(found)
    else:
        _trace_text(found)
    return 0 if found["consistent"] else 1


def _trace_summary(found: dict) -> list[str]:
    return [
        f"invoice {found['id']} {found['kind']} {found['status']} customer {found['customer']} "
        f"subscription {found['subscription']}"
        + (f" corrects {found['corrects']}" if found["corrects"] else ""),
        f"period {found['period_start']} .. {found['period_end']} plan {found['plan']} "
        f"v{found['plan_version']} total {found['total']} {found['currency']} "
        f"closed at log position {found['closed_at_position']}",
    ]


def _line_head(line: dict) -> str:
    meter = f" meter {line['meter']}" if line["meter"] else ""
    return (
        f"line {line['number']} {line['id']} {line['type']}{meter} "
        f"quantity {line['quantity']} amount {line['amount']}"
    )


def _line_foot(line: dict) -> str:
    if line["events_total"] is None:
        return "no usage events (a fee or a true-up)"
    verdict = "=" if line["adds_up"] else "DOES NOT ADD UP TO"
    return (
        f"events: {len(line['events'])}, contributions {line['events_total']} "
        f"{verdict} quantity {line['quantity']}"
    )


def _trace_verdict(found: dict) -> str:
    if found["consistent"]:
        return "trace: every line's contributions add up to its quantity"
    wrong = [x["id"] for x in found["lines"] if not x["adds_up"]]
    return f"trace: {len(wrong)} line(s) whose contributions do not add up: {', '.join(wrong)}"


def _trace_text(found: dict) -> None:
    """Plain text for a pipe: one event a line, columns separated by two spaces."""
    print("\n".join(_trace_summary(found)))
    for line in found["lines"]:
        print()
        print(_line_head(line))
        if line["events"]:
            print("  event  idempotency_key  timestamp  value")
        for event in line["events"]:
            key = event["idempotency_key"] or "-"
            print(f"  {event['id']}  {key}  {event['timestamp']}  {event['value']}")
        print(f"  {_line_foot(line)}")
    print()
    print(_trace_verdict(found))


def _trace_table(found: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print("\n".join(_trace_summary(found)), highlight=False)
    for line in found["lines"]:
        table = Table(title=_line_head(line), caption=_line_foot(line), title_justify="left")
        table.add_column("event", no_wrap=True, min_width=36)  # ids are copied whole
        table.add_column("idempotency_key", overflow="fold")
        table.add_column("timestamp", overflow="fold")
        table.add_column("value", justify="right", overflow="fold")
        for event in line["events"]:
            table.add_row(
                event["id"], event["idempotency_key"] or "-", event["timestamp"], event["value"]
            )
        console.print(table)
    console.print(_trace_verdict(found), highlight=False)


def _print_leakage(report, start: datetime | None, end: datetime | None) -> int:  # type: ignore[no-untyped-def]
    """`audit leakage`: one `bucket: count` line each, the leaks, the wallet check."""
    window = (
        "all timestamps"
        if start is None and end is None
        else f"timestamps in [{start.isoformat() if start else '-'}, "
        f"{end.isoformat() if end else '-'})"
    )
    positions = report.positions
    print(
        f"leakage: {report.events} accepted usage events, {report.facts} meter facts "
        f"(event x meter), {window}; read models at log position "
        f"usage={positions.get('usage', 0)} invoices={positions.get('invoices', 0)} "
        f"(log head {positions.get('log', 0)})"
    )
    for bucket, count in report.buckets.items():
        print(f"{bucket}: {count}")
    print(f"leaked: {report.leaked}")
    for leak in report.leaks:
        print(f"  {leak}")
    if report.leaked > len(report.leaks):
        print(f"  ... and {report.leaked - len(report.leaks)} more")
    if report.wallet_problems:
        print(f"wallets: {report.wallets} checked, {len(report.wallet_problems)} problem(s)")
        for problem in report.wallet_problems:
            print(f"  {problem}")
    else:
        print(
            f"wallets: {report.wallets} checked, the ledger identity holds (balance = top-ups "
            "+ grants - debits - expiries + refunds)"
        )
    return 0 if report.ok else 1


class _progress:
    """A progress bar on a terminal (rich); silent in a pipe."""

    def __init__(self, verb: str = "replaying") -> None:
        self.verb = verb

    def __enter__(self) -> _progress:
        from rich.progress import Progress

        self.bar = Progress(disable=not sys.stdout.isatty(), transient=True)
        self.bar.__enter__()
        self.tasks: dict[str, int] = {}
        return self

    def __call__(self, name: str, position: int, target: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(f"{self.verb} {name}", total=target or 1)
        self.bar.update(self.tasks[name], completed=position)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
