"""The budget processor: follows the log behind the usage and access projections,
measures the budgets of the customers whose usage moved, and records what the
measurement decides (thresholds crossed, access blocked or restored).

What a budget measures is a `Measure`, chosen by the budget's kind: units of a meter
come from the usage read models; money per period will come from the running
charges once usage is priced (until then `MoneyMeasure` answers zero). A new kind of
measure plugs in through `measures`, and so does a new source of notifications
(`affected_by`), without touching the rules in `domain.budgets`.

Exactly-once is not needed here: the Budget aggregate's own state says which
thresholds were crossed in which period, so a batch replayed after a crash records
nothing twice, and two processors racing on one budget meet the store's version
check (see `Budgets.record_measurement`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

import msgspec
import sqlalchemy as sa
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import ApplicationRecorder, Notification
from eventsourcing.utils import get_topic

from application.budgets import Budgets
from domain.aggregation import ZERO
from domain.budgets import BUDGET_CHANGED, MONEY, UNITS, USAGE_CORRECTED
from domain.charges import PeriodCharges, period_charges_id_for
from domain.errors import NotFound
from domain.instants import from_us, to_us
from domain.periods import Period, calendar_month
from domain.usage import UsageEvent
from projections.access import CHANGED, SET, budgets
from projections.billing_view import current_subscription
from projections.runner import SQLTrackingView, save_position
from projections.tables import customers, tracking, usage_events
from projections.usage_view import meter_row, meter_total

log = logging.getLogger(__name__)

RECORDED = get_topic(UsageEvent.Recorded)
CANCELLED = get_topic(UsageEvent.Cancelled)
TICK_SECONDS = 1.0
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Measure(Protocol):
    """What a kind of budget counts in a period, read from the read models."""

    def measure(self, conn: sa.Connection, budget: Any, period: Period) -> Decimal: ...


class UnitsMeasure:
    """Units of one meter: the customer's meter total over the period."""

    def measure(self, conn: sa.Connection, budget: Any, period: Period) -> Decimal:
        try:
            meter = meter_row(conn, budget.tenant_id, budget.meter)
        except NotFound:
            return ZERO
        return meter_total(conn, meter, budget.customer, period.start, period.end)


class MoneyMeasure:
    """Money per period: the running charge of the customer's usage in the period, the
    same figure the wallet is drawn down by (`domain.charges.PeriodCharges`)."""

    def __init__(self, repository: Any = None) -> None:
        self.repository = repository

    def measure(self, conn: sa.Connection, budget: Any, period: Period) -> Decimal:
        if self.repository is None:
            return ZERO
        charges_id = period_charges_id_for(
            UUID(budget.tenant_id), budget.customer, to_us(period.start)
        )
        try:
            return self.repository.get(charges_id).total
        except AggregateNotFoundError:
            return ZERO


def calendar_period(conn: sa.Connection, budget: Any, now: datetime) -> Period:
    """The budget's current period: the customer's subscription period containing `now`,
    or, with no subscription, the calendar month in the customer's time zone."""
    state = current_subscription(conn, budget.tenant_id, budget.customer, to_us(now))
    if state is not None:
        period = state.period_of(to_us(now))
        if period is not None:
            return Period(from_us(period[0]), from_us(period[1]))
    zone = conn.execute(
        sa.select(customers.c.timezone).where(
            customers.c.tenant_id == budget.tenant_id,
            customers.c.external_id == budget.customer,
        )
    ).scalar()
    return calendar_month(now, zone or "UTC")


class _Who(msgspec.Struct):
    tenant_id: str
    customer: str


_decode_who = msgspec.json.Decoder(_Who)
CHARGED = get_topic(PeriodCharges.Charged)


