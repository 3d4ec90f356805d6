"""Billing runs: close due periods, decide late usage, issue invoices, all as events.

A run takes the log's current position P, waits until the read models have applied
everything up to P, then steps each subscription. A step, for one subscription:

1. late usage: facts that happened in an already closed period and entered the log after
   that period's close position (and after the subscription's last step) are late; the
   tenant's policy decides: next_period (billed by the next regular invoice, traced with
   their own timestamps), current_period (an adjustment invoice for the closed period,
   naming the original) or ignore (stored, listed, never billed). The decision is a
   `Subscription.LateUsageDecided` event listing the usage events;
2. the first period's base fee, when billed in advance, on an opening invoice;
3. every period whose end plus the grace window is at or before `as_of` is closed: its
   invoice bills the facts in the period with log position <= P (`closed_at_position`),
   plus the late usage decided next_period since the previous close.

The subscription's events and all the invoices of the step are saved in one transaction:
a run killed at any point leaves whole steps or none, and a rerun (or a concurrent run)
cannot issue an invoice twice: the subscription's version and the invoices' deterministic
ids both conflict. The same `draft_regular` computes the upcoming invoice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.wallets import apply_debit, apply_refund
from domain.billing import (
    ClosedPeriod,
    Invoice,
    Plan,
    PlanSpec,
    Subscription,
    SubscriptionState,
    line_id_for,
    plan_id_for,
    plan_spec,
    to_us,
)
from domain.invoicing import (
    AdvanceFee,
    DraftLine,
    InvoiceDraft,
    MeterUsage,
    adjustment,
    compute_invoice,
    money,
    opening_invoice,
    plain,
)
from domain.pricing import currency_minor_units
from domain.trace import line_quantity
from domain.wallets import Wallet
from projections.billing_view import (
    current_subscription,
    last_usage_position,
    late_facts,
    load_facts,
    plan_row,
    plan_version_spec,
    subscription_states,
    tenant_row,
)
from projections.usage_view import MeterRow, meter_row

if TYPE_CHECKING:
    from workers.runtime import Runtime

log = logging.getLogger(__name__)
ZERO = Decimal(0)
UNBOUNDED = 2**62  # a position bound above any log position


class PlanBook(Protocol):
    """Plan versions by key, from the ledger (billing runs) or the read model (queries)."""

    def latest(self, key: str) -> tuple[int, dict[str, Any]]: ...

    def version(self, key: str, version: int) -> dict[str, Any]: ...


class LedgerPlans:
    """Plans read from the event store, cached for one run."""

    def __init__(self, runtime: Runtime, tenant: UUID) -> None:
        self.ledger = runtime.ledger
        self.tenant = tenant
        self._plans: dict[str, Plan] = {}

    def _plan(self, key: str) -> Plan:
        if key not in self._plans:
            self._plans[key] = self.ledger.repository.get(plan_id_for(self.tenant, key))
        return self._plans[key]

    def latest(self, key: str) -> tuple[int, dict[str, Any]]:
        plan = self._plan(key)
        return plan.latest, plan.spec()

    def version(self, key: str, version: int) -> dict[str, Any]:
        return self._plan(key).spec(version)


class ViewPlans:
    """Plans read from the read model (the query side)."""

    def __init__(self, conn: sa.Connection, tenant: str) -> None:
        self.conn = conn
        self.tenant = tenant

    def latest(self, key: str) -> tuple[int, dict[str, Any]]:
        row = plan_row(self.conn, self.tenant, key)
        spec = plan_version_spec(self.conn, row.plan_id, row.latest_version)
        assert spec is not None
        return row.latest_version, spec

    def version(self, key: str, version: int) -> dict[str, Any]:
        row = plan_row(self.conn, self.tenant, key)
        spec = plan_version_spec(self.conn, row.plan_id, version)
        assert spec is not None
        return spec


class Meters:
    """Meter rows by key, looked up once per run (or per query)."""

    def __init__(self, conn: sa.Connection, tenant: str) -> None:
        self.conn = conn
        self.tenant = tenant
        self._rows: dict[str, MeterRow] = {}

    def __call__(self, key: str) -> MeterRow:
        if key not in self._rows:
            self._rows[key] = meter_row(self.conn, self.tenant, key)
        return self._rows[key]


@dataclass(frozen=True)
class PlanUse:
    key: str
    version: int
    spec: PlanSpec


@dataclass
class RunResult:
    """What one billing run did."""

    as_of: datetime
    position: int
    invoices: list[str] = field(default_factory=list)
    late_events: int = 0
    subscriptions: int = 0
    conflicts: int = 0
    failed: list[str] = field(default_factory=list)  # subscription ids; retried next run


class NotReady(RuntimeError):
    """The read models did not reach the run's log position in time; nothing was billed."""


