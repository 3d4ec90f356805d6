"""Plans, subscriptions and invoices: the billing aggregates and their period arithmetic.

Pure: no I/O, no clock (every instant is passed in). Instants inside billing events are
microseconds since the epoch (`*_us`), exact and sortable; the subscription's own dates
are datetimes.

A subscription is also the billing cursor of its customer: every billing step appends to
it what it did (period opened, period closed, late usage decided) together with the
invoices it issued, in one atomic save. Two runs racing on one subscription conflict on
its version, so a period is closed once; invoice ids are deterministic as a second guard.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.catalog import check_currency
from domain.errors import Conflict, InvalidInput
from domain.instants import from_us, to_us
from domain.periods import INTERVALS, period_containing
from domain.pricing import Price, PriceError, parse_price

TIMINGS = ("in_advance", "in_arrears")
LATE_POLICIES = ("next_period", "current_period", "ignore")
INVOICE_KINDS = ("opening", "regular", "adjustment")
_ZERO = Decimal(0)


# ------------------------------------------------------------------------------- ids


def plan_id_for(tenant_id: UUID, key: str) -> UUID:
    """One plan per (tenant, key); its versions are events of that one aggregate."""
    return uuid5(tenant_id, f"plan:{key}")


def subscription_id_for(tenant_id: UUID, customer: str, number: int) -> UUID:
    """The customer's `number`-th subscription (1-based)."""
    return uuid5(tenant_id, f"subscription:{customer}:{number}")


def customer_subscriptions_id_for(tenant_id: UUID, customer: str) -> UUID:
    return uuid5(tenant_id, f"customer-subscriptions:{customer}")


def invoice_id_for(tenant_id: UUID, subscription_id: UUID, period_start_us: int, kind: str) -> UUID:
    """Deterministic: a rerun after a crash computes the same id and cannot issue twice."""
    return uuid5(tenant_id, f"invoice:{subscription_id}:{period_start_us}:{kind}")


def line_id_for(invoice_id: UUID, number: int) -> UUID:
    return uuid5(invoice_id, f"line:{number}")


# ------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class PlanSpec:
    """One version of a plan, parsed from its recorded dict."""

    key: str
    name: str
    currency: str
    interval: str
    base_fee: Decimal
    base_fee_timing: str
    minimum_amount: Decimal | None
    included_credits: Decimal
    prices: tuple[Price, ...]

    @property
    def in_advance(self) -> bool:
        return self.base_fee > 0 and self.base_fee_timing == "in_advance"

    @property
    def in_arrears(self) -> bool:
        return self.base_fee > 0 and self.base_fee_timing == "in_arrears"


