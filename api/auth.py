"""Bearer-key authentication: every /v1 call names its tenant through its key."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request

from api.errors import Unauthorized
from workers.runtime import Runtime


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    return request.app.state.runtime


async def tenant_of(request: Request[Any, Any, Any]) -> UUID:
    """The tenant of the request's secret key, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <secret key>")
    tenant = runtime_of(request).catalog.tenant_for_key(secret.strip())
    if tenant is None:
        raise Unauthorized("unknown or revoked API key")
    return tenant
