"""The access fast path: a cache of `access_state` that the access check reads.

The durable read model is the `access_state` table (projections/access.py). A cache
follows it by position (every row carries the position of the event that last
changed it), so it only ever holds committed rows, and it catches up by itself after
any outage:
- embedded mode: a dict in each process that answers access checks, followed by a
  thread of that process;
- production (XTOPAY_REDIS_URL): one Redis hash per customer, written by the worker
  processes. A field is only overwritten by a newer position (a Lua compare-and-set),
  so two workers syncing at once never put an older state back. While Redis is
  unreachable, or has not been filled yet (its position key is missing, e.g. after a
  restart without persistence), the check reads the table instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
import sqlalchemy as sa

from projections.access import ALL_METERS, WALLET_SCOPE, access_state
from projections.tables import customers, meters

log = logging.getLogger(__name__)

SYNC_BATCH = 5000
SYNC_IDLE_SECONDS = 0.05
REDIS_RETRY_SECONDS = 1.0
FILLED_CHECK_SECONDS = 1.0

Entries = dict[str, tuple[int, list[dict[str, Any]]]]  # scope -> (position, reasons)

# Write each (key, scope) only when the stored position is older than the new one.
_CAS_SCRIPT = """
for i, key in ipairs(KEYS) do
  local scope = ARGV[3 * i - 2]
  local position = tonumber(ARGV[3 * i - 1])
  local current = redis.call('HGET', key, scope)
  local stored = -1
  if current then stored = tonumber(string.match(current, '^(%d+)|')) or -1 end
  if stored < position then
    redis.call('HSET', key, scope, ARGV[3 * i - 1] .. '|' .. ARGV[3 * i])
  end
end
return #KEYS
"""
_MAX_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def blocking_reasons(entries: Entries, meter: str | None) -> list[dict[str, Any]]:
    """The reasons that refuse access to `meter` (every block, without a meter): a
    money budget's block covers every meter."""
    found: list[dict[str, Any]] = []
    for scope in sorted(entries):
        reasons = entries[scope][1]
        if reasons and (
            meter is None or scope in (ALL_METERS, meter) or scope.startswith(WALLET_SCOPE)
        ):
            found.extend(reasons)
    return found


class MemoryAccessStore:
    """The embedded cache: a dict of customers' entries, and the position it holds."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entries] = {}
        self._position: int | None = None
        self._lock = threading.Lock()

    def position(self) -> int | None:
        return self._position

    def apply(self, rows: Sequence[Any], position: int) -> None:
        with self._lock:
            for r in rows:
                # copy on write: a reader holds a whole, unchanging dict
                key = (r.tenant_id, r.customer)
                entries = dict(self._entries.get(key, {}))
                held = entries.get(r.scope)
                if held is None or held[0] < r.position:
                    entries[r.scope] = (r.position, json.loads(r.reasons) if r.blocked else [])
                    self._entries[key] = entries
            self._position = max(self._position or 0, position)

    def entries(self, tenant: str, customer: str) -> Entries:
        return self._entries.get((tenant, customer), {})


class RedisAccessStore:
    """The production cache: `{ns}:access:{tenant}:{customer}` hashes of
    scope -> "position|reasons JSON" (empty reasons: allowed), and
    `{ns}:access:position`, the table position the hashes are complete up to."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.prefix = f"{namespace}:access"
        self.position_key = f"{self.prefix}:position"
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        self._cas = self.client.register_script(_CAS_SCRIPT)
        self._max = self.client.register_script(_MAX_SCRIPT)

    def key(self, tenant: str, customer: str) -> str:
        return f"{self.prefix}:{tenant}:{customer}"

    def position(self) -> int | None:
        value = self.client.get(self.position_key)
        return None if value is None else int(value)

    def apply(self, rows: Sequence[Any], position: int) -> None:
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            args: list[Any] = []
            for r in chunk:
                args += [r.scope, r.position, r.reasons if r.blocked else ""]
            self._cas(keys=[self.key(r.tenant_id, r.customer) for r in chunk], args=args)
        self._max(keys=[self.position_key], args=[position])

    def close(self) -> None:
        self.client.close()


def parse_entries(raw: dict[bytes, bytes]) -> Entries:
    entries: Entries = {}
    for scope, value in raw.items():
        position, _, reasons = value.decode().partition("|")
        entries[scope.decode()] = (int(position), json.loads(reasons) if reasons else [])
    return entries


