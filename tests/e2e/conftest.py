"""End-to-end fixtures: a real `xtopay serve` process over real HTTP, on SQLite and PostgreSQL.

`server` is module-scoped (one process per test module and backend: a start takes about
two seconds, so a process per test would blow the time budget); tests share it and keep
out of each other's way with unique customer ids, meter keys and event types (`uid`).
`fresh_server` builds a new process on the function-scoped `database_url` fixture of
tests/conftest.py, for tests that need a store of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL, _unavailable
from tests.e2e.support import Server, ServerProcess


def _serve(request: pytest.FixtureRequest, database_url: str, workdir: Path) -> Iterator[Server]:
    failed_before = request.session.testsfailed
    process = ServerProcess(database_url, workdir).start()
    assert process.key is not None
    client = httpx.Client(
        base_url=process.base_url,
        headers={"Authorization": f"Bearer {process.key}"},
        timeout=30,
    )
    try:
        yield Server(process, process.key, client)
    finally:
        client.close()
        process.stop()
        if request.session.testsfailed > failed_before:  # show what the server said
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\n--- output of the server on {database_url} ---")
                reporter.write_line(process.output())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def e2e_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh store for one module: a SQLite file, or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('e2e-sqlite') / 'xtopay.db'}"
        return
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as error:
        _unavailable("PostgreSQL", error)
    yield f"{PG_ADMIN_URL}?schema={schema}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    e2e_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A running server on a store of its own, shared by the tests of one module."""
    yield from _serve(request, e2e_database_url, tmp_path_factory.mktemp("e2e-cwd"))


@pytest.fixture
def fresh_server(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[Server]:
    """A server on a brand-new store, for one test (the existing `database_url` fixture)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    yield from _serve(request, database_url, workdir)


@pytest.fixture(scope="module")
def other_tenant(server: Server) -> Iterator[httpx.Client]:
    """A client authenticated as a second tenant of the module's server."""
    key = server.create_tenant(f"other-{uuid.uuid4().hex[:8]}")
    client = server.client_for(key)
    yield client
    client.close()
