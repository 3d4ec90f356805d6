"""Audit replay: rebuild every read model from the log into scratch tables and compare
them with the live ones (verify), or swap them in (rebuild).

While the final comparison or swap runs, the live projections' tracking rows are
locked, so the live read models stand still at a known log position; ingestion and
queries keep going.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from eventsourcing.utils import get_topic

from domain.billing import ClosedPeriod, LateDecision, SubscriptionState, plan_spec
from domain.instants import from_us, to_us
from domain.invoicing import money, plain
from domain.trace import Fact
from domain.wallets import Wallet, ledger_identity
from projections.access import ACCESS_TABLES, AccessProjection
from projections.billing_view import (
    customer_subscriptions,
    invoice_line_rows,
    load_facts,
    usage_event_rows,
)
from projections.compare import Difference
from projections.db import make_engine
from projections.invoices import BILLING_TABLES, InvoiceProjection, invoices
from projections.outbox import OUTBOX_TABLES, OutboxProjection
from projections.runner import Projection, Runner, create_tables, locked_position
from projections.tables import USAGE_TABLES, meter_facts, tracking, usage_events
from projections.usage import UsageProjection
from projections.usage_view import list_meters
from projections.wallets import WALLET_TABLES, WalletProjection, wallets
from workers.billing import ViewPlans, _adjustment_draft, billed_traces
from workers.runtime import Runtime

Progress = Callable[[str, int, int], None]  # (projection, position, target)


@dataclass(frozen=True)
class ProjectionSpec:
    """A projection and the tables it owns."""

    name: str
    factory: Callable[[], Projection]
    tables: tuple[sa.Table, ...]


def projection_specs() -> list[ProjectionSpec]:
    return [
        ProjectionSpec("usage", UsageProjection, USAGE_TABLES),
        ProjectionSpec("invoices", InvoiceProjection, BILLING_TABLES),
        ProjectionSpec("wallets", WalletProjection, WALLET_TABLES),
        ProjectionSpec("access", AccessProjection, ACCESS_TABLES),
        ProjectionSpec("outbox", OutboxProjection, OUTBOX_TABLES),
    ]


@contextmanager
def scratch_engine(runtime: Runtime) -> Iterator[sa.Engine]:
    """Empty read-model tables beside the live ones: a scratch schema on PostgreSQL,
    a scratch file on SQLite. Removed afterwards."""
    settings = runtime.settings
    if settings.is_postgres:
        schema = f"xtopay_scratch_{uuid.uuid4().hex[:10]}"
        with runtime.engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        engine = make_engine(settings.sqlalchemy_url(), schema)
        try:
            create_tables(engine)
            yield engine
        finally:
            engine.dispose()
            with runtime.engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        return
    path = Path(settings.sqlite_path).with_name(f".xtopay-scratch-{uuid.uuid4().hex[:10]}.db")
    engine = make_engine(f"sqlite:///{path}")
    try:
        create_tables(engine)
        yield engine
    finally:
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.remove(f"{path}{suffix}")


def _replay(
    runtime: Runtime, engine: sa.Engine, live: bool, progress: Progress | None
) -> dict[str, Runner]:
    """Replay each projection into `engine`: up to the live projection's position when
    `live` (a verify never overtakes what it compares with), else to the log's head."""
    head = runtime.ledger.recorder.max_notification_id() or 0
    runners = {}
    for spec in projection_specs():
        target = (runtime.view.max_tracking_id(spec.name) or 0) if live else head
        runner = Runner(runtime.ledger.recorder, engine, spec.factory(), batch_size=5000)
        report = (
            (lambda pos, name=spec.name, end=target: progress(name, pos, end)) if progress else None
        )
        runner.catch_up(stop=target, progress=report)
        runners[spec.name] = runner
    return runners


