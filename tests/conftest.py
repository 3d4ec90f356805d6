"""Shared fixtures: real SQLite files, real PostgreSQL schemas, real servers.

With CI=true a test that needs PostgreSQL or Redis fails when the service is
unreachable; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from application.settings import Settings
from workers.runtime import Runtime

PG_ADMIN_URL = os.environ.get("XTOPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("XTOPAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str, error: Exception) -> None:
    message = f"{what} unreachable: {error}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database URL pointing at a fresh, empty schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as error:
        _unavailable("PostgreSQL", error)
    yield f"{PG_ADMIN_URL}?schema={schema}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        _unavailable("Redis", error)
    return REDIS_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'xtopay.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    """A runtime without background threads: tests drive the projections themselves."""
    rt = Runtime(Settings(database_url=database_url))
    yield rt
    rt.close()
