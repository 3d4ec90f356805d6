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
    audit = commands.add_parser("audit", help="replay the store and check the read models")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_commands.add_parser("verify", help="replay into scratch tables and diff with live")
    audit_commands.add_parser("rebuild", help="replace the live read models from the log")
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


class _progress:
    """A progress bar on a terminal (rich); silent in a pipe."""

    def __enter__(self) -> _progress:
        from rich.progress import Progress

        self.bar = Progress(disable=not sys.stdout.isatty(), transient=True)
        self.bar.__enter__()
        self.tasks: dict[str, int] = {}
        return self

    def __call__(self, name: str, position: int, target: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(f"replaying {name}", total=target or 1)
        self.bar.update(self.tasks[name], completed=position)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