def parse_plan(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a plan from its JSON shape; answer the form recorded in events.

    Numbers are recorded as decimal strings, so a version reads back exactly as sent.
    InvalidInput names the field (``prices.1.tiers.0.up_to``).
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("a plan must be an object")
    known = {"key", "name", "currency", "interval", "base_fee", "minimum_amount"}
    known |= {"included_credits", "prices", "description"}
    for name in data:
        if name not in known:
            raise InvalidInput("unknown field", str(name))
    key = data.get("key")
    if not isinstance(key, str) or not key.strip() or len(key) > 100:
        raise InvalidInput("key is required (1-100 characters)", "key")
    interval = data.get("interval", "month")
    if interval not in INTERVALS:
        raise InvalidInput(f"interval must be one of {', '.join(sorted(INTERVALS))}", "interval")
    currency = data.get("currency", "USD")
    if not isinstance(currency, str):
        raise InvalidInput("currency must be a 3-letter ISO 4217 code", "currency")
    fee = data.get("base_fee")
    base_fee: dict[str, str] | None = None
    if fee is not None:
        if not isinstance(fee, Mapping):
            raise InvalidInput('base_fee must be {"amount", "timing"}', "base_fee")
        for name in fee:
            if name not in ("amount", "timing"):
                raise InvalidInput("unknown field", f"base_fee.{name}")
        timing = fee.get("timing", "in_arrears")
        if timing not in TIMINGS:
            raise InvalidInput(f"timing must be one of {', '.join(TIMINGS)}", "base_fee.timing")
        base_fee = {"amount": _money(fee.get("amount"), "base_fee.amount"), "timing": timing}
    prices = data.get("prices") or []
    if not isinstance(prices, list):
        raise InvalidInput("prices must be a list", "prices")
    parsed: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, raw in enumerate(prices):
        where = f"prices.{index}"
        if not isinstance(raw, Mapping):
            raise InvalidInput("a price must be an object", where)
        if not isinstance(raw.get("meter"), str) or not raw["meter"]:
            raise InvalidInput("a plan's price names its meter", f"{where}.meter")
        if raw["meter"] in seen:
            raise InvalidInput(f"meter {raw['meter']!r} is priced twice", f"{where}.meter")
        seen.add(raw["meter"])
        stored = _stringify(dict(raw))
        try:
            parse_price(stored)
        except PriceError as error:
            raise InvalidInput(error.message, f"{where}.{error.field}".rstrip(".")) from None
        parsed.append(stored)
    return {
        "key": key,
        "name": str(data.get("name") or key),
        "description": data.get("description"),
        "currency": check_currency(currency),
        "interval": interval,
        "base_fee": base_fee,
        "minimum_amount": _optional_money(data.get("minimum_amount"), "minimum_amount"),
        "included_credits": _optional_money(data.get("included_credits"), "included_credits"),
        "prices": parsed,
    }


def plan_spec(stored: Mapping[str, Any]) -> PlanSpec:
    """The typed view of a recorded (already validated) plan version."""
    fee = stored.get("base_fee") or {}
    minimum = stored.get("minimum_amount")
    credits = stored.get("included_credits")
    return PlanSpec(
        key=stored["key"],
        name=stored["name"],
        currency=stored["currency"],
        interval=stored["interval"],
        base_fee=Decimal(fee.get("amount") or 0),
        base_fee_timing=fee.get("timing") or "in_arrears",
        minimum_amount=None if minimum is None else Decimal(minimum),
        included_credits=_ZERO if credits is None else Decimal(credits),
        prices=tuple(parse_price(p) for p in stored["prices"]),
    )


def revise_spec(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A new version: the current spec with `changes`; key, currency and interval stay."""
    for name in ("key", "currency", "interval"):
        if name in changes and changes[name] != current[name]:
            raise InvalidInput(
                f"a plan's {name} cannot change (subscriptions bill in it); create a new plan",
                name,
            )
    merged = {k: v for k, v in current.items() if k != "description" or v is not None}
    merged.update(changes)
    return parse_plan(merged)


def _stringify(value: Any) -> Any:
    """Numbers as decimal strings (floats through str, never Decimal(float))."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stringify(v) for v in value]
    return value


def _money(raw: Any, where: str) -> str:
    if raw is None:
        raise InvalidInput("is required", where)
    try:
        number = Decimal(str(raw).strip()) if not isinstance(raw, bool) else None
    except ArithmeticError:
        number = None
    if number is None or not number.is_finite():
        raise InvalidInput("must be a decimal number", where)
    if number < 0:
        raise InvalidInput("must not be negative", where)
    if number and (number.adjusted() >= 30 or number.as_tuple().exponent < -30):  # type: ignore[operator]
        raise InvalidInput("is out of range", where)
    return str(number)


def _optional_money(raw: Any, where: str) -> str | None:
    return None if raw is None else _money(raw, where)


class Plan(Aggregate):
    """A tenant's plan. Every change is a new version; all versions are kept, so an
    invoice can name the version it used and a correction reprices with it."""

    @event("Created")
    def __init__(self, tenant_id: str, spec: dict[str, Any]) -> None:
        self.tenant_id = tenant_id
        self.key = spec["key"]
        self.versions: dict[int, dict[str, Any]] = {1: spec}
        self.latest = 1

    @staticmethod
    def create_id(tenant_id: str, spec: dict[str, Any]) -> UUID:
        return plan_id_for(UUID(tenant_id), spec["key"])

    @event("Revised")
    def revise(self, spec: dict[str, Any]) -> None:
        """The plan changed: a new version, used by every period invoiced from now on."""
        self.latest += 1
        self.versions[self.latest] = spec

    def spec(self, version: int | None = None) -> dict[str, Any]:
        return self.versions[version or self.latest]


# ---------------------------------------------------------------------- subscriptions


@dataclass
class ClosedPeriod:
    """A period whose regular invoice is issued; `position` is the log position billed up to."""

    start_us: int
    end_us: int
    invoice_id: str
    position: int
    plan: str
    plan_version: int
    advance_fee: str | None = None  # base fee billed on this invoice for the next period


@dataclass
class LateDecision:
    """What happened to one usage event that arrived after its period closed."""

    policy: str
    period_start_us: int
    decided_at: int  # the log position of the billing step that decided


@dataclass
class SubscriptionState:
    """Everything billing needs to know about a subscription, as plain data.

    The `Subscription` aggregate holds one and mutates it through the methods below; the
    invoices projection applies the same methods to the same events, so the read model and
    the aggregate never disagree about periods, plans or late usage.
    """

    subscription_id: str
    tenant_id: str
    customer: str
    plan: str
    start_us: int
    anchor_us: int
    timezone: str
    interval: str
    currency: str
    plan_changes: list[tuple[int, str]] = field(default_factory=list)
    ends_us: int | None = None
    opening_invoice_id: str | None = None
    opening_fee: str | None = None
    closed: list[ClosedPeriod] = field(default_factory=list)
    accounted_through: int = 0
    late: dict[str, LateDecision] = field(default_factory=dict)
    adjustments: dict[int, list[str]] = field(default_factory=dict)

    # -- serialisation (read model)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["adjustments"] = {str(k): v for k, v in self.adjustments.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubscriptionState:
        values = dict(data)
        values["plan_changes"] = [tuple(x) for x in values.get("plan_changes", [])]
        values["closed"] = [ClosedPeriod(**c) for c in values.get("closed", [])]
        values["late"] = {k: LateDecision(**v) for k, v in values.get("late", {}).items()}
        values["adjustments"] = {int(k): v for k, v in values.get("adjustments", {}).items()}
        return cls(**values)

    # -- the events, applied

    def change_plan(self, plan: str, effective_us: int) -> None:
        self.plan_changes.append((effective_us, plan))

    def cancel(self, ends_us: int) -> None:
        self.ends_us = ends_us

    def open_first(self, invoice_id: str, fee: str, position: int) -> None:
        self.opening_invoice_id = invoice_id
        self.opening_fee = fee
        self.accounted_through = max(self.accounted_through, position)

    def close(self, period: ClosedPeriod) -> None:
        self.closed.append(period)
        self.accounted_through = max(self.accounted_through, period.position)

    def decide_late(
        self, policy: str, position: int, events: list[dict[str, Any]], adjustments: list[str]
    ) -> None:
        for item in events:
            self.late[item["event_id"]] = LateDecision(policy, item["period_start_us"], position)
        for invoice in adjustments:
            self.adjustments.setdefault(int(invoice["period_start_us"]), []).append(invoice["id"])
        self.accounted_through = max(self.accounted_through, position)

    # -- periods

    @property
    def anchor(self) -> datetime:
        return from_us(self.anchor_us)

    def period_from(self, start_us: int) -> tuple[int, int] | None:
        """The subscription's period starting at `start_us` (None: past its end)."""
        if self.ends_us is not None and start_us >= self.ends_us:
            return None
        period = period_containing(from_us(start_us), self.anchor, self.interval, self.timezone)
        return start_us, to_us(period.end)

    def first_period(self) -> tuple[int, int] | None:
        """Period 0 runs from start_at to the first anchor boundary after it."""
        return self.period_from(self.start_us)

    def next_unclosed(self) -> tuple[int, int] | None:
        if self.closed:
            return self.period_from(self.closed[-1].end_us)
        return self.first_period()

    def period_of(self, at_us: int) -> tuple[int, int] | None:
        """The subscription period containing an instant (None: outside the subscription)."""
        if at_us < self.start_us or (self.ends_us is not None and at_us >= self.ends_us):
            return None
        period = period_containing(from_us(at_us), self.anchor, self.interval, self.timezone)
        return max(to_us(period.start), self.start_us), to_us(period.end)

    def due(self, as_of_us: int, grace_us: int) -> list[tuple[int, int]]:
        """Unclosed periods whose end plus the grace window is at or before `as_of`."""
        result = []
        period = self.next_unclosed()
        while period is not None and period[1] + grace_us <= as_of_us:
            result.append(period)
            period = self.period_from(period[1])
        return result

    def open_period(self, now_us: int) -> tuple[int, int] | None:
        """The period the next regular invoice will close: the first unclosed one."""
        return self.next_unclosed()

    def plan_at(self, start_us: int) -> str:
        """The plan in effect for the period starting at `start_us`."""
        plan = self.plan
        for effective, key in self.plan_changes:
            if effective <= start_us:
                plan = key
        return plan

    def closed_at(self, at_us: int) -> ClosedPeriod | None:
        """The closed period containing an instant, if any."""
        starts = [c.start_us for c in self.closed]
        index = bisect.bisect_right(starts, at_us) - 1
        if index >= 0 and at_us < self.closed[index].end_us:
            return self.closed[index]
        return None

    def last_close_position(self) -> int:
        return self.closed[-1].position if self.closed else -1

    def pending_next_period(self) -> set[str]:
        """Late events decided next_period and not yet billed by a regular invoice."""
        bound = self.last_close_position()
        return {
            event_id
            for event_id, d in self.late.items()
            if d.policy == "next_period" and d.decided_at > bound
        }

    def ignored(self) -> set[str]:
        return {event_id for event_id, d in self.late.items() if d.policy == "ignore"}

    def has_future_period(self) -> bool:
        """Is there a period after the last closed one (for next_period late usage)?"""
        return self.next_unclosed() is not None

    def check_cancellable(self, at_us: int, now_us: int, grace_us: int) -> None:
        """A usage event can be cancelled while its period is open, never once it closes."""
        closed = self.closed_at(at_us)
        period = self.period_of(at_us)
        if closed is not None or (period is not None and period[1] + grace_us <= now_us):
            raise Conflict(
                "the event's billing period is closed or being invoiced; "
                "a correction would be a new document, not a cancellation",
                "id",
            )


class Subscription(Aggregate):
    """A customer on a plan, billed period by period in the customer's time zone.

    The time zone is a snapshot taken at the start: a later change of the customer's
    zone would re-cut periods that are already invoiced.
    """

    @event("Started")
    def __init__(
        self,
        tenant_id: str,
        customer: str,
        number: int,
        plan: str,
        start_at: datetime,
        billing_anchor: datetime,
        timezone: str,
        interval: str,
        currency: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.state = SubscriptionState(
            subscription_id=self.id.hex,
            tenant_id=tenant_id,
            customer=customer,
            plan=plan,
            start_us=to_us(start_at),
            anchor_us=to_us(billing_anchor),
            timezone=timezone,
            interval=interval,
            currency=currency,
        )

    @staticmethod
    def create_id(tenant_id: str, customer: str, number: int, **_: Any) -> UUID:
        return subscription_id_for(UUID(tenant_id), customer, number)

    @event("PlanChanged")
    def change_plan(self, plan: str, effective_at: datetime) -> None:
        """The customer moves to another plan from the start of a later period."""
        self.state.change_plan(plan, to_us(effective_at))

    @event("Cancelled")
    def cancel(self, ends_at: datetime) -> None:
        """The subscription ends at the end of its current period; nothing after is billed."""
        self.state.cancel(to_us(ends_at))

    @event("PeriodOpened")
    def open_first(self, invoice_id: str, fee: str, position: int) -> None:
        """The first period's base fee was invoiced in advance, at its start."""
        self.state.open_first(invoice_id, fee, position)

    @event("PeriodClosed")
    def close(
        self,
        start_us: int,
        end_us: int,
        invoice_id: str,
        position: int,
        plan: str,
        plan_version: int,
        advance_fee: str | None,
    ) -> None:
        """A period ended and its invoice was issued, with usage up to `position` in the log."""
        self.state.close(
            ClosedPeriod(start_us, end_us, invoice_id, position, plan, plan_version, advance_fee)
        )

    @event("LateUsageDecided")
    def decide_late(
        self,
        policy: str,
        position: int,
        events: list[dict[str, Any]],
        adjustments: list[dict],
        tenant_id: str = "",
        customer: str = "",
    ) -> None:
        """Usage arrived for periods already closed; the tenant's policy decided its fate:
        billed in the next period, adjusted on the closed period, or ignored. (`tenant_id`
        and `customer` repeat the subscription's, for the `usage.late_event` webhook.)"""
        self.state.decide_late(policy, position, events, adjustments)

    def check_active_at(self, instant_us: int) -> None:
        ends = self.state.ends_us
        if ends is None or ends > instant_us:
            raise Conflict(
                f"customer {self.state.customer!r} already has an active subscription "
                f"sub_{self.id.hex}",
                "customer",
            )


class CustomerSubscriptions(Aggregate):
    """The subscriptions of one customer, so a new one is checked against the others."""

    @event("Started")
    def __init__(self, tenant_id: str, customer: str) -> None:
        self.tenant_id = tenant_id
        self.customer = customer
        self.subscriptions: list[str] = []

    @staticmethod
    def create_id(tenant_id: str, customer: str) -> UUID:
        return customer_subscriptions_id_for(UUID(tenant_id), customer)

    @event("Added")
    def add(self, subscription_id: str) -> None:
        """The customer subscribed once more."""
        self.subscriptions.append(subscription_id)


# ---------------------------------------------------------------------------- invoices


class Invoice(Aggregate):
    """An invoice: drafted, its lines added (each with the trace of its usage), finalized.
    All three are recorded in one save, so an invoice exists whole or not at all; a
    finalized invoice never changes (corrections are adjustment invoices naming it)."""

    @event("Drafted")
    def __init__(
        self,
        tenant_id: str,
        subscription_id: str,
        customer: str,
        kind: str,
        key: str,
        corrects: str | None,
        period_start_us: int,
        period_end_us: int,
        currency: str,
        plan: str,
        plan_version: int,
        closed_at_position: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.subscription_id = subscription_id
        self.customer = customer
        self.kind = kind
        self.key = key
        self.corrects = corrects
        self.period_start_us = period_start_us
        self.period_end_us = period_end_us
        self.currency = currency
        self.plan = plan
        self.plan_version = plan_version
        self.closed_at_position = closed_at_position
        self.lines: list[dict[str, Any]] = []
        self.status = "draft"
        self.totals: dict[str, str] = {}

    @staticmethod
    def create_id(
        tenant_id: str, subscription_id: str, key: str, period_start_us: int, **_: Any
    ) -> UUID:
        """`key` is the kind, numbered for adjustments ("adjustment:2")."""
        return invoice_id_for(UUID(tenant_id), UUID(subscription_id), period_start_us, key)

    @event("LineAdded")
    def add_line(self, line: dict[str, Any]) -> None:
        """One line: what was charged, how it was priced, and which usage is behind it."""
        self.check_draft()
        self.lines.append(dict(line))  # a copy: finalizing must not touch the event

    @event("Finalized")
    def finalize(
        self,
        rounded: dict[str, str],
        subtotal: str,
        credits_applied: str,
        wallet_applied: str,
        total: str,
        tenant_id: str = "",
        customer: str = "",
        currency: str = "",
    ) -> None:
        """Each line rounded to the currency's minor unit; the total is their sum less
        credits. From here on the invoice never changes. (`tenant_id`, `customer` and
        `currency` repeat the invoice's, for the `invoice.finalized` webhook.)"""
        self.check_draft()
        for line in self.lines:
            line["amount_rounded"] = rounded[line["id"]]
        self.totals = {
            "subtotal": subtotal,
            "credits_applied": credits_applied,
            "wallet_applied": wallet_applied,
            "total": total,
        }
        self.status = "finalized"

    def check_draft(self) -> None:
        if self.status != "draft":
            raise Conflict(f"invoice inv_{self.id.hex} is {self.status}; it never changes")