# ------------------------------------------------------------------------------- runs


def run_billing(
    runtime: Runtime,
    as_of: datetime,
    *,
    tenant: UUID | None = None,
    timeout: float = 60.0,
    on_step: Callable[[str], None] | None = None,
) -> RunResult:
    """Close every period due at `as_of` (of one tenant, or all) and issue its invoices."""
    position = runtime.ledger.recorder.max_notification_id() or 0
    if not runtime.sync_read_models(position, timeout):
        raise NotReady(f"read models did not reach log position {position} in {timeout}s")
    result = RunResult(as_of=as_of, position=position)
    grace = int(runtime.settings.grace_period.total_seconds() * 1_000_000)
    with runtime.read_engine.connect() as conn:
        ids = [
            state.subscription_id
            for state in subscription_states(conn, tenant.hex if tenant else None)
            if needs_step(conn, state, to_us(as_of), grace, position)
        ]
    cache = RunCache(runtime)
    with runtime.read_engine.connect() as conn:
        for subscription_id in ids:
            result.subscriptions += 1
            try:
                issued, late = bill_subscription(
                    runtime, conn, subscription_id, as_of, position, cache
                )
            except IntegrityError:  # another run stepped this subscription first
                result.conflicts += 1
                continue
            except Exception:  # one broken subscription must not stop everyone's billing
                log.exception("billing step of subscription %s failed", subscription_id)
                result.failed.append(subscription_id)
                continue
            finally:
                conn.rollback()  # no read transaction held across steps
            result.invoices += issued
            result.late_events += late
            if on_step is not None:
                on_step(subscription_id)
    return result


