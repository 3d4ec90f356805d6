"""Process plumbing for the benchmarks: a scratch PostgreSQL schema, an `xtopay serve`
subprocess, CPU accounting from /proc, and an optional py-spy profile.

Everything here talks to 127.0.0.1 only and cleans up after itself: the schema is
dropped and the server's whole process group is stopped (SIGKILL as a last resort)
even when a phase fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# PostgreSQL


def check_local(url: str) -> None:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"benchmarks only talk to 127.0.0.1, not {host!r}")


@contextlib.contextmanager
def scratch_schema(admin_url: str) -> Iterator[str]:
    """A fresh schema (its name is yielded), dropped with everything in it afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def server_version(admin_url: str) -> str:
    with psycopg.connect(admin_url, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return row[0] if row else "?"


# The server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`xtopay serve --no-workers` in its own process group, on a free local port."""

    def __init__(self, database_url: str, workers: int) -> None:
        self.database_url = database_url
        self.workers = workers
        self.port = free_port()
        self.secret: str | None = None
        self.output: list[str] = []
        self._got_secret = threading.Event()
        self.process: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        script = Path(sys.executable).with_name("xtopay")
        program = [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]
        return [
            *program,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-workers",
        ]

    def start(self, timeout: float = 90.0) -> None:
        env = {**os.environ, "XTOPAY_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, so it can be stopped whole
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.2)
        if not self._got_secret.wait(5):
            raise RuntimeError(f"no xtp_sk_ line in the server's output:\n{self.tail()}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if len(self.output) < 2000:
                self.output.append(line)
            if line.startswith("xtp_sk_") and self.secret is None:
                self.secret = line.strip()
                self._got_secret.set()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/health"), timeout=2) as reply:
                return reply.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post_json(self, path: str, payload: dict, timeout: float = 30.0) -> dict:
        request = urllib.request.Request(
            self.url(path),
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output[-lines:])

    def pids(self) -> list[int]:
        """The server's processes: the granian supervisor and its workers."""
        return [] if self.process is None else process_tree(self.process.pid)

    def stop(self) -> None:
        """SIGTERM the supervisor (granian stops its workers); SIGKILL the group if needed."""
        if self.process is None:
            return
        group = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                self.process.wait(10)
        deadline = time.monotonic() + 10
        while group_members(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_members(group):  # a worker outlived its supervisor
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


# CPU accounting from /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces: the fields after it follow the last ')'
    return text[text.rindex(")") + 2 :].split()


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields:
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def group_members(group: int) -> list[int]:
    return [p for p in _all_pids() if (f := _stat_fields(p)) and int(f[2]) == group]


def postgres_pids() -> list[int]:
    found = []
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                found.append(pid)
    return found


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each live process, in seconds."""
    times = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuSnapshot:
    client: float
    server: dict[int, float]
    postgres: dict[int, float]
    machine: tuple[float, float]
    wall: float


class CpuMeter:
    """CPU used by the client (this process), the server and PostgreSQL over a phase,
    in cores (CPU seconds per wall second). A PostgreSQL backend that exits during
    the phase takes its CPU time with it; the pooled connections used here do not."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def snapshot(self) -> CpuSnapshot:
        times = os.times()
        return CpuSnapshot(
            client=times.user + times.system,
            server=cpu_seconds(self.server.pids()),
            postgres=cpu_seconds(postgres_pids()),
            machine=machine_busy(),
            wall=time.perf_counter(),
        )

    @staticmethod
    def usage(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        wall = max(after.wall - before.wall, 1e-9)

        def spent(a: dict[int, float], b: dict[int, float]) -> float:
            return sum(t - a.get(pid, 0.0) for pid, t in b.items())

        busy = after.machine[0] - before.machine[0]
        total = max(after.machine[1] - before.machine[1], 1)
        used = {
            "client_cores": (after.client - before.client) / wall,
            "server_cores": spent(before.server, after.server) / wall,
            "postgres_cores": spent(before.postgres, after.postgres) / wall,
        }
        busy_cores = (os.cpu_count() or 1) * busy / total
        return {
            **{k: round(v, 3) for k, v in used.items()},
            # anything else running on the machine (other test suites, the kernel)
            "other_cores": round(max(busy_cores - sum(used.values()), 0.0), 3),
            "machine_busy_pct": round(100 * busy / total, 1),
        }


def background_busy(seconds: float = 1.0) -> float:
    """How busy the machine is with nothing of ours running, in percent."""
    before = machine_busy()
    time.sleep(seconds)
    after = machine_busy()
    return round(100 * (after[0] - before[0]) / max(after[1] - before[1], 1), 1)


# py-spy


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record` of the server's Python processes for the length of a phase."""

    def __init__(self, server: Server, output: Path) -> None:
        self.server = server
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        program = py_spy()
        if program is None or self.server.process is None:
            return self
        self.process = subprocess.Popen(
            [
                program,
                "record",
                "--pid",
                str(self.server.process.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(self.output),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let it attach to every worker before the phase begins
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


PROJECT_CODE = ("api/", "application/", "domain/", "projections/", "workers/")
WAITS = {
    "Connection.wait (psycopg/connection.py)": "waiting on PostgreSQL",
    "EpollSelector.select (python3.11/selectors.py)": "event loop idle",
    "EpollSelector.select (selectors.py)": "event loop idle",
}


def summarize_profile(path: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Where the server's samples went, as a share of all samples: `self` counts the
    innermost frame only (waits are labelled), `project` every Xtopay function on the
    stack (so a handler includes what it calls)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    if not path.exists():
        return {"self": [], "project": []}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in (_frame(raw) for raw in stack.split(";")) if f]
        if not frames:
            continue
        samples += count
        leaf = frames[-1]
        own[f"{leaf} [{WAITS[leaf]}]" if leaf in WAITS else leaf] += count
        for name in {f for f in frames if _is_project(f)}:
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / samples, 1)) for name, n in counter.most_common(top)]

    return {"samples": [("all", samples)], "self": share(own), "project": share(inclusive)}


def _is_project(frame: str) -> bool:
    where = frame.partition(" (")[2]
    return where.startswith(PROJECT_CODE) and not where.startswith("api/cli.py")


def _frame(raw: str) -> str:
    """'func (path/to/module.py:123)' -> 'func (to/module.py)'; process and thread
    pseudo-frames are dropped."""
    raw = raw.strip()
    if raw.startswith(("process ", "thread ")):
        return ""
    name, _, where = raw.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(where.split("/")[-2:])
    return f"{name} ({short})" if short else name


def wait_for_quiet(limit: float, threshold: float = 10.0) -> float:
    """Wait (at most `limit` seconds) until the machine is less than `threshold` percent
    busy without us, so someone else's test suite does not skew a run; answers the
    last reading."""
    deadline = time.monotonic() + limit
    busy = background_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = background_busy()
    return busy