class AccessSync:
    """Copies `access_state` rows newer than the cache's position into the cache."""

    def __init__(self, store: MemoryAccessStore | RedisAccessStore, engine: sa.Engine) -> None:
        self.store = store
        self.engine = engine

    def run_once(self) -> int:
        """Copy the next rows; answer how many (0: the cache is current)."""
        held = self.store.position()
        start = held or 0
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(access_state)
                .where(access_state.c.position > start)
                .order_by(access_state.c.position)
                .limit(SYNC_BATCH)
            ).all()
        if rows or held is None:  # an empty table still marks the cache as filled
            self.store.apply(rows, rows[-1].position if rows else start)
        return len(rows)

    def run_forever(self, stop: threading.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                if self.run_once() == 0:
                    stop.wait(SYNC_IDLE_SECONDS)
                if failing:
                    log.warning("access cache reachable again; back in step")
                failing = False
            except Exception as error:  # Redis or the database away: the table still answers
                if not failing:
                    log.warning("access cache sync failing (%s); retrying", error)
                failing = True
                stop.wait(REDIS_RETRY_SECONDS)


class AccessReader:
    """Answers access checks from the cache; from the table while the cache cannot."""

    def __init__(self, engine: sa.Engine, redis_url: str | None, namespace: str) -> None:
        self.engine = engine
        self.redis_url = redis_url
        self.namespace = namespace
        self.memory: MemoryAccessStore | None = None if redis_url else MemoryAccessStore()
        self._follower: threading.Thread | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._client: aioredis.Redis | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._redis_down_until = 0.0
        self._filled_at = 0.0
        self._customers: set[tuple[str, str]] = set()
        self._meters: set[tuple[str, str]] = set()

    # Which customers and meters exist (both are never deleted: positives are kept)

    async def customer_exists(self, tenant: str, customer: str) -> bool:
        if (tenant, customer) in self._customers:
            return True
        found = await asyncio.to_thread(self._row_exists, customers, tenant, customer)
        if found:
            self._customers.add((tenant, customer))
        return found

    async def meter_exists(self, tenant: str, key: str) -> bool:
        if (tenant, key) in self._meters:
            return True
        found = await asyncio.to_thread(self._row_exists, meters, tenant, key)
        if found:
            self._meters.add((tenant, key))
        return found

    def _row_exists(self, table: sa.Table, tenant: str, name: str) -> bool:
        column = table.c.external_id if table is customers else table.c.key
        with self.engine.connect() as conn:
            query = sa.select(sa.literal(1)).where(table.c.tenant_id == tenant, column == name)
            return conn.execute(query).first() is not None

    # The check

    async def reasons(self, tenant: str, customer: str, meter: str | None) -> list[dict]:
        """Why `customer` may not use `meter` now (empty: allowed)."""
        if self.memory is not None:
            self._ensure_following()
            return blocking_reasons(self.memory.entries(tenant, customer), meter)
        entries = await self._redis_entries(tenant, customer)
        if entries is None:
            entries = await asyncio.to_thread(self.table_entries, tenant, customer)
        return blocking_reasons(entries, meter)

    async def _redis_entries(self, tenant: str, customer: str) -> Entries | None:
        if time.monotonic() < self._redis_down_until:
            return None
        assert self.redis_url is not None
        try:
            loop = asyncio.get_running_loop()
            if self._client is None or self._client_loop is not loop:
                # an asyncio client belongs to the loop it first ran on (one per server
                # worker; tests may run several loops one after the other)
                self._client = aioredis.Redis.from_url(
                    self.redis_url, socket_connect_timeout=0.25, socket_timeout=0.25
                )
                self._client_loop = loop
            prefix = f"{self.namespace}:access"
            key = f"{prefix}:{tenant}:{customer}"
            if time.monotonic() - self._filled_at < FILLED_CHECK_SECONDS:
                raw = await self._client.hgetall(key)  # the usual path: one round trip
            else:  # is the cache filled (its position key present)? asked once a second
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.hgetall(key)
                    pipe.exists(f"{prefix}:position")
                    raw, filled = await pipe.execute()
                if not filled:
                    return None
                self._filled_at = time.monotonic()
        except (redis.RedisError, OSError) as error:
            log.warning("access cache unreachable (%s); answering from the table", error)
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            self._filled_at = 0.0
            return None
        return parse_entries(raw)

    def table_entries(self, tenant: str, customer: str) -> Entries:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(access_state).where(
                    access_state.c.tenant_id == tenant, access_state.c.customer == customer
                )
            ).all()
        return {r.scope: (r.position, json.loads(r.reasons) if r.blocked else []) for r in rows}

    def refresh(self) -> None:
        """Bring the embedded cache up to the table now (tests; the thread does it too)."""
        self._ensure_following()
        if self.memory is not None:
            sync = AccessSync(self.memory, self.engine)
            while sync.run_once():
                pass

    def _ensure_following(self) -> None:
        """The embedded cache follows the table from this process's first check on."""
        if self._follower is not None or self.memory is None:
            return
        with self._start_lock:
            if self._follower is not None:
                return
            sync = AccessSync(self.memory, self.engine)
            while sync.run_once():  # fill it before the first answer
                pass
            thread = threading.Thread(
                target=sync.run_forever, args=(self._stop,), daemon=True, name="access-cache"
            )
            thread.start()
            self._follower = thread

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
        self._client = None  # its connections belong to a loop that may be gone
