"""End-to-end support: a real `xtopay serve` subprocess, and helpers for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["XTOPAY_DATABASE_URL"] = database_url
    env.pop("XTOPAY_REDIS_URL", None)  # in-process queue: nothing else to run
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ServerProcess:
    """One `python -m api.cli serve` subprocess, its output drained by threads."""

    database_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    lines: list[str] = field(default_factory=list)
    key: str | None = None
    process: subprocess.Popen[str] | None = None
    _key_seen: threading.Event = field(default_factory=threading.Event)
    _listening: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return server_env(self.database_url)

    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    def _drain(self, stream: Any, name: str) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            self.lines.append(f"[{name}] {line}")
            if line.startswith("xtp_sk_") and self.key is None:
                self.key = line.strip()
                self._key_seen.set()
            if line.startswith("Xtopay listening"):
                self._listening.set()
        stream.close()

    def start(self, expect_key: bool = True) -> ServerProcess:
        """Start the server; with `expect_key`, wait for the development tenant's key."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: granian's worker goes with it
        )
        for stream, name in ((self.process.stdout, "out"), (self.process.stderr, "err")):
            threading.Thread(target=self._drain, args=(stream, name), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        marker = self._key_seen if expect_key else self._listening
        while not marker.wait(0.05):
            self._check_alive()
            if time.monotonic() > deadline:
                self.stop()
                what = "its key" if expect_key else "its banner"
                pytest.fail(f"server never printed {what}:\n{self.output()}")
        self._wait_healthy(deadline)
        return self

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            time.sleep(0.2)  # let the drain threads collect the last lines
            pytest.fail(f"server exited with {self.process.returncode}:\n{self.output()}")

    def _wait_healthy(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"GET /health never answered 200:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the process group after STOP_TIMEOUT seconds."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill_group()
                process.wait(5)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._group_alive():  # a server worker that outlived its parent
            if time.monotonic() > deadline:
                self._kill_group()
                break
            time.sleep(0.05)

    def _group_alive(self) -> bool:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class Server:
    """What a test gets: the running server, its dev tenant's key and a client using it."""

    process: ServerProcess
    key: str
    client: httpx.Client

    @property
    def base_url(self) -> str:
        return self.process.base_url

    @property
    def env(self) -> dict[str, str]:
        return self.process.env

    def client_for(self, key: str | None) -> httpx.Client:
        """Another client on the same server (no Authorization header when key is None)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def create_tenant(self, name: str) -> str:
        return create_tenant_key(self, name)


def create_tenant_key(server: Server, name: str) -> str:
    """`python -m api.cli tenants create NAME` on the server's store; the new secret key."""
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "tenants", "create", name],
        cwd=server.process.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    key = done.stdout.strip().splitlines()[-1].strip()
    assert key.startswith("xtp_sk_"), done.stdout
    return key


# Helpers shared by the test modules


def uid(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def iso(instant: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the API writes instants."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def hours_ago(hours: int) -> datetime:
    """A whole UTC hour `hours` before the current one: recent enough to be ingested."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=hours)


def days_ago_midnight(days: int) -> datetime:
    """UTC midnight `days` days before today."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def eventually(
    fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0, interval: float = 0.05
) -> T:
    """Call `fetch` until `done(result)` or the timeout; answer the last result either way
    (the caller asserts on it, so a failure shows what was last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a response that must have `status`."""
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of an error reply, checking the contract's envelope."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message", "field"}, body
    assert isinstance(body["error"]["type"], str) and body["error"]["type"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def create_meter(client: httpx.Client, **spec: Any) -> dict[str, Any]:
    spec.setdefault("name", spec["key"])
    return ok(client.post("/v1/meters", json=spec), 201)


def usage_rows(client: httpx.Client, meter: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """GET /v1/meters/{meter}/usage rows."""
    return ok(client.get(f"/v1/meters/{meter}/usage", params=params))["data"]


def usage_value(client: httpx.Client, meter: str, params: dict[str, Any]) -> str | None:
    """The single row's value over the range (None when the meter has no row)."""
    rows = usage_rows(client, meter, params)
    assert len(rows) <= 1, rows
    return rows[0]["value"] if rows else None


def wait_value(
    client: httpx.Client, meter: str, expected: str | None, params: dict[str, Any]
) -> str | None:
    """Poll (up to 5 s) until the meter's single value is `expected`; answer the last value."""
    return eventually(lambda: usage_value(client, meter, params), lambda v: v == expected)


def wait_rows(
    client: httpx.Client,
    meter: str,
    params: dict[str, Any],
    done: Callable[[list[dict[str, Any]]], bool],
) -> list[dict[str, Any]]:
    """Poll (up to 5 s) until `done(rows)`; answer the last rows."""
    return eventually(lambda: usage_rows(client, meter, params), done)


def list_events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """GET /v1/usage-events (first page of up to 1000)."""
    params.setdefault("limit", 1000)
    return ok(client.get("/v1/usage-events", params=params))["data"]


def wait_events(client: httpx.Client, count: int, **params: Any) -> list[dict[str, Any]]:
    """Poll (up to 5 s) until GET /v1/usage-events lists `count` events; answer them."""
    return eventually(lambda: list_events(client, **params), lambda e: len(e) == count)


def send(client: httpx.Client, **event: Any) -> dict[str, Any]:
    """POST one usage event that must be accepted (or be a duplicate); its reply."""
    return ok(client.post("/v1/usage-events", json=event))
