"""Tenants and their API keys. Keys are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, InvalidInput

KEY_PREFIX = "xtp_sk_"
LATE_EVENT_POLICIES = ("next_period", "current_period", "ignore")


def hash_key(secret: str) -> str:
    """The stored form of an API key: hex SHA-256 of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh secret key; shown once, never stored in the clear."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def tenant_id_for(name: str) -> UUID:
    """Deterministic tenant id: one tenant per name."""
    return uuid5(NAMESPACE_URL, f"xtopay:tenant:{name}")


def api_key_id_for(key_hash: str) -> UUID:
    """Deterministic key id, so a request's key is found by its hash alone."""
    return uuid5(NAMESPACE_URL, f"xtopay:api-key:{key_hash}")


class Tenant(Aggregate):
    """A company using Xtopay: everything else is scoped to one tenant."""

    @event("Created")
    def __init__(self, name: str) -> None:
        self.name = name
        self.late_event_policy: str | None = None

    @staticmethod
    def create_id(name: str) -> UUID:
        return tenant_id_for(name)

    @event("LateEventPolicySet")
    def set_late_event_policy(self, policy: str | None) -> None:
        """What happens to usage arriving after its period closed (None: the server default)."""
        self.late_event_policy = policy


def check_late_event_policy(policy: object) -> str | None:
    if policy is not None and policy not in LATE_EVENT_POLICIES:
        raise InvalidInput(
            f"late_event_policy must be one of {', '.join(LATE_EVENT_POLICIES)} or null",
            "late_event_policy",
        )
    return policy  # type: ignore[return-value]


class ApiKey(Aggregate):
    """A secret key that authenticates one tenant's requests."""

    @event("Issued")
    def __init__(self, key_hash: str, tenant_id: str, label: str) -> None:
        self.key_hash = key_hash
        self.tenant_id = tenant_id
        self.label = label
        self.revoked = False

    @staticmethod
    def create_id(key_hash: str, tenant_id: str, label: str) -> UUID:
        return api_key_id_for(key_hash)

    def check_active(self) -> None:
        if self.revoked:
            raise Conflict(f"key {self.key_hash[:8]}... is already revoked")

    @event("Revoked")
    def revoke(self) -> None:
        """The key stopped working; requests with it answer 401 from now on."""
        self.revoked = True