class RunCache:
    """Plans, meters and policies of the tenants one run meets, read once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.plans: dict[str, LedgerPlans] = {}
        self.meters: dict[str, Meters] = {}
        self.policies: dict[str, str] = {}

    def book(self, tenant: str) -> LedgerPlans:
        if tenant not in self.plans:
            self.plans[tenant] = LedgerPlans(self.runtime, UUID(tenant))
        return self.plans[tenant]

    def meters_of(self, conn: sa.Connection, tenant: str) -> Meters:
        found = self.meters.get(tenant)
        if found is None or found.conn is not conn:
            found = self.meters[tenant] = Meters(conn, tenant)
        return found

    def policy(self, tenant: str) -> str:
        if tenant not in self.policies:
            self.policies[tenant] = self.runtime.billing.late_event_policy(UUID(tenant))
        return self.policies[tenant]


def needs_step(
    conn: sa.Connection, state: SubscriptionState, as_of_us: int, grace_us: int, position: int
) -> bool:
    """Could a step of this subscription do anything? Asked of the read model, which has
    applied the log up to the run's position, so it can only see more to do than there
    is (a concurrent run may have done it since), never less."""
    if state.accounted_through >= position:
        return False
    if state.due(as_of_us, grace_us):
        return True
    if state.opening_invoice_id is None and not state.closed and as_of_us >= state.start_us:
        return True
    return bool(state.closed) and (
        last_usage_position(conn, state.tenant_id, state.customer) > state.accounted_through
    )


def bill_subscription(
    runtime: Runtime,
    conn: sa.Connection,
    subscription_id: str,
    as_of: datetime,
    position: int,
    cache: RunCache,
) -> tuple[list[str], int]:
    """One step of one subscription; answers (invoice ids issued, late events decided)."""
    try:
        subscription: Subscription = runtime.ledger.repository.get(UUID(subscription_id))
    except AggregateNotFoundError:
        return [], 0
    state = subscription.state
    if state.accounted_through >= position:
        return [], 0  # a later run already stepped it
    book = cache.book(state.tenant_id)
    meters = cache.meters_of(conn, state.tenant_id)
    invoices: list[Invoice] = []

    late = find_late(conn, state, position, book, meters)
    if late:
        policy = cache.policy(state.tenant_id)
        if policy == "next_period" and not state.has_future_period():
            policy = "current_period"  # no later period will ever bill it
        adjustments = (
            correct_closed(runtime, conn, state, late, position, book, meters)
            if policy == "current_period"
            else []
        )
        invoices += adjustments
        subscription.decide_late(
            tenant_id=state.tenant_id,
            customer=state.customer,
            policy=policy,
            position=position,
            events=[{"event_id": e, "period_start_us": p} for e, p in late.items()],
            adjustments=[
                {"id": i.id.hex, "period_start_us": i.period_start_us} for i in adjustments
            ],
        )

    first = state.first_period()
    as_of_us = to_us(as_of)
    if first and state.opening_invoice_id is None and not state.closed and as_of_us >= first[0]:
        use = latest_plan(book, state.plan_at(first[0]))
        if use.spec.in_advance:
            draft = opening_invoice(use.spec, *first)
            invoice = build_invoice(state, "opening", None, first, use, position, draft)
            invoices.append(invoice)
            subscription.open_first(
                invoice_id=invoice.id.hex, fee=str(draft.total), position=position
            )

    grace = int(runtime.settings.grace_period.total_seconds() * 1_000_000)
    wallet = runtime.wallets.find(UUID(state.tenant_id), state.customer, state.currency)
    due = state.due(as_of_us, grace)
    for period in due:
        use, draft = draft_regular(conn, state, period, position, book, meters)
        applied = apply_wallet(wallet, state, period, draft, as_of)
        invoice = build_invoice(state, "regular", None, period, use, position, draft, applied)
        invoices.append(invoice)
        advance = next(
            (x for x in draft.lines if x.kind == "base_fee" and x.period_start_us == period[1]),
            None,
        )
        subscription.close(
            start_us=period[0],
            end_us=period[1],
            invoice_id=invoice.id.hex,
            position=position,
            plan=use.key,
            plan_version=use.version,
            advance_fee=None if advance is None else str(advance.rounded),
        )

    if not subscription.pending_events:
        return [], 0
    if wallet is not None and due:
        refresh_grants(wallet, subscription.state, as_of)
    touched = [wallet] if wallet is not None and wallet.pending_events else []
    runtime.ledger.save(subscription, *invoices, *touched)  # one transaction
    return [i.id.hex for i in invoices], len(late)


# --------------------------------------------------------------------------- drafting


def latest_plan(book: PlanBook, key: str) -> PlanUse:
    version, stored = book.latest(key)
    return PlanUse(key, version, plan_spec(stored))


def draft_regular(
    conn: sa.Connection,
    state: SubscriptionState,
    period: tuple[int, int],
    bound: int,
    book: PlanBook,
    meters: Meters,
    *,
    also_pending: Iterable[str] = (),
    also_ignored: Iterable[str] = (),
) -> tuple[PlanUse, InvoiceDraft]:
    """The regular invoice of `period` with usage up to log position `bound`: the one
    computation behind billing runs and the upcoming invoice."""
    start, end = period
    use = latest_plan(book, state.plan_at(start))
    pending = state.pending_next_period() | set(also_pending)
    ignored = state.ignored() | set(also_ignored)
    usage = {
        price.meter: meter_usage(
            conn, meters(price.meter), state, start, end, bound, pending, ignored
        )
        for price in use.spec.prices
        if price.meter is not None
    }
    following = state.period_from(end)
    advance = None
    if following is not None:
        upcoming = latest_plan(book, state.plan_at(following[0]))
        advance = AdvanceFee(upcoming.spec, *following)
    draft = compute_invoice(
        use.spec,
        start,
        end,
        usage,
        arrears_fee=use.spec.in_arrears,
        prepaid_fee=prepaid_fee(state, start),
        advance=advance,
    )
    return use, draft


def meter_usage(
    conn: sa.Connection,
    meter: MeterRow,
    state: SubscriptionState,
    start: int,
    end: int,
    bound: int,
    pending: set[str],
    ignored: set[str],
) -> MeterUsage:
    """A meter's usage for a regular line, with the trace reference that reproduces it.

    WEIGHTED_SUM bills a level, so every earlier fact counts (late ones from the moment
    they arrive, ignored ones never); other aggregations count the period's facts plus
    late usage decided next_period.
    """
    levels = meter.spec.aggregation == "WEIGHTED_SUM"
    trace: dict[str, Any] = {
        "meter_id": meter.meter_id,
        "meter": meter.spec.key,
        "customer": state.customer,
        "aggregation": meter.spec.aggregation,
        "start_us": start,
        "end_us": end,
        "from_us": None if levels else start,
        "bound": bound,
        "include": [] if levels else sorted(pending),
        "exclude": sorted(ignored) if levels else [],
    }
    facts = load_facts(conn, trace)
    if not levels:  # keep only the late events this meter actually counted
        trace["include"] = [f.event_id for f in facts if f.event_id in pending]
    else:
        present = {f.event_id for f in facts}
        trace["exclude"] = [e for e in trace["exclude"] if e not in present]
    return usage_of(trace, facts)


def usage_of(trace: Mapping[str, Any], facts: list[Any]) -> MeterUsage:
    quantity = line_quantity(trace["aggregation"], facts, trace["start_us"], trace["end_us"])
    values = tuple(f.value for f in facts if f.value is not None)
    return MeterUsage(quantity, values, dict(trace))


def prepaid_fee(state: SubscriptionState, start: int) -> Decimal:
    """The base fee already billed in advance for the period starting at `start`."""
    if state.closed and state.closed[-1].end_us == start:
        return Decimal(state.closed[-1].advance_fee or 0)
    if not state.closed and start == state.start_us:
        return Decimal(state.opening_fee or 0)
    previous = next((c for c in state.closed if c.end_us == start), None)
    return Decimal(previous.advance_fee or 0) if previous else ZERO


# ------------------------------------------------------------------------ late usage


def find_late(
    conn: sa.Connection, state: SubscriptionState, position: int, book: PlanBook, meters: Meters
) -> dict[str, int]:
    """Usage events that arrived after their period closed and are not decided yet:
    {event id: start of its closed period}. Only events feeding a meter that the closed
    period's plan version prices count."""
    if not state.closed:
        return {}
    if last_usage_position(conn, state.tenant_id, state.customer) <= state.accounted_through:
        return {}
    priced: dict[tuple[str, int], set[str]] = {}
    for closed in state.closed:
        version = (closed.plan, closed.plan_version)
        if version not in priced:
            spec = plan_spec(book.version(*version))
            priced[version] = {p.meter for p in spec.prices if p.meter is not None}
    keys = {meters(key).meter_id: key for keys in priced.values() for key in keys}
    found: dict[str, int] = {}
    for event_id, meter_id, occurred_us, fact_position in late_facts(
        conn,
        keys,
        state.customer,
        state.closed[0].start_us,
        state.closed[-1].end_us,
        state.accounted_through,
        position,
    ):
        closed = state.closed_at(occurred_us)
        if closed is None or fact_position <= closed.position or event_id in state.late:
            continue
        if keys[meter_id] in priced[(closed.plan, closed.plan_version)]:
            found.setdefault(event_id, closed.start_us)
    return found


