"""The Litestar application: command and query apps, separately mountable."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import Controller, Litestar, Request, get
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from sqlalchemy.exc import OperationalError as ReadModelOperationalError

from api.alerts_commands import AlertCommands
from api.alerts_queries import AlertQueries
from api.auth import tenant_of
from api.billing_commands import BillingCommands
from api.billing_queries import BillingQueries
from api.commands import CatalogCommands, UsageCommands
from api.errors import domain_error, envelope, http_error, internal, unavailable
from api.openapi import add_body_schemas
from api.queries import CustomerQueries, UsageQueries
from api.wallets_api import WalletCommands, WalletQueries
from domain.errors import DomainError
from workers.runtime import Runtime

MAX_BODY = 1024 * 1024


@get("/health", operation_id="health", sync_to_thread=True, include_in_schema=True)
def health(request: Request[Any, Any, Any]) -> Any:
    """200 once the store is reachable and the read-model tables exist."""
    runtime: Runtime = request.app.state.runtime
    try:
        runtime.ledger.recorder.max_notification_id()
        position = runtime.usage.position()
        invoices = runtime.invoices.position()
    except Exception as error:  # any failure here means "not ready"
        return envelope(503, f"store unreachable: {type(error).__name__}")
    return {"status": "ok", "projections": {"usage": position, "invoices": invoices}}


COMMAND_HANDLERS = [UsageCommands, CatalogCommands, BillingCommands, AlertCommands, WalletCommands]
QUERY_HANDLERS = [UsageQueries, CustomerQueries, BillingQueries, AlertQueries, WalletQueries]


def v1_controller(parts: list[type]) -> type[Controller]:
    """One controller for /v1 composed of the chosen handler groups. Litestar refuses a
    path (POST and GET /v1/usage-events) registered by two separate controllers."""
    attributes = {"path": "/v1", "dependencies": {"tenant": Provide(tenant_of)}}
    return type("V1", (*parts, Controller), attributes)


def create_app(runtime: Runtime, *, commands: bool = True, queries: bool = True) -> Litestar:
    """The API over an already-built runtime (the caller owns its lifecycle)."""
    handlers: list[Any] = [health]
    parts = (COMMAND_HANDLERS if commands else []) + (QUERY_HANDLERS if queries else [])
    if parts:
        handlers.append(v1_controller(parts))
    app = Litestar(
        route_handlers=handlers,
        exception_handlers={
            DomainError: domain_error,
            HTTPException: http_error,
            StoreOperationalError: unavailable,
            ReadModelOperationalError: unavailable,
            Exception: internal,
        },
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(title="Xtopay", version="1", path="/schema"),
        debug=False,
    )
    app.state.runtime = runtime
    add_body_schemas(app.openapi_schema)
    return app
