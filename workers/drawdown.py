"""Real-time drawdown: follow the log, price each customer's new usage, record the
running charge and debit the customer's wallet.

The charge is priced by the same code that drafts invoices (`upcoming_draft`), so for
tiered models the increment is exactly the period's price after minus before. The
processor is idempotent: it compares the period's price now with what was already
charged, so a batch seen twice (after a crash) charges nothing the second time.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

import msgspec
import sqlalchemy as sa
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from application.wallets import apply_debit, apply_refund
from domain.charges import PeriodCharges, period_charges_id_for
from domain.usage import UsageEvent
from projections.runner import save_position
from projections.tables import usage_events
from projections.wallets import wallets
from workers.billing import upcoming_draft

if TYPE_CHECKING:
    from workers.runtime import Runtime

log = logging.getLogger(__name__)
NAME = "drawdown"
TOPICS = [get_topic(UsageEvent.Recorded), get_topic(UsageEvent.Cancelled)]
ZERO = Decimal(0)


class _Usage(msgspec.Struct):
    tenant_id: str | None = None
    customer: str | None = None


class Drawdown:
    """The billing processor: charges and wallet debits as usage arrives."""

    def __init__(self, runtime: Runtime, batch_size: int = 5000) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        self._decode = msgspec.json.Decoder(_Usage)

    def position(self) -> int:
        return self.runtime.view.max_tracking_id(NAME) or 0

    def run_forever(self, stop: threading.Event, idle_seconds: float = 0.05) -> None:
        while not stop.is_set():
            try:
                if self.step() == 0:
                    stop.wait(idle_seconds)
            except Exception:
                log.exception("drawdown failed; retrying")
                stop.wait(1.0)

    def step(self, now: datetime | None = None) -> int:
        """Charge for the usage the read models gained since the last step."""
        start, target = self.position(), self.runtime.usage.position()
        if target <= start:
            return 0
        notes = self.runtime.ledger.recorder.select_notifications(
            start=start,
            limit=self.batch_size,
            stop=target,
            topics=TOPICS,
            inclusive_of_start=False,
        )
        touched: dict[tuple[str, str], list[str]] = {}
        cancelled: set[str] = set()
        for note in notes:
            oid = (
                note.originator_id.hex
                if isinstance(note.originator_id, UUID)
                else str(note.originator_id)
            )
            if note.originator_version == 1:
                usage = self._decode.decode(note.state)
                touched.setdefault((usage.tenant_id or "", usage.customer or ""), []).append(
                    "evt_" + oid
                )
            else:
                cancelled.add(oid)
        if cancelled:  # a cancellation lowers its customer's charge
            with self.runtime.read_engine.connect() as conn:
                for tenant, customer in conn.execute(
                    sa.select(usage_events.c.tenant_id, usage_events.c.customer).where(
                        usage_events.c.id.in_(cancelled)
                    )
                ):
                    touched.setdefault((tenant, customer), [])
        end = notes[-1].id if len(notes) == self.batch_size else target
        when = now or datetime.now(UTC)
        for (tenant, customer), events in touched.items():
            self.charge(UUID(tenant), customer, events, end, when)
        with self.runtime.engine.begin() as conn:
            save_position(conn, NAME, end)
        return max(len(notes), 1)

    def charge(
        self, tenant: UUID, customer: str, events: list[str], position: int, now: datetime
    ) -> Decimal:
        """Bring the customer's running charge up to date; answer the amount charged."""
        with self.runtime.read_engine.connect() as conn:
            found = upcoming_draft(
                conn, tenant.hex, customer, now, self.runtime.settings.late_event_policy
            )
        if found is None:
            return ZERO  # no subscription: nothing is priced
        state, period, _, draft = found
        usage = sum((x.amount for x in draft.lines if x.kind == "usage"), ZERO)
        running = max(usage - draft.credits_applied, ZERO)
        meters = {x.meter or "": str(x.amount) for x in draft.lines if x.kind == "usage"}
        for _ in range(50):
            charges = self._charges(tenant, customer, state.subscription_id, period, state.currency)
            amount = running - charges.total
            if amount == 0:
                return ZERO
            charge_id = charges.charge_id()
            charges.charge(
                charge_id=charge_id,
                amount=amount,
                total_after=running,
                position=position,
                meters=meters,
                usage_events=events,
                tenant_id=tenant.hex,
                customer=customer,
            )
            wallet = self.runtime.wallets.find(tenant, customer, state.currency)
            if wallet is not None:
                cause = {"charge": charge_id, "period_start_us": period[0], "usage_events": events}
                if amount > 0:
                    apply_debit(wallet, charge_id, amount, cause, now)
                else:
                    apply_refund(
                        wallet,
                        "wrf_" + charge_id.removeprefix("chg_"),
                        -amount,
                        f"charge {charge_id} lowered the period's price",
                    )
            try:
                self.runtime.ledger.save(charges, *([wallet] if wallet else []))
            except IntegrityError:
                continue  # a top-up or another processor got there first: recompute
            return amount
        raise RuntimeError(f"could not charge customer {customer!r}: too much contention")

    def _charges(
        self,
        tenant: UUID,
        customer: str,
        subscription_id: str,
        period: tuple[int, int],
        currency: str,
    ) -> PeriodCharges:
        try:
            return self.runtime.ledger.repository.get(
                period_charges_id_for(tenant, customer, period[0])
            )
        except AggregateNotFoundError:
            return PeriodCharges(
                tenant_id=tenant.hex,
                customer=customer,
                subscription_id=subscription_id,
                period_start_us=period[0],
                period_end_us=period[1],
                currency=currency,
            )


def expire_grants(runtime: Runtime, now: datetime) -> int:
    """Record the expiry of every lapsed grant (wallets with granted credit only)."""
    with runtime.read_engine.connect() as conn:
        rows = conn.execute(
            sa.select(wallets.c.tenant_id, wallets.c.wallet_id, wallets.c.granted_balance)
        ).all()
    # Compared here, not in SQL: decimals are text on SQLite.
    return sum(
        runtime.wallets.expire_grants(UUID(tenant), UUID(wallet_id), now)
        for tenant, wallet_id, granted in rows
        if granted > 0
    )
