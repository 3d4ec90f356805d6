"""Billing commands: plans, subscriptions and the tenant's late-event policy.

Billing runs themselves live in workers/billing.py: they read the usage read models,
which the application layer does not import.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.catalog import Catalog
from application.settings import Settings
from application.store import Ledger
from domain.billing import (
    CustomerSubscriptions,
    Plan,
    Subscription,
    customer_subscriptions_id_for,
    from_us,
    parse_plan,
    plan_id_for,
    plan_spec,
    revise_spec,
    to_us,
)
from domain.errors import Conflict, InvalidInput, NotFound
from domain.tenants import Tenant, check_late_event_policy

T = TypeVar("T")
RETRIES = 5


def parse_instant(value: Any, field: str) -> datetime:
    """An RFC 3339 instant (with an offset) from a string or an aware datetime, in UTC."""
    if isinstance(value, datetime):
        instant = value
    elif isinstance(value, str):
        try:
            instant = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{field} must be an RFC 3339 instant", field) from None
    else:
        raise InvalidInput(f"{field} must be an RFC 3339 instant", field)
    if instant.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone offset", field)
    return instant.astimezone(UTC)


def parse_subscription_id(text: str) -> UUID:
    try:
        return UUID(text.removeprefix("sub_"))
    except ValueError:
        raise NotFound(f"no subscription {text!r}", "id") from None


class Billing:
    """Commands over plans and subscriptions; each one a few events, saved together."""

    def __init__(self, ledger: Ledger, catalog: Catalog, settings: Settings) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.settings = settings

    # Plans

    def create_plan(self, tenant_id: UUID, data: dict[str, Any]) -> Plan:
        spec = parse_plan(data)
        self._check_meters(tenant_id, spec)
        plan = Plan(tenant_id=tenant_id.hex, spec=spec)
        try:
            self.ledger.save(plan)
        except IntegrityError:
            raise Conflict(f"plan {spec['key']!r} already exists", "key") from None
        return plan

    def revise_plan(self, tenant_id: UUID, key: str, changes: dict[str, Any]) -> Plan:
        """A new version of the plan; invoices issued from now on use it."""

        def revise() -> Plan:
            plan = self.plan(tenant_id, key)
            spec = revise_spec(plan.spec(), changes)
            self._check_meters(tenant_id, spec)
            if spec != plan.spec():
                plan.revise(spec)
                self.ledger.save(plan)
            return plan

        return _retrying(revise, f"plan {key!r}")

    def plan(self, tenant_id: UUID, key: str) -> Plan:
        plan = self._get(plan_id_for(tenant_id, key))
        if plan is None:
            raise NotFound(f"no plan {key!r}", "key")
        return plan

    def _check_meters(self, tenant_id: UUID, spec: dict[str, Any]) -> None:
        specs, _ = self.catalog.meters(tenant_id)
        for index, price in enumerate(spec["prices"]):
            meter = specs.get(price["meter"])
            if meter is None:
                raise InvalidInput(f"no meter {price['meter']!r}", f"prices.{index}.meter")
            if price["model"] == "percentage" and meter.aggregation != "SUM":
                raise InvalidInput(
                    "a percentage price needs a SUM meter (it prices each event's amount)",
                    f"prices.{index}.meter",
                )

    # Subscriptions

    def create_subscription(
        self, tenant_id: UUID, data: dict[str, Any], now: datetime
    ) -> Subscription:
        for name in data:
            if name not in ("customer", "plan", "start_at", "billing_anchor"):
                raise InvalidInput("unknown field", str(name))
        external_id = data.get("customer")
        if not isinstance(external_id, str) or not external_id:
            raise InvalidInput("customer is required", "customer")
        key = data.get("plan")
        if not isinstance(key, str) or not key:
            raise InvalidInput("plan is required", "plan")
        try:
            customer = self.catalog.get_customer(tenant_id, external_id)
        except NotFound:
            raise InvalidInput(f"no customer {external_id!r}", "customer") from None
        try:
            plan = self.plan(tenant_id, key)
        except NotFound:
            raise InvalidInput(f"no plan {key!r}", "plan") from None
        spec = plan_spec(plan.spec())
        if spec.currency != customer.currency:
            raise InvalidInput(
                f"plan {key!r} bills in {spec.currency}, customer {external_id!r} in "
                f"{customer.currency}",
                "plan",
            )
        start_at = parse_instant(data.get("start_at") or now, "start_at")
        anchor = parse_instant(data.get("billing_anchor") or start_at, "billing_anchor")

        def subscribe() -> Subscription:
            index = self._get(customer_subscriptions_id_for(tenant_id, external_id))
            if index is None:
                index = CustomerSubscriptions(tenant_id=tenant_id.hex, customer=external_id)
            for existing in index.subscriptions:
                self._get(UUID(existing)).check_active_at(to_us(start_at))
            subscription = Subscription(
                tenant_id=tenant_id.hex,
                customer=external_id,
                number=len(index.subscriptions) + 1,
                plan=key,
                start_at=start_at,
                billing_anchor=anchor,
                timezone=customer.timezone,
                interval=spec.interval,
                currency=spec.currency,
            )
            index.add(subscription.id.hex)
            self.ledger.save(subscription, index)
            return subscription

        return _retrying(subscribe, f"customer {external_id!r}")

    def subscription(self, tenant_id: UUID, subscription_id: str) -> Subscription:
        found = self._get(parse_subscription_id(subscription_id))
        if not isinstance(found, Subscription) or found.tenant_id != tenant_id.hex:
            raise NotFound(f"no subscription {subscription_id!r}", "id")
        return found

    def change_plan(
        self, tenant_id: UUID, subscription_id: str, data: dict[str, Any], now: datetime
    ) -> Subscription:
        """Move to another plan from the start of the next period (no proration)."""
        for name in data:
            if name != "plan":
                raise InvalidInput("unknown field (only plan can change)", str(name))
        key = data.get("plan")
        if not isinstance(key, str) or not key:
            raise InvalidInput("plan is required", "plan")
        try:
            new = plan_spec(self.plan(tenant_id, key).spec())
        except NotFound:
            raise InvalidInput(f"no plan {key!r}", "plan") from None

        def change() -> Subscription:
            subscription = self.subscription(tenant_id, subscription_id)
            state = subscription.state
            if new.interval != state.interval or new.currency != state.currency:
                raise InvalidInput(
                    f"plan {key!r} must bill every {state.interval} in {state.currency} "
                    "like the current one",
                    "plan",
                )
            effective = self._next_boundary(subscription, now)
            if effective is None:
                raise Conflict("the subscription has ended", "plan")
            subscription.change_plan(plan=key, effective_at=effective)
            self.ledger.save(subscription)
            return subscription

        return _retrying(change, f"subscription {subscription_id!r}")

    def cancel_subscription(
        self, tenant_id: UUID, subscription_id: str, now: datetime
    ) -> Subscription:
        """End the subscription at the end of its current period (nothing is prorated)."""

        def cancel() -> Subscription:
            subscription = self.subscription(tenant_id, subscription_id)
            state = subscription.state
            if to_us(now) < state.start_us:
                ends = state.start_us
            else:
                boundary = self._next_boundary(subscription, now)
                if boundary is None:
                    return subscription  # already ended
                ends = to_us(boundary)
            if state.ends_us is not None and state.ends_us <= ends:
                return subscription
            subscription.cancel(ends_at=from_us(ends))
            self.ledger.save(subscription)
            return subscription

        return _retrying(cancel, f"subscription {subscription_id!r}")

    @staticmethod
    def _next_boundary(subscription: Subscription, now: datetime) -> datetime | None:
        state = subscription.state
        at = max(to_us(now), state.start_us)
        period = state.period_of(at)
        return None if period is None else from_us(period[1])

    # Late-event policy

    def set_late_event_policy(self, tenant_id: UUID, policy: Any) -> Tenant:
        checked = check_late_event_policy(policy)

        def update() -> Tenant:
            tenant = self._tenant(tenant_id)
            if tenant.late_event_policy != checked:
                tenant.set_late_event_policy(checked)
                self.ledger.save(tenant)
            return tenant

        return _retrying(update, "tenant")

    def late_event_policy(self, tenant_id: UUID) -> str:
        """The tenant's policy, or the server's default (XTOPAY_LATE_EVENT_POLICY)."""
        return self._tenant(tenant_id).late_event_policy or self.settings.late_event_policy

    def _tenant(self, tenant_id: UUID) -> Tenant:
        tenant = self._get(tenant_id)
        if not isinstance(tenant, Tenant):
            raise NotFound("no such tenant", "tenant")
        return tenant

    # Usage corrections

    def check_usage_cancellable(
        self, tenant_id: UUID, customer: str, occurred_at: datetime, now: datetime
    ) -> None:
        """409 once the event's period is closed (or past its end plus the grace window,
        when a billing run may be closing it): a cancellation must not change an invoice."""
        index = self._get(customer_subscriptions_id_for(tenant_id, customer))
        if index is None:
            return
        grace = int(self.settings.grace_period.total_seconds() * 1_000_000)
        for subscription_id in index.subscriptions:
            subscription = self._get(UUID(subscription_id))
            subscription.state.check_cancellable(to_us(occurred_at), to_us(now), grace)

    def _get(self, aggregate_id: UUID) -> Any:
        try:
            return self.ledger.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None


def _retrying(command: Callable[[], T], what: str) -> T:
    """Run a load-change-save command again when another writer got there first."""
    for _ in range(RETRIES - 1):
        try:
            return command()
        except IntegrityError:
            continue
    try:
        return command()
    except IntegrityError:
        raise Conflict(f"{what} was changed concurrently; retry") from None
