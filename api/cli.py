"""The `xtopay` command: serve, worker, tenants."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

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
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "serve":
        return serve_command(settings, args)
    if args.command == "worker":
        return worker_command(settings)
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


if __name__ == "__main__":
    sys.exit(main())