def verify(runtime: Runtime, progress: Progress | None = None, limit: int = 50) -> list[Difference]:
    """Differences between the live read models and a replay of the whole log."""
    with scratch_engine(runtime) as scratch:
        runners = _replay(runtime, scratch, True, progress)
        with runtime.engine.begin() as live:
            positions = _freeze(live)
            for spec in projection_specs():
                runners[spec.name].catch_up(stop=positions.get(spec.name, 0))
            # read before `replayed` opens: on SQLite it holds the scratch file's lock
            replayed_at = {name: runner.position() for name, runner in runners.items()}
            with scratch.connect() as replayed:
                found: list[Difference] = []
                for spec in projection_specs():
                    live_pos = positions.get(spec.name, 0)
                    if replayed_at[spec.name] != live_pos:
                        found.append(
                            Difference(
                                "projection_tracking",
                                (spec.name,),
                                "position",
                                live_pos,
                                replayed_at[spec.name],
                            )
                        )
                    for table in spec.tables:
                        found += compare_table(live, replayed, table, limit - len(found))
                        if len(found) >= limit:
                            return found
                return found


def rebuild(runtime: Runtime, progress: Progress | None = None) -> dict[str, int]:
    """Replace the live read models with a replay of the log; answer the positions.

    The replay is built aside while the live models keep serving; the swap happens
    in one transaction at the end, so readers see the old rows until it commits."""
    with scratch_engine(runtime) as scratch:
        runners = _replay(runtime, scratch, False, progress)
        if runtime.settings.is_postgres:
            return _swap_postgres(runtime, scratch, runners)
        return _swap_sqlite(runtime, scratch, runners)


def _freeze(live: sa.Connection) -> dict[str, int]:
    """Lock every projection's tracking row (its runner waits) and read the positions."""
    names = [spec.name for spec in projection_specs()]
    return {name: locked_position(live, name) for name in names}


def _swap_postgres(
    runtime: Runtime, scratch: sa.Engine, runners: dict[str, Runner]
) -> dict[str, int]:
    scratch_schema = _schema_of(scratch)
    with runtime.engine.begin() as live:
        _freeze(live)
        head = runtime.ledger.recorder.max_notification_id() or 0
        positions = {}
        for spec in projection_specs():
            runners[spec.name].catch_up(stop=head)
            positions[spec.name] = runners[spec.name].position()
            for table in spec.tables:
                live.execute(sa.delete(table))
                live.exec_driver_sql(
                    f"INSERT INTO {table.name} SELECT * FROM {scratch_schema}.{table.name}"
                )
            _set_position(live, spec.name, positions[spec.name])
        return positions


def _swap_sqlite(
    runtime: Runtime, scratch: sa.Engine, runners: dict[str, Runner]
) -> dict[str, int]:
    path = scratch.url.database
    raw = runtime.engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        dbapi.execute(f"ATTACH DATABASE '{path}' AS scratch")
        try:
            dbapi.execute("BEGIN IMMEDIATE")  # the live runner waits from here
            head = runtime.ledger.recorder.max_notification_id() or 0
            positions = {}
            for spec in projection_specs():
                runners[spec.name].catch_up(stop=head)
                positions[spec.name] = runners[spec.name].position()
                for table in spec.tables:
                    dbapi.execute(f"DELETE FROM main.{table.name}")
                    dbapi.execute(
                        f"INSERT INTO main.{table.name} SELECT * FROM scratch.{table.name}"
                    )
                dbapi.execute(
                    "UPDATE main.projection_tracking SET position = ? WHERE name = ?",
                    (positions[spec.name], spec.name),
                )
            dbapi.execute("COMMIT")
        except BaseException:
            dbapi.execute("ROLLBACK")
            raise
        finally:
            dbapi.execute("DETACH DATABASE scratch")
    finally:
        raw.close()
    return positions


def _set_position(conn: sa.Connection, name: str, position: int) -> None:
    updated = conn.execute(
        sa.update(tracking).where(tracking.c.name == name).values(position=position)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(tracking).values(name=name, position=position))


