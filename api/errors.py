"""One place that maps errors to the contract's envelope:
{"error": {"type", "message", "field"}} with 400, 401, 404, 409, 413 or 422."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from domain.errors import Conflict, DomainError, InvalidInput, NotFound

log = logging.getLogger("xtopay.api")
STATUS = {InvalidInput: 422, NotFound: 404, Conflict: 409}
TYPES = {
    400: "invalid_json",
    401: "authentication_error",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    422: "validation_error",
    503: "service_unavailable",
}


class Unauthorized(DomainError):
    kind = "authentication_error"


def envelope(
    status: int, message: str, field: str | None = None, kind: str | None = None
) -> Response[Any]:
    body = {
        "error": {"type": kind or TYPES.get(status, "error"), "message": message, "field": field}
    }
    return Response(body, status_code=status)


def dotted(path: str) -> str:
    """`$.events[3].timestamp` or `events[3].timestamp` -> `events.3.timestamp`."""
    path = path.removeprefix("$").lstrip(".")
    return re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".").replace("'", "")


def msgspec_error(message: str, prefix: str = "") -> InvalidInput:
    """A msgspec ValidationError text ('... - at `$.x[1]`') as InvalidInput with a field."""
    text, _, where = message.partition(" - at `")
    field = dotted(where.rstrip("`")) if where else None
    if field is None and (m := re.search(r"missing required field `(\w+)`", text)):
        field = m.group(1)
    if m := re.search(r"unknown field `([^`]+)`", text):
        field = ".".join(p for p in (field, m.group(1)) if p)
    return InvalidInput(text, prefix + field if field else prefix.rstrip(".") or None)


def domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    if isinstance(exc, Unauthorized):
        return envelope(401, exc.message, None)
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
    return envelope(status, exc.message, exc.field, exc.kind)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        first = extra[0] if extra else {}
        key = first.get("key") if isinstance(first, dict) else None
        message = first.get("message") if isinstance(first, dict) else exc.detail
        return envelope(422 if key else 400, message or exc.detail, dotted(key) if key else None)
    response = envelope(exc.status_code, exc.detail)
    if exc.status_code == 413:
        # The body was not read: the connection cannot carry another request.
        response.headers["Connection"] = "close"
    return response


def internal(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled error", exc_info=exc)
    return envelope(
        500, "internal error; nothing was lost: retry with the same keys", kind="api_error"
    )


def unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    response = envelope(503, "the store is unreachable; retry shortly")
    response.headers["Retry-After"] = "1"
    return response
