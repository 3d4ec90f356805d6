"""Request bodies in the OpenAPI document for handlers that decode their own body.

Ingestion reads the raw body and decodes it with msgspec itself (exact decimals,
per-item errors in a batch), so Litestar cannot see the body type. Each such
handler names its body Struct through `operation_class=body(Struct)`, and the
Structs' JSON schemas (from msgspec) are published as components.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec import (
    OpenAPIResponse as OAResponse,
)

REF = "#/components/schemas/{name}"
_FORMATS = {f.value: f for f in OpenAPIFormat}
_BODIES: list[type] = []


def body(struct: type) -> type[Operation]:
    """An Operation class whose request body is `struct` (registered as a component)."""
    _BODIES.append(struct)

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                required=True,
                content={
                    "application/json": OpenAPIMediaType(
                        schema=Reference(ref=REF.format(name=struct.__name__))
                    )
                },
            )

    return WithBody


def add_body_schemas(document: OpenAPI) -> None:
    """Publish the JSON schemas of every body registered through `body()`."""
    _, schemas = msgspec.json.schema_components(_BODIES, ref_template=REF)
    if document.components is None:
        document.components = Components()
    if document.components.schemas is None:
        document.components.schemas = {}
    for name, node in schemas.items():
        document.components.schemas[name] = _schema(node)
    _add_error_responses(document)


class ErrorDetail(msgspec.Struct):
    type: str
    message: str
    field: str | None


class ErrorOut(msgspec.Struct):
    """The error envelope of every failed call."""

    error: ErrorDetail


ERRORS = {
    "400": "Malformed JSON",
    "401": "Missing, unknown or revoked API key",
    "404": "No such resource for this tenant",
    "409": "Conflicts with something already recorded",
    "413": "Body larger than 1 MiB",
    "422": "Validation failed; `field` names the culprit (e.g. events.3.timestamp)",
    "503": "The store is unreachable; retry after the Retry-After header",
}
READ_ERRORS = ("401", "404", "422", "503")


def _add_error_responses(document: OpenAPI) -> None:
    _, schemas = msgspec.json.schema_components([ErrorOut], ref_template=REF)
    assert document.components is not None and document.components.schemas is not None
    for name, node in schemas.items():
        document.components.schemas[name] = _schema(node)
    content = {
        "application/json": OpenAPIMediaType(schema=Reference(ref=REF.format(name="ErrorOut")))
    }
    for path, item in (document.paths or {}).items():
        if not path.startswith("/v1"):
            continue
        for method in ("get", "post", "patch", "delete"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            codes = READ_ERRORS if method == "get" else tuple(ERRORS)
            responses = operation.responses if operation.responses is not None else {}
            for code in codes:
                responses[code] = OAResponse(description=ERRORS[code], content=content)
            operation.responses = responses


def _schema(node: Any) -> Schema | Reference:
    if "$ref" in node:
        return Reference(ref=node["$ref"])
    fields: dict[str, Any] = {}
    for key, value in node.items():
        name = _snake(key)
        if key == "type":
            value = OpenAPIType(value)
        elif key == "format":
            value = _FORMATS.get(value)
            if value is None:
                continue
        elif key in ("properties",):
            value = {k: _schema(v) for k, v in value.items()}
        elif key in ("anyOf", "allOf", "oneOf"):
            value = [_schema(v) for v in value]
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _schema(value)
        fields[name] = value
    return Schema(**fields)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
