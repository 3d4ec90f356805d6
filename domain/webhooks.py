"""Webhook endpoints and Standard Webhooks signatures.

An endpoint is a tenant's URL subscribed to some event types. Each endpoint has its
own signing secret (`whsec_` + base64 of 32 random bytes). The secret must be kept to
sign every message, so it is recorded in the endpoint's `Registered` event, like any
other fact the tenant gave us; the API shows it once, in the reply that creates the
endpoint, and never lists it again.

Signing follows https://www.standardwebhooks.com: the signed content is
`{webhook-id}.{webhook-timestamp}.{body}`, and `webhook-signature` is
`v1,` + base64(HMAC-SHA256(secret bytes, content)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidInput

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
EVENT_TYPES = (
    "budget.threshold_crossed",
    "access.blocked",
    "access.restored",
    "wallet.topped_up",
    "wallet.low_balance",
    "wallet.depleted",
    "invoice.finalized",
    "usage.late_event",
)
ALL_TYPES = "*"
MAX_URL_LENGTH = 2048
# An endpoint that has failed every attempt for this long is disabled, and a
# message not delivered this long after its first attempt is given up.
FAILING_LIMIT = timedelta(days=3)
MAX_RETRY_DELAY = timedelta(days=1)


def new_signing_secret() -> str:
    """A fresh endpoint secret in the Standard Webhooks form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (the base64 after the prefix)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one delivery attempt."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers; the id is the same on every attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def retry_delay(base_seconds: float, attempt: int) -> timedelta:
    """Exponential back-off after failed attempt number `attempt` (1, 2, ...):
    base, 2 x base, 4 x base, ..., at most a day apart."""
    exponent = min(max(attempt - 1, 0), 32)
    return min(timedelta(seconds=base_seconds * 2**exponent), MAX_RETRY_DELAY)


def parse_endpoint(data: dict[str, Any]) -> tuple[str, list[str], str | None]:
    """Validate {"url", "event_types", "description"}; InvalidInput names the field."""
    url = data.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidInput("url is required", "url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url is longer than {MAX_URL_LENGTH} characters", "url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an absolute http or https URL", "url")
    types = data.get("event_types")
    if not isinstance(types, list) or not types:
        raise InvalidInput("event_types must be a non-empty list", "event_types")
    for index, kind in enumerate(types):
        if kind != ALL_TYPES and kind not in EVENT_TYPES:
            raise InvalidInput(
                f"unknown event type {kind!r}; one of {', '.join(EVENT_TYPES)} or '*'",
                f"event_types.{index}",
            )
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string", "description")
    return url, list(dict.fromkeys(types)), description


def subscribes(event_types: list[str], kind: str) -> bool:
    return ALL_TYPES in event_types or kind in event_types


class WebhookEndpoint(Aggregate):
    """A tenant's URL that receives signed messages for the event types it chose."""

    @event("Registered")
    def __init__(
        self,
        tenant_id: str,
        url: str,
        event_types: list[str],
        secret: str,
        description: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.url = url
        self.event_types = list(event_types)
        self.secret = secret
        self.description = description
        self.disabled = False

    @event("Disabled")
    def disable(self, reason: str, failing_since: datetime) -> None:
        """No more messages are sent to the endpoint: every attempt has failed since
        `failing_since`, for longer than the limit."""
        self.disabled = True