def _schema_of(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT current_schema()").scalar()


def compare_table(
    live: sa.Connection, replayed: sa.Connection, table: sa.Table, limit: int
) -> list[Difference]:
    """Walk both copies in primary-key order side by side; report what differs."""
    keys = list(table.primary_key.columns)
    # Byte order on both sides, the order Python compares the keys in below.
    order = [
        sa.collate(k, "C")
        if live.dialect.name == "postgresql" and isinstance(k.type, sa.String)
        else k
        for k in keys
    ]
    query = sa.select(table).order_by(*order)
    left = live.execution_options(stream_results=True, yield_per=5000).execute(query).mappings()
    right = (
        replayed.execution_options(stream_results=True, yield_per=5000).execute(query).mappings()
    )
    found: list[Difference] = []
    a, b = next(left, None), next(right, None)
    while (a is not None or b is not None) and len(found) < limit:
        ka = None if a is None else tuple(a[k.name] for k in keys)
        kb = None if b is None else tuple(b[k.name] for k in keys)
        if kb is None or (ka is not None and ka < kb):
            found.append(Difference(table.name, ka, "(row)", "present", "missing"))
            a = next(left, None)
        elif ka is None or kb < ka:
            found.append(Difference(table.name, kb, "(row)", "missing", "present"))
            b = next(right, None)
        else:
            for column in table.columns:
                if a[column.name] != b[column.name]:
                    found.append(
                        Difference(table.name, ka, column.name, a[column.name], b[column.name])
                    )
            a, b = next(left, None), next(right, None)
    return found


# ------------------------------------------------------------------------------ trace

# (connection, a line's trace reference) -> (fact, contribution) in log order
TraceEvents = Callable[[sa.Connection, dict[str, Any]], list[tuple[Fact, Decimal]]]
_EXACT = Context(prec=200)  # sums of contributions (20 decimal places each) stay exact


def invoice_hex(text: str) -> str:
    """An invoice id as an operator types it (`inv_...`, a UUID or its hex), as stored."""
    try:
        return uuid.UUID(text.strip().removeprefix("inv_")).hex
    except ValueError:
        raise LookupError(f"no invoice {text!r} (not an invoice id)") from None


def trace(runtime: Runtime, invoice_id: str, line_events: TraceEvents) -> dict[str, Any]:
    """An invoice with every line and the usage events behind it.

    `line_events` is the trace behind `GET /v1/invoices/{id}/lines/{line_id}/events`
    (`api.billing_views.trace_events`); it is passed in because the workers layer may not
    import the api layer. Each line carries `events` (`{"id", "idempotency_key",
    "timestamp", "value"}` in log order, `value` being the event's contribution),
    `events_total` (their exact sum; null for fees and true-ups, which have no usage) and
    `adds_up` (`events_total` equals the line's quantity). `consistent`: every line adds
    up. LookupError when there is no such invoice."""
    oid = invoice_hex(invoice_id)
    with runtime.read_engine.connect() as conn:
        row = conn.execute(sa.select(invoices).where(invoices.c.invoice_id == oid)).first()
        if row is None:
            raise LookupError(f"no invoice {invoice_id!r}")
        lines = [
            _traced_line(conn, line, row.currency, line_events)
            for line in invoice_line_rows(conn, [oid])[oid]
        ]
    currency = row.currency
    return {
        "id": "inv_" + row.invoice_id,
        "object": "invoice",
        "tenant": "ten_" + row.tenant_id,
        "customer": row.customer,
        "subscription": "sub_" + row.subscription_id,
        "kind": row.kind,
        "corrects": None if row.corrects is None else "inv_" + row.corrects,
        "status": row.status,
        "period_start": _instant(row.period_start_us),
        "period_end": _instant(row.period_end_us),
        "currency": currency,
        "plan": row.plan,
        "plan_version": row.plan_version,
        "subtotal": _money(row.subtotal, currency),
        "credits_applied": _money(row.credits_applied, currency),
        "wallet_applied": _money(row.wallet_applied, currency),
        "total": _money(row.total, currency),
        "closed_at_position": row.closed_at_position,
        "lines": lines,
        "consistent": all(line["adds_up"] for line in lines),
    }


def _traced_line(
    conn: sa.Connection, line: Any, currency: str, line_events: TraceEvents
) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": "il_" + line.line_id,
        "number": line.number,
        "type": line.kind,
        "description": line.description,
        "meter": line.meter,
        "quantity": plain(line.quantity),
        "amount": money(
            line.amount_rounded if line.amount_rounded is not None else line.amount, currency
        ),
        "amount_exact": plain(line.amount),
        "period_start": _instant(line.period_start_us),
        "period_end": _instant(line.period_end_us),
        "events": [],
        "events_total": None,
        "adds_up": True,
    }
    if line.trace is None:  # a fee or a true-up: no usage behind it
        return shown
    found = line_events(conn, json.loads(line.trace))
    stored = usage_event_rows(conn, [fact.event_id for fact, _ in found])
    shown["events"] = [
        {
            "id": "evt_" + fact.event_id,
            "idempotency_key": stored[fact.event_id].idempotency_key
            if fact.event_id in stored
            else None,
            "timestamp": _instant(fact.occurred_us),
            "value": plain(value),
        }
        for fact, value in found
    ]
    with localcontext(_EXACT):
        total = sum((value for _, value in found), Decimal(0))
    shown["events_total"] = plain(total)
    shown["adds_up"] = total == line.quantity
    return shown


