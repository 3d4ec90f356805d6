"""The domain's error family. Every business rule raises one of these with context."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a business rule raises; `kind` maps it to an HTTP status."""

    kind = "invalid_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    """The request breaks a validation rule; `field` is a dotted path to the culprit."""

    kind = "validation_error"


class NotFound(DomainError):
    """No such resource for this tenant (another tenant's resource looks the same)."""

    kind = "not_found"


class Conflict(DomainError):
    """The request contradicts something already recorded."""

    kind = "conflict"