def correct_closed(
    runtime: Runtime,
    conn: sa.Connection,
    state: SubscriptionState,
    late: dict[str, int],
    position: int,
    book: PlanBook,
    meters: Meters,
) -> list[Invoice]:
    """current_period: an adjustment invoice for each closed period the late usage changes
    (for WEIGHTED_SUM meters, every closed period from the late event's on)."""
    earliest = min(late.values())
    periods = set(late.values())
    result = []
    for closed in state.closed:
        if closed.end_us <= earliest:
            continue
        use = PlanUse(
            closed.plan,
            closed.plan_version,
            plan_spec(book.version(closed.plan, closed.plan_version)),
        )
        if closed.start_us not in periods and not _bills_levels(use.spec, meters):
            continue
        draft = _adjustment_draft(runtime, conn, state, closed, late, book)
        if draft is None:
            continue
        number = len(state.adjustments.get(closed.start_us, [])) + 1
        result.append(
            build_invoice(
                state,
                f"adjustment:{number}",
                closed.invoice_id,
                (closed.start_us, closed.end_us),
                use,
                position,
                draft,
            )
        )
    return result


def _bills_levels(spec: PlanSpec, meters: Meters) -> bool:
    """Does the plan price a WEIGHTED_SUM meter (whose level late usage changes after it)?"""
    return any(meters(p.meter).spec.aggregation == "WEIGHTED_SUM" for p in spec.prices if p.meter)