def _instant(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")


def _money(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else money(value, currency)


# ---------------------------------------------------------------------------- leakage

# Where an accepted usage event is. Counted per (event, meter) fact, except `cancelled`
# and `unmetered`, counted per event (neither has facts).
BUCKETS = (
    "invoiced",  # counted by exactly one finalized invoice line
    "open_period",  # its period is not closed yet (or next_period late usage awaiting it)
    "late_pending",  # arrived after its period closed; the next billing step decides it
    "late_no_change",  # decided current_period; the recomputed invoice did not change
    "ignored",  # late, and the late-event policy said ignore
    "cancelled",  # cancelled while its period was open
    "unpriced",  # the plan version billing its period does not price this meter
    "no_subscription",  # no subscription of the customer covers its timestamp
    "unmetered",  # no meter counts it
)


@dataclass(frozen=True)
class Leak:
    """A usage event (as one meter counts it) in none of the buckets, or in two."""

    event_id: str
    meter: str | None
    customer: str
    tenant_id: str
    timestamp: str
    why: str

    def __str__(self) -> str:
        return (
            f"evt_{self.event_id} meter {self.meter or '-'} customer {self.customer} "
            f"(ten_{self.tenant_id}) at {self.timestamp}: {self.why}"
        )


@dataclass
class LeakageReport:
    events: int = 0  # accepted usage events looked at
    facts: int = 0  # (event, meter) facts among them
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    leaked: int = 0  # facts in no bucket or in two
    leaks: list[Leak] = field(default_factory=list)  # the first `limit` of them
    wallets: int = 0  # wallets whose ledger was checked
    wallet_problems: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)  # read models' and log's

    @property
    def ok(self) -> bool:
        return self.leaked == 0 and not self.wallet_problems


def leakage(
    runtime: Runtime,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
    limit: int = 1000,
) -> LeakageReport:
    """Account for every accepted usage event with a timestamp in [start, end): which
    bucket each (event, meter) fact is in, decided from the subscriptions' billing cursor
    (closed periods, their close positions, late decisions) and the invoice lines' traces
    (`load_facts`, as billing and the trace endpoint read them); then the wallet ledgers.

    The usage and billing read models are read in one snapshot; facts the billing read
    model has not caught up with land in `open_period` / `late_pending`, never in leaks.
    """
    report = LeakageReport()
    window = (None if start is None else to_us(start), None if end is None else to_us(end))
    u = usage_events
    with _snapshot(runtime) as conn:
        report.positions = {
            r.name: r.position
            for r in conn.execute(
                sa.select(tracking).where(tracking.c.name.in_(("usage", "invoices")))
            )
        }
        report.positions["log"] = runtime.ledger.recorder.max_notification_id() or 0
        within = _within(u.c.occurred_us, window)
        total = conn.execute(sa.select(sa.func.count()).select_from(u).where(*within)).scalar()
        customers = conn.execute(
            sa.select(u.c.tenant_id, u.c.customer)
            .where(*within)
            .distinct()
            .order_by(u.c.tenant_id, u.c.customer)
        ).all()
        tenants: dict[str, _TenantView] = {}
        done = 0
        for tenant_id, customer in customers:
            if tenant_id not in tenants:
                tenants[tenant_id] = _TenantView(conn, tenant_id)
            done += _audit_customer(
                _Customer(runtime, conn, tenants[tenant_id], customer), window, report, limit
            )
            if progress is not None:
                progress("usage events", done, total or 0)
    report.wallets, report.wallet_problems = _check_wallets(runtime, progress)
    return report


@contextmanager
def _snapshot(runtime: Runtime) -> Iterator[sa.Connection]:
    """One read transaction over every read model (REPEATABLE READ on PostgreSQL; on
    SQLite the read engine's BEGIN holds a WAL snapshot from the first read)."""
    with runtime.read_engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _within(column: Any, window: tuple[int | None, int | None]) -> list[Any]:
    lo, hi = window
    return [
        *([] if lo is None else [column >= lo]),
        *([] if hi is None else [column < hi]),
    ]


class _TenantView:
    """A tenant's meters and plans, read once per leakage scan."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.id = tenant_id
        self.meters = {m.meter_id: m for m in list_meters(conn, tenant_id)}
        self.book = ViewPlans(conn, tenant_id)
        self._priced: dict[tuple[str, int | None], set[str]] = {}

    def priced(self, plan: str, version: int | None = None) -> set[str]:
        """The meters a plan version (None: the latest) prices."""
        if (plan, version) not in self._priced:
            stored = (
                self.book.latest(plan)[1] if version is None else self.book.version(plan, version)
            )
            spec = plan_spec(stored)
            self._priced[(plan, version)] = {p.meter for p in spec.prices if p.meter}
        return self._priced[(plan, version)]


@dataclass(frozen=True)
class _LineRef:
    invoice_id: str
    line_id: str
    subscription_id: str
    period_start_us: int

    def __str__(self) -> str:
        return f"inv_{self.invoice_id} line il_{self.line_id}"


@dataclass
class _Customer:
    runtime: Runtime
    conn: sa.Connection
    tenant: _TenantView
    customer: str
    states: list[SubscriptionState] = field(default_factory=list)


LEAKED = "leaked"
Verdict = tuple[str, str | None]  # (bucket, None) or (LEAKED, why)


def _audit_customer(
    ctx: _Customer, window: tuple[int | None, int | None], report: LeakageReport, limit: int
) -> int:
    """Put every fact of one customer's events in its bucket; answer the events seen."""
    conn, tenant, customer = ctx.conn, ctx.tenant, ctx.customer
    u, f = usage_events, meter_facts
    events = conn.execute(
        sa.select(u.c.id, u.c.occurred_us, u.c.cancelled_reason)
        .where(u.c.tenant_id == tenant.id, u.c.customer == customer)
        .where(*_within(u.c.occurred_us, window))
        .order_by(u.c.position)
    ).all()
    facts: dict[str, list[Any]] = {}
    for meter_id in tenant.meters:  # meter by meter: the (meter, customer, time) index
        query = sa.select(f.c.event_id, f.c.meter_id, f.c.occurred_us, f.c.position).where(
            f.c.meter_id == meter_id, f.c.customer == customer, *_within(f.c.occurred_us, window)
        )
        for row in conn.execute(query):
            facts.setdefault(row.event_id, []).append(row)
    ctx.states = [s for _, s, _ in customer_subscriptions(conn, tenant.id, customer, limit=10**6)]
    counted = _counted_by_lines(conn, tenant.id, customer, window)

    def leak(fact: Any, why: str) -> None:
        report.leaked += 1
        if len(report.leaks) < limit:
            meter = tenant.meters.get(fact.meter_id)
            report.leaks.append(
                Leak(
                    fact.event_id,
                    meter.spec.key if meter else fact.meter_id,
                    customer,
                    tenant.id,
                    _instant(fact.occurred_us),
                    why,
                )
            )

    for event in events:
        report.events += 1
        mine = facts.pop(event.id, [])
        report.facts += len(mine)
        if event.cancelled_reason is not None:
            report.buckets["cancelled"] += 1
            for fact in mine:
                leak(fact, "cancelled, yet its meter still counts it")
            continue
        if not mine:
            report.buckets["unmetered"] += 1
        for fact in mine:
            bucket, why = _classify(ctx, fact, counted.get((fact.event_id, fact.meter_id), []))
            if why is not None:
                leak(fact, why)
            else:
                report.buckets[bucket] += 1
    for orphans in facts.values():
        for fact in orphans:
            report.facts += 1
            leak(fact, "a meter counts it, but there is no such accepted usage event")
    return len(events)


def _counted_by_lines(
    conn: sa.Connection, tenant: str, customer: str, window: tuple[int | None, int | None]
) -> dict[tuple[str, str], list[_LineRef]]:
    """(event, meter) -> the finalized invoice lines that count it. A line counts the
    facts its trace reference names (`load_facts`, exactly as billing and the trace
    endpoint read them); an adjustment line counts only what it adds to its base."""
    i = invoices
    rows = conn.execute(
        sa.select(i.c.invoice_id, i.c.subscription_id)
        .where(i.c.tenant_id == tenant, i.c.customer == customer, i.c.status == "finalized")
        .order_by(i.c.position)
    ).all()
    lines = invoice_line_rows(conn, [r.invoice_id for r in rows])
    lo, hi = window
    counted: dict[tuple[str, str], list[_LineRef]] = {}
    for invoice in rows:
        for line in lines[invoice.invoice_id]:
            if line.trace is None:
                continue
            ref = json.loads(line.trace)
            if lo is not None and ref["end_us"] <= lo:
                continue  # every fact it names happened before the window
            base = ref.get("base")
            before = {x.event_id for x in load_facts(conn, base)} if base else set()
            where = _LineRef(
                invoice.invoice_id, line.line_id, invoice.subscription_id, ref["start_us"]
            )
            for fact in load_facts(conn, ref):
                if fact.event_id in before:
                    continue
                if (lo is not None and fact.occurred_us < lo) or (
                    hi is not None and fact.occurred_us >= hi
                ):
                    continue
                counted.setdefault((fact.event_id, ref["meter_id"]), []).append(where)
    return counted


def _classify(ctx: _Customer, fact: Any, lines: list[_LineRef]) -> Verdict:
    meter = ctx.tenant.meters[fact.meter_id]
    key = meter.spec.key
    at = fact.occurred_us
    # a late decision is recorded by the subscription whose closed period holds the event
    decision = next((s.late[fact.event_id] for s in ctx.states if fact.event_id in s.late), None)
    if meter.spec.aggregation == "WEIGHTED_SUM":
        return _level(ctx, fact, key, lines, decision)
    if lines:
        if len(lines) > 1:
            return LEAKED, "counted by more than one invoice line: " + ", ".join(map(str, lines))
        if decision is not None and decision.policy == "ignore":
            return LEAKED, f"ignored by the late-event policy, yet billed on {lines[0]}"
        return "invoiced", None
    home = next((s for s in ctx.states if s.period_of(at) is not None), None)
    if home is None:
        return "no_subscription", None
    closed = home.closed_at(at)
    if closed is None:
        period = home.period_of(at)
        assert period is not None
        return _open(ctx, home, period, key)
    if key not in ctx.tenant.priced(closed.plan, closed.plan_version):
        return "unpriced", None
    if fact.position <= closed.position:
        return LEAKED, f"in the log by the close of {_closed(closed)}, yet in none of its lines"
    if decision is None:
        return _undecided(home, closed, fact)
    return _decided(ctx, fact, key, home, closed, decision.policy, [closed])


def _open(ctx: _Customer, state: SubscriptionState, period: tuple[int, int], key: str) -> Verdict:
    """Not billed yet: its period is open. Unpriced when the plan that will bill the
    period (its latest version, as a billing run would take it now) does not price it."""
    plan = state.plan_at(period[0])
    return ("open_period" if key in ctx.tenant.priced(plan) else "unpriced"), None


def _undecided(state: SubscriptionState, closed: ClosedPeriod, fact: Any) -> Verdict:
    """Late (after its period's close), not decided: the next billing step decides it
    when it entered the log after the subscription's last step (`find_late`)."""
    if fact.position > state.accounted_through:
        return "late_pending", None
    return LEAKED, (
        f"arrived after the close of {_closed(closed)}, yet the billing step at log "
        f"position {state.accounted_through} did not decide it"
    )


def _decided(
    ctx: _Customer,
    fact: Any,
    key: str,
    state: SubscriptionState,
    closed: ClosedPeriod,
    policy: str,
    corrected: list[ClosedPeriod],
) -> Verdict:
    """Late usage in no invoice line, after the policy decided (`LateUsageDecided`)."""
    if policy == "ignore":
        return "ignored", None
    if policy == "next_period":
        if fact.event_id in state.pending_next_period():
            return "open_period", None  # the next regular invoice to close bills it
        return LEAKED, (
            f"late for {_closed(closed)} and decided next_period, yet no regular invoice "
            "closed since bills it"
        )
    changed = _changes(ctx, fact, key, state, closed, corrected)
    if changed is None:
        return "late_no_change", None
    return LEAKED, f"late for {_closed(closed)} and decided current_period, yet {changed}"


def _changes(
    ctx: _Customer,
    fact: Any,
    key: str,
    state: SubscriptionState,
    closed: ClosedPeriod,
    corrected: list[ClosedPeriod],
) -> str | None:
    """Why a current_period event in no line is leakage, or None when billing rightly
    issued nothing for it: the adjustment billing computes (`_adjustment_draft`, over
    the invoices as billed so far) has no line for this meter."""
    for period in corrected:
        billed = billed_traces(ctx.runtime, state, period).get(key)
        if billed is not None and fact.event_id in {
            x.event_id for x in load_facts(ctx.conn, billed)
        }:
            return (
                f"the stored invoices of {_closed(period)} bill it and no line of the read "
                "model does"
            )
        draft = _adjustment_draft(
            ctx.runtime, ctx.conn, state, period, {fact.event_id: closed.start_us}, ctx.tenant.book
        )
        if draft is not None and any(
            x.kind == "usage_adjustment" and x.meter == key for x in draft.lines
        ):
            return f"it changes {_closed(period)} and no adjustment line bills it"
    return None


def _level(
    ctx: _Customer, fact: Any, key: str, lines: list[_LineRef], decision: LateDecision | None
) -> Verdict:
    """A WEIGHTED_SUM fact is a level: it counts in every period that closes after it
    happened and after it entered the log (`load_facts` with no start, up to the close's
    position; ignored ones never), in any subscription of the customer. So it leaks when
    such a closed period's lines miss it, and is counted twice when two lines bill it
    for one period. An adjustment line counts it in the corrected period."""
    at, position = fact.occurred_us, fact.position
    per_period = Counter((x.subscription_id, x.period_start_us) for x in lines)
    twice = [x for x in lines if per_period[(x.subscription_id, x.period_start_us)] > 1]
    if twice:
        return LEAKED, "counted by more than one invoice line: " + ", ".join(map(str, twice))
    if decision is not None and decision.policy == "ignore":
        if lines:
            return LEAKED, f"ignored by the late-event policy, yet billed on {lines[0]}"
        return "ignored", None
    for state in ctx.states:
        for period in state.closed:
            if (
                period.end_us > at
                and period.position >= position
                and key in ctx.tenant.priced(period.plan, period.plan_version)
                and (state.subscription_id, period.start_us) not in per_period
            ):
                return LEAKED, (
                    f"{_closed(period)} counts every level before its end, yet none of its "
                    "lines has this one"
                )
    if lines:
        return "invoiced", None
    home = next((s for s in ctx.states if s.period_of(at) is not None), None)
    closed = home.closed_at(at) if home is not None else None
    if home is not None and closed is not None:
        if key not in ctx.tenant.priced(closed.plan, closed.plan_version):
            return "unpriced", None
        if decision is None:
            return _undecided(home, closed, fact)
        later = [c for c in home.closed if c.end_us > at]
        return _decided(ctx, fact, key, home, closed, decision.policy, later)
    target = home or next((s for s in ctx.states if s.start_us > at), None)
    period = None if target is None else target.next_unclosed()
    if target is None or period is None:
        return "no_subscription", None
    return _open(ctx, target, period, key)


def _closed(period: ClosedPeriod) -> str:
    return (
        f"the period {_instant(period.start_us)}..{_instant(period.end_us)} "
        f"(inv_{period.invoice_id}, billed up to log position {period.position})"
    )


# ---------------------------------------------------------------------- wallet ledger

_WALLET_TOPICS = {
    get_topic(getattr(Wallet, name)): name
    for name in (
        "Opened",
        "ToppedUp",
        "Granted",
        "GrantRefreshed",
        "Debited",
        "Refunded",
        "GrantExpired",
    )
}
_MOVEMENTS = {
    "ToppedUp": ("top_up", 1),
    "Granted": ("grant", 1),
    "GrantRefreshed": ("refresh", 1),
    "Debited": ("debit", -1),
    "Refunded": ("refund", 1),
    "GrantExpired": ("expiry", -1),
}


@dataclass
class _WalletBook:
    name: str
    movements: list[tuple[str, Decimal]] = field(default_factory=list)
    balance_after: Decimal = Decimal(0)  # as the last movement recorded it
    first_position: int = 0
    projected: Decimal = Decimal(0)  # the identity at the read model's position


def wallet_ledger(runtime: Runtime, progress: Progress | None = None) -> list[str]:
    """Every wallet's events replayed from the event store (not the read model): each
    movement's `balance_after` follows from the one before; the final balance is
    top-ups + grants (and refreshes) - debits - expiries + refunds, which is also the
    aggregate's own balance; the `wallets` read model shows that balance (as of the
    position the wallets projection has applied). Answers the problems found."""
    return _check_wallets(runtime, progress)[1]


def _check_wallets(runtime: Runtime, progress: Progress | None) -> tuple[int, list[str]]:
    with runtime.read_engine.connect() as conn:  # one read: rows and position agree
        seen = (
            conn.execute(sa.select(tracking.c.position).where(tracking.c.name == "wallets"))
        ).scalar() or 0
        shown = dict(conn.execute(sa.select(wallets.c.wallet_id, wallets.c.balance)).all())
    recorder = runtime.ledger.recorder
    head = recorder.max_notification_id() or 0
    books: dict[str, _WalletBook] = {}
    problems: list[str] = []
    start = 0
    while start < head:
        notes = recorder.select_notifications(
            start, 5000, stop=head, topics=list(_WALLET_TOPICS), inclusive_of_start=False
        )
        if not notes:
            break
        for note in notes:
            event: Any = runtime.ledger.mapper.to_domain_event(note)
            kind = _WALLET_TOPICS[note.topic]
            wallet_id = event.originator_id.hex
            if kind == "Opened":
                books[wallet_id] = _WalletBook(
                    f"wallet {wallet_id} ({event.customer}, {event.currency})",
                    first_position=note.id,
                )
                continue
            book = books[wallet_id]
            label, sign = _MOVEMENTS[kind]
            expected = book.balance_after + sign * event.amount
            if event.balance_after != expected:
                problems.append(
                    f"{book.name} v{note.originator_version} {kind} {event.amount}: "
                    f"balance_after {event.balance_after}, but the balance before was "
                    f"{book.balance_after}, so {expected}"
                )
            book.movements.append((label, event.amount))
            book.balance_after = event.balance_after
            if note.id <= seen:
                book.projected = ledger_identity(book.movements)
        start = notes[-1].id
        if progress is not None:
            progress("wallets", start, head)
    for wallet_id, book in books.items():
        identity = ledger_identity(book.movements)
        if identity != book.balance_after:
            problems.append(
                f"{book.name}: top-ups + grants - debits - expiries + refunds = {identity}, "
                f"but the last movement left {book.balance_after}"
            )
        aggregate: Wallet = runtime.ledger.repository.get(uuid.UUID(wallet_id))
        if aggregate.balance != identity:
            problems.append(
                f"{book.name}: the aggregate's balance is {aggregate.balance}, the movements "
                f"add up to {identity}"
            )
        if wallet_id in shown:
            if shown[wallet_id] != book.projected:
                problems.append(
                    f"{book.name}: the wallets read model shows {shown[wallet_id]}, the "
                    f"ledger up to log position {seen} adds up to {book.projected}"
                )
        elif book.first_position <= seen:
            problems.append(f"{book.name}: missing from the wallets read model")
    for wallet_id in shown.keys() - books.keys():
        problems.append(f"wallet {wallet_id}: in the wallets read model, not in the store")
    return len(books), problems
