"""Configuration, read once from XTOPAY_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlparse

LATE_EVENT_POLICIES = ("next_period", "current_period", "ignore")


@dataclass(frozen=True)
class Settings:
    """Everything the process is told by its environment; nothing set = embedded mode."""

    database_url: str = "sqlite:///xtopay.db"
    redis_url: str | None = None
    late_event_policy: str = "next_period"
    grace_period: timedelta = timedelta(hours=1)
    webhook_retry_base_seconds: float = 30.0
    redis_namespace: str = "xtopay"  # prefix of every Redis key (broker and access cache)
    projection_batch_size: int = 5000
    billing_interval_seconds: float = 10.0

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres:"))

    @property
    def sqlite_path(self) -> str:
        return self.database_url.removeprefix("sqlite:///")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        policy = env.get("XTOPAY_LATE_EVENT_POLICY", "next_period")
        if policy not in LATE_EVENT_POLICIES:
            raise ValueError(f"XTOPAY_LATE_EVENT_POLICY must be one of {LATE_EVENT_POLICIES}")
        return cls(
            database_url=env.get("XTOPAY_DATABASE_URL") or "sqlite:///xtopay.db",
            redis_url=env.get("XTOPAY_REDIS_URL") or None,
            late_event_policy=policy,
            grace_period=_duration(env.get("XTOPAY_GRACE_PERIOD", "3600")),
            webhook_retry_base_seconds=float(env.get("XTOPAY_WEBHOOK_RETRY_BASE_SECONDS", "30")),
            redis_namespace=env.get("XTOPAY_REDIS_NAMESPACE") or "xtopay",
            projection_batch_size=int(env.get("XTOPAY_PROJECTION_BATCH_SIZE", "5000")),
            billing_interval_seconds=float(env.get("XTOPAY_BILLING_INTERVAL_SECONDS", "10")),
        )

    def eventsourcing_env(self) -> dict[str, str]:
        """The eventsourcing library's own configuration for our store."""
        if not self.is_postgres:
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.sqlite_path,
                "SQLITE_LOCK_TIMEOUT": "30",
                "APPLICATION_RECORDER_TOPIC": "application.store:SQLiteLedgerRecorder",
            }
        url = urlparse(self.database_url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": url.username or "postgres",
            "POSTGRES_PASSWORD": url.password or "",
            "POSTGRES_SCHEMA": _schema_of(self.database_url),
            "POSTGRES_POOL_SIZE": "8",
            "POSTGRES_MAX_OVERFLOW": "8",
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_LOCK_TIMEOUT": "10",
            "APPLICATION_RECORDER_TOPIC": "application.store:PostgresLedgerRecorder",
        }

    def sqlalchemy_url(self) -> str:
        if self.is_postgres:
            url = self.database_url.split("?")[0]
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return "sqlite:///" + self.sqlite_path


def _schema_of(url: str) -> str:
    query = urlparse(url).query
    for part in query.split("&"):
        if part.startswith("schema="):
            return part.split("=", 1)[1]
    return "public"


def _duration(text: str) -> timedelta:
    """Seconds ('3600'), or a number with a unit: '90s', '15m', '1h', '2d'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    if text and text[-1] in units:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    return timedelta(seconds=float(text))