def _adjustment_draft(
    runtime: Runtime,
    conn: sa.Connection,
    state: SubscriptionState,
    closed: ClosedPeriod,
    late: dict[str, int],
    book: PlanBook,
) -> InvoiceDraft | None:
    """The invoice as billed so far against the invoice with the late usage, as a diff."""
    spec = plan_spec(book.version(closed.plan, closed.plan_version))
    traces = billed_traces(runtime, state, closed)
    base: dict[str, MeterUsage] = {}
    new: dict[str, MeterUsage] = {}
    for meter_key, trace in traces.items():
        levels = trace["aggregation"] == "WEIGHTED_SUM"
        added = sorted(
            e
            for e, start in late.items()
            if (start < closed.end_us if levels else start == closed.start_us)
        )
        base_facts = load_facts(conn, trace)
        base[meter_key] = usage_of(trace, base_facts)
        if not added:
            new[meter_key] = base[meter_key]
            continue
        extended = dict(trace, include=sorted(set(trace.get("include") or []) | set(added)))
        facts = load_facts(conn, extended)
        counted = {f.event_id for f in facts}
        extended["include"] = [e for e in extended["include"] if e in counted]
        new[meter_key] = usage_of(extended, facts)
    arguments = {
        "arrears_fee": spec.in_arrears,
        "prepaid_fee": prepaid_fee_of(state, closed),
    }
    old = compute_invoice(spec, closed.start_us, closed.end_us, base, **arguments)
    changed = compute_invoice(spec, closed.start_us, closed.end_us, new, **arguments)
    draft = adjustment(old, changed)
    return draft if draft.lines or draft.credits_applied else None


def prepaid_fee_of(state: SubscriptionState, closed: ClosedPeriod) -> Decimal:
    index = state.closed.index(closed)
    if index == 0:
        return Decimal(state.opening_fee or 0) if closed.start_us == state.start_us else ZERO
    return Decimal(state.closed[index - 1].advance_fee or 0)


def billed_traces(
    runtime: Runtime, state: SubscriptionState, closed: ClosedPeriod
) -> dict[str, dict[str, Any]]:
    """Each meter's usage as billed so far for a closed period: the original invoice's
    trace, replaced by the latest adjustment's for meters corrected since."""
    traces: dict[str, dict[str, Any]] = {}
    ids = [closed.invoice_id, *state.adjustments.get(closed.start_us, [])]
    for invoice_id in ids:
        invoice: Invoice = runtime.ledger.repository.get(UUID(invoice_id))
        for line in invoice.lines:
            if line["kind"] in ("usage", "usage_adjustment") and line["trace"]:
                trace = {k: v for k, v in line["trace"].items() if k != "base"}
                traces[line["meter"]] = trace
    return traces


# -------------------------------------------------------------------------- invoices


def build_invoice(
    state: SubscriptionState,
    key: str,
    corrects: str | None,
    period: tuple[int, int],
    use: PlanUse,
    position: int,
    draft: InvoiceDraft,
    wallet_applied: Decimal = ZERO,
) -> Invoice:
    """Drafted, every line added, finalized: pending events of one new aggregate."""
    currency = state.currency
    invoice = Invoice(
        tenant_id=state.tenant_id,
        subscription_id=state.subscription_id,
        customer=state.customer,
        kind=key.split(":")[0],
        key=key,
        corrects=corrects,
        period_start_us=period[0],
        period_end_us=period[1],
        currency=currency,
        plan=use.key,
        plan_version=use.version,
        closed_at_position=position,
    )
    rounded = {}
    for number, line in enumerate(draft.lines, 1):
        line_id = line_id_for(invoice.id, number).hex
        invoice.add_line(line=line_record(line_id, number, line))
        rounded[line_id] = money(line.rounded, currency)
    invoice.finalize(
        rounded=rounded,
        subtotal=money(draft.subtotal, currency),
        credits_applied=money(draft.credits_applied, currency),
        wallet_applied=money(wallet_applied, currency),
        total=money(draft.total - wallet_applied, currency),
        tenant_id=state.tenant_id,
        customer=state.customer,
        currency=currency,
    )
    return invoice