class BudgetProcessor:
    """Follows the log (only as far as the projections it reads have applied it) and
    records budget decisions through the application."""

    name = "budgets"

    def __init__(
        self,
        recorder: ApplicationRecorder,
        commands: Budgets,
        engine: sa.Engine,
        read_engine: sa.Engine,
        *,
        measures: dict[str, Measure] | None = None,
        repository: Any = None,
        period_for: Callable[[sa.Connection, Any, datetime], Period] = calendar_period,
        after: Sequence[str] = ("usage", "access"),
        clock: Clock = utc_now,
        batch_size: int = 5000,
    ) -> None:
        self.recorder = recorder
        self.commands = commands
        self.engine = engine
        self.read_engine = read_engine
        self.measures: dict[str, Measure] = measures or {
            UNITS: UnitsMeasure(),
            MONEY: MoneyMeasure(repository),
        }
        self.period_for = period_for
        self.after = tuple(after)
        self.clock = clock
        self.batch_size = batch_size
        self.view = SQLTrackingView(read_engine)
        self._last_tick = 0.0

    def position(self) -> int:
        return self.view.max_tracking_id(self.name) or 0

    def _limit(self) -> int:
        """How far the log may be read: the projections measured from must have
        applied every event first (the usage total includes the event just ingested,
        and `budgets` lists every budget set so far)."""
        with self.read_engine.connect() as conn:
            found = dict(
                conn.execute(
                    sa.select(tracking.c.name, tracking.c.position).where(
                        tracking.c.name.in_(self.after)
                    )
                ).all()
            )
        return min(found.get(name) or 0 for name in self.after)

    def run_once(self, now: datetime | None = None) -> int:
        """Process the next batch; answer how many notifications it held."""
        start, stop = self.position(), self._limit()
        if stop <= start:
            return 0
        notes = self.recorder.select_notifications(
            start=start, limit=self.batch_size, stop=stop, inclusive_of_start=False
        )
        if not notes:
            return 0
        self.process(notes, now or self.clock())
        with self.engine.begin() as conn:
            save_position(conn, self.name, notes[-1].id)
        return len(notes)

    def catch_up(self, now: datetime | None = None) -> int:
        total = 0
        while count := self.run_once(now):
            total += count
        return total

    def process(self, notes: Sequence[Notification], now: datetime) -> None:
        """Measure every budget the notifications may have moved."""
        changed, touched, cancelled = affected_by(notes)
        with self.read_engine.connect() as conn:
            if cancelled:
                for row in conn.execute(
                    sa.select(usage_events.c.tenant_id, usage_events.c.customer).where(
                        usage_events.c.id.in_(cancelled)
                    )
                ):
                    touched.add((row.tenant_id, row.customer))
            rows = _candidates(conn, changed, touched)
            for row in rows:
                reason = BUDGET_CHANGED if row.budget_id in changed else USAGE_CORRECTED
                moved_down = row.budget_id in changed or bool(cancelled)
                self.evaluate(conn, row, now, reason, may_decrease=moved_down)

    def evaluate(
        self,
        conn: sa.Connection,
        row: Any,
        now: datetime,
        reason: str = USAGE_CORRECTED,
        may_decrease: bool = True,
    ) -> None:
        """Measure one budget in its current period and record the decision."""
        period = self.period_for(conn, row, now)
        budget_id = UUID(row.budget_id)
        if not may_decrease and self.commands.get(budget_id).saturated(period.start):
            return  # more usage cannot change anything until the period ends
        measured = self.measures[row.kind].measure(conn, row, period)
        self.commands.record_measurement(budget_id, period.start, period.end, measured, reason)

    def tick(self, now: datetime | None = None) -> int:
        """Reset the budgets whose period has ended while blocked: the next period
        starts afresh and access is restored. Answers how many were looked at."""
        now = now or self.clock()
        count = 0
        with self.read_engine.connect() as conn:
            for row in conn.execute(sa.select(budgets).where(budgets.c.blocked.is_(True))).all():
                period = self.period_for(conn, row, now)
                if row.period_start_us is not None and row.period_start_us < to_us(period.start):
                    self.evaluate(conn, row, now)
                    count += 1
        return count

    def run_forever(self, stop: threading.Event, idle_seconds: float = 0.05) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once()
                if time.monotonic() - self._last_tick >= TICK_SECONDS:
                    self._last_tick = time.monotonic()
                    self.tick()
                if not busy:
                    stop.wait(idle_seconds)
            except Exception:
                log.exception("budget processor failed; retrying")
                stop.wait(1.0)


def affected_by(
    notes: Iterable[Notification],
) -> tuple[set[str], set[tuple[str, str]], list[str]]:
    """(budgets set or changed, (tenant, customer) pairs with new usage, ids of
    cancelled usage events) in a batch of notifications."""
    changed: set[str] = set()
    touched: set[tuple[str, str]] = set()
    cancelled: list[str] = []
    for note in notes:
        topic = note.topic
        if topic == RECORDED:
            who = _decode_who.decode(note.state)
            touched.add((who.tenant_id, who.customer))
        elif topic == CANCELLED:
            cancelled.append(_hex(note.originator_id))
        elif topic in (SET, CHANGED):
            changed.add(_hex(note.originator_id))
        elif topic == CHARGED:
            who = _decode_who.decode(note.state)
            touched.add((who.tenant_id, who.customer))
    return changed, touched, cancelled


def _hex(oid: Any) -> str:
    return oid.hex if isinstance(oid, UUID) else str(oid)


def _candidates(conn: sa.Connection, changed: set[str], touched: set[tuple[str, str]]) -> list[Any]:
    """The budgets to measure: those changed, and every budget of a touched customer."""
    found: dict[str, Any] = {}
    ids = sorted(changed)
    for start in range(0, len(ids), 500):
        query = sa.select(budgets).where(budgets.c.budget_id.in_(ids[start : start + 500]))
        found.update({r.budget_id: r for r in conn.execute(query)})
    by_tenant: dict[str, list[str]] = {}
    for tenant, customer in touched:
        by_tenant.setdefault(tenant, []).append(customer)
    for tenant, names in by_tenant.items():
        names.sort()
        for start in range(0, len(names), 500):
            query = sa.select(budgets).where(
                budgets.c.tenant_id == tenant, budgets.c.customer.in_(names[start : start + 500])
            )
            found.update({r.budget_id: r for r in conn.execute(query)})
    return [found[k] for k in sorted(found)]
