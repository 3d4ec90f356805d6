"""Webhook endpoint commands: register one (its secret is answered once), disable one."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from application.store import Ledger
from domain.errors import NotFound
from domain.webhooks import WebhookEndpoint, new_signing_secret, parse_endpoint


class Webhooks:
    """Commands over webhook endpoints."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def register_endpoint(
        self, tenant_id: UUID, data: dict[str, Any]
    ) -> tuple[WebhookEndpoint, int]:
        """A new endpoint with a fresh signing secret; answers it and its position."""
        url, event_types, description = parse_endpoint(data)
        endpoint = WebhookEndpoint(
            tenant_id=tenant_id.hex,
            url=url,
            event_types=event_types,
            secret=new_signing_secret(),
            description=description,
        )
        recordings = self.ledger.save(endpoint)
        return endpoint, recordings[-1].notification.id

    def endpoint(self, endpoint_id: UUID) -> WebhookEndpoint:
        try:
            return self.ledger.repository.get(endpoint_id)
        except AggregateNotFoundError:
            raise NotFound("no such webhook endpoint", "endpoint") from None

    def disable_endpoint(self, endpoint_id: UUID, reason: str, failing_since: datetime) -> bool:
        """Disable the endpoint (False when it already was)."""
        endpoint = self.endpoint(endpoint_id)
        if endpoint.disabled:
            return False
        endpoint.disable(reason=reason, failing_since=failing_since)
        self.ledger.save(endpoint)
        return True