def apply_wallet(
    wallet: Wallet | None,
    state: SubscriptionState,
    period: tuple[int, int],
    draft: InvoiceDraft,
    as_of: datetime,
) -> Decimal:
    """What the customer's wallet pays of this invoice (after included credits).

    Usage was drawn from the wallet as it happened (workers.drawdown); that counts first.
    What the drawdown took beyond the invoice's rounded total goes back to the wallet;
    what the invoice bills beyond it (base fees, true-ups, rounding) is debited now, up to
    the wallet's positive balance. Recorded on the wallet in the same save as the invoice.
    """
    if wallet is None:
        return ZERO
    due = max(draft.total, ZERO)  # already in the currency's minor unit
    drawn = wallet.drawn.get(str(period[0]), ZERO)
    cents = Decimal(1).scaleb(-currency_minor_units(state.currency))
    payable = (drawn + max(wallet.balance, ZERO)).quantize(cents, rounding=ROUND_DOWN)
    applied = min(due, payable)
    key = f"{state.subscription_id}:{period[0]}"
    if applied < drawn:
        apply_refund(
            wallet,
            f"wrf_inv_{key}",
            drawn - applied,
            "usage drawn during the period exceeded the invoice",
            period[0],
        )
    elif applied > drawn:
        cause = {"invoice_period": key, "period_start_us": period[0]}
        apply_debit(wallet, f"chg_inv_{key}", applied - drawn, cause, as_of)
    return applied


def refresh_grants(wallet: Wallet, state: SubscriptionState, now: datetime) -> None:
    """A new period began: per-period grants are restored to their full amount (and, if
    they expire, live for the new period as long as they did for the first)."""
    period = state.open_period(to_us(now))
    for grant_id, grant in wallet.grants.items():
        if grant["refresh"] != "per_period" or grant["remaining"] >= grant["amount"]:
            continue
        added = grant["amount"] - grant["remaining"]
        expires = grant["expires_us"]
        if expires is not None and period is not None and expires <= period[0]:
            expires = period[1]
        wallet.refresh_grant(
            grant_id=grant_id,
            amount=added,
            expires_us=expires,
            balance_after=wallet.balance + added,
        )
    wallet.record_crossings()


def line_record(line_id: str, number: int, line: DraftLine) -> dict[str, Any]:
    return {
        "id": line_id,
        "number": number,
        "kind": line.kind,
        "description": line.description,
        "meter": line.meter,
        "model": line.model,
        "quantity": plain(line.quantity),
        "unit_price": None if line.unit_price is None else plain(line.unit_price),
        "breakdown": list(line.breakdown),
        "amount": plain(line.amount),
        "period_start_us": line.period_start_us,
        "period_end_us": line.period_end_us,
        "trace": None if line.trace is None else dict(line.trace),
    }


# -------------------------------------------------------------------------- upcoming


def upcoming_draft(
    conn: sa.Connection, tenant: str, customer: str, now: datetime, default_policy: str
) -> tuple[SubscriptionState, tuple[int, int], PlanUse, InvoiceDraft] | None:
    """What the customer's next regular invoice would bill if its period closed now: the
    same `draft_regular` as billing runs, over everything in the read models, with late
    usage not yet decided treated as the tenant's policy would treat it."""
    state = current_subscription(conn, tenant, customer, to_us(now))
    if state is None:
        return None
    period = state.next_unclosed()
    if period is None:
        return None
    book = ViewPlans(conn, tenant)
    meters = Meters(conn, tenant)
    late = find_late(conn, state, UNBOUNDED, book, meters)
    row = tenant_row(conn, tenant)
    policy = (row.late_event_policy if row is not None else None) or default_policy
    if policy == "next_period" and not state.has_future_period():
        policy = "current_period"
    use, draft = draft_regular(
        conn,
        state,
        period,
        UNBOUNDED,
        book,
        meters,
        also_pending=late if policy == "next_period" else (),
        also_ignored=late if policy == "ignore" else (),
    )
    return state, period, use, draft
