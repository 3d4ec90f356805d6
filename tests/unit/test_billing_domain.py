"""Plans and subscription periods (domain/billing.py): validation, periods in IANA zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.billing import (
    Invoice,
    Plan,
    Subscription,
    SubscriptionState,
    invoice_id_for,
    parse_plan,
    plan_spec,
    revise_spec,
    to_us,
)
from domain.errors import Conflict, InvalidInput

KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
US = timedelta(microseconds=1)
TENANT = "0" * 31 + "1"

PLAN = {
    "key": "pro",
    "currency": "usd",
    "interval": "week",
    "base_fee": {"amount": 10, "timing": "in_advance"},
    "minimum_amount": "50",
    "included_credits": 2.5,
    "prices": [
        {"meter": "calls", "model": "per_unit", "unit_price": 0.015},
        {
            "meter": "tokens",
            "model": "graduated",
            "tiers": [{"up_to": 1000, "unit_price": "0.001"}, {"up_to": None, "unit_price": "0"}],
        },
    ],
}


def state(
    anchor: datetime, interval: str, tz: str, start: datetime | None = None
) -> SubscriptionState:
    return SubscriptionState(
        subscription_id="s",
        tenant_id=TENANT,
        customer="c",
        plan="pro",
        start_us=to_us(start or anchor),
        anchor_us=to_us(anchor),
        timezone=tz,
        interval=interval,
        currency="USD",
    )


# ----------------------------------------------------------------------------- plans


def test_a_plan_is_recorded_with_exact_decimal_strings() -> None:
    stored = parse_plan(PLAN)
    assert stored["currency"] == "USD"
    assert stored["base_fee"] == {"amount": "10", "timing": "in_advance"}
    assert stored["included_credits"] == "2.5"
    assert stored["prices"][0]["unit_price"] == "0.015"
    spec = plan_spec(stored)
    assert spec.in_advance and not spec.in_arrears
    assert [p.meter for p in spec.prices] == ["calls", "tokens"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"interval": "day"}, "interval"),
        ({"base_fee": {"amount": 1, "timing": "later"}}, "base_fee.timing"),
        ({"base_fee": {"amount": -1}}, "base_fee.amount"),
        ({"minimum_amount": "x"}, "minimum_amount"),
        ({"colour": "red"}, "colour"),
        ({"prices": [{"model": "per_unit", "unit_price": 1}]}, "prices.0.meter"),
        (
            {
                "prices": [
                    {
                        "meter": "a",
                        "model": "graduated",
                        "tiers": [
                            {"up_to": 5, "unit_price": 1},
                            {"up_to": 2, "unit_price": 1},
                            {"unit_price": 1},
                        ],
                    }
                ]
            },
            "prices.0.tiers.1.up_to",
        ),
        (
            {
                "prices": [
                    {"meter": "a", "model": "per_unit", "unit_price": 1},
                    {"meter": "a", "model": "per_unit", "unit_price": 2},
                ]
            },
            "prices.1.meter",
        ),
        ({"prices": [{"meter": "a", "model": "per_unit"}]}, "prices.0.unit_price"),
    ],
)
def test_an_invalid_plan_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_plan({**PLAN, **change})
    assert error.value.field == field


def test_a_revision_is_a_new_version_and_keeps_the_old_one() -> None:
    plan = Plan(tenant_id=TENANT, spec=parse_plan(PLAN))
    plan.revise(revise_spec(plan.spec(), {"minimum_amount": None, "name": "Pro 2"}))
    assert plan.latest == 2
    assert plan.spec(1)["minimum_amount"] == "50"
    assert plan.spec()["minimum_amount"] is None and plan.spec()["name"] == "Pro 2"
    with pytest.raises(InvalidInput) as error:
        revise_spec(plan.spec(), {"currency": "EUR"})
    assert error.value.field == "currency"


# ---------------------------------------------------------------------------- periods


def test_weekly_periods_in_kolkata_start_at_local_midnight_to_the_microsecond() -> None:
    # Monday 2026-03-02 00:00 IST = 2026-03-01 18:30 UTC
    anchor = datetime(2026, 3, 2, tzinfo=KOLKATA)
    s = state(anchor, "week", "Asia/Kolkata")
    boundary = datetime(2026, 3, 9, tzinfo=KOLKATA)
    assert s.first_period() == (to_us(anchor), to_us(boundary))
    assert s.period_of(to_us(boundary) - 1) == (to_us(anchor), to_us(boundary))
    assert s.period_of(to_us(boundary))[0] == to_us(boundary)
    assert datetime(2026, 3, 8, 18, 30, tzinfo=UTC) == boundary


def test_a_period_closes_once_its_end_plus_grace_has_passed() -> None:
    anchor = datetime(2026, 3, 2, tzinfo=KOLKATA)
    s = state(anchor, "week", "Asia/Kolkata")
    end = to_us(datetime(2026, 3, 9, tzinfo=KOLKATA))
    grace = 3600 * 10**6
    assert s.due(end + grace - 1, grace) == []
    assert s.due(end + grace, grace) == [(to_us(anchor), end)]
    assert len(s.due(end + grace + 7 * 86400 * 10**6, grace)) == 2


def test_monthly_anchor_on_the_31st_falls_on_month_ends_and_returns() -> None:
    anchor = datetime(2026, 1, 31, tzinfo=UTC)
    s = state(anchor, "month", "UTC")
    starts = []
    period = s.first_period()
    for _ in range(4):
        assert period is not None
        starts.append(period[0])
        period = s.period_from(period[1])
    assert starts == [
        to_us(datetime(2026, m, d, tzinfo=UTC)) for m, d in ((1, 31), (2, 28), (3, 31), (4, 30))
    ]


def test_a_month_across_the_spring_dst_change_is_an_hour_short() -> None:
    anchor = datetime(2026, 3, 1, tzinfo=NEW_YORK)  # EST
    s = state(anchor, "month", "America/New_York")
    start, end = s.first_period()
    assert end == to_us(datetime(2026, 4, 1, tzinfo=NEW_YORK))  # EDT
    assert timedelta(microseconds=end - start) == timedelta(days=31, hours=-1)


def test_a_first_period_before_the_anchor_is_partial() -> None:
    anchor = datetime(2026, 3, 1, tzinfo=UTC)
    s = state(anchor, "month", "UTC", start=datetime(2026, 3, 20, tzinfo=UTC))
    assert s.first_period() == (
        to_us(datetime(2026, 3, 20, tzinfo=UTC)),
        to_us(datetime(2026, 4, 1, tzinfo=UTC)),
    )


def test_cancellation_ends_the_periods_and_a_plan_change_applies_from_its_period() -> None:
    anchor = datetime(2026, 3, 1, tzinfo=UTC)
    s = state(anchor, "month", "UTC")
    april = to_us(datetime(2026, 4, 1, tzinfo=UTC))
    s.change_plan("max", april)
    assert s.plan_at(to_us(anchor)) == "pro" and s.plan_at(april) == "max"
    s.cancel(to_us(datetime(2026, 5, 1, tzinfo=UTC)))
    assert len(s.due(to_us(datetime(2027, 1, 1, tzinfo=UTC)), 0)) == 2


def test_usage_of_a_closed_period_cannot_be_cancelled() -> None:
    anchor = datetime(2026, 3, 1, tzinfo=UTC)
    sub = Subscription(
        tenant_id=TENANT,
        customer="c",
        number=1,
        plan="pro",
        start_at=anchor,
        billing_anchor=anchor,
        timezone="UTC",
        interval="month",
        currency="USD",
    )
    inside = to_us(datetime(2026, 3, 15, tzinfo=UTC))
    now = to_us(datetime(2026, 3, 20, tzinfo=UTC))
    sub.state.check_cancellable(inside, now, 0)  # open: fine
    end = to_us(datetime(2026, 4, 1, tzinfo=UTC))
    with pytest.raises(Conflict):  # past its end plus grace: a run may be closing it
        sub.state.check_cancellable(inside, end + 5, 5)
    sub.close(
        start_us=to_us(anchor),
        end_us=end,
        invoice_id="i",
        position=9,
        plan="pro",
        plan_version=1,
        advance_fee=None,
    )
    with pytest.raises(Conflict):
        sub.state.check_cancellable(inside, now, 0)


def test_state_round_trips_through_the_read_model_form() -> None:
    anchor = datetime(2026, 3, 1, tzinfo=UTC)
    sub = Subscription(
        tenant_id=TENANT,
        customer="c",
        number=1,
        plan="pro",
        start_at=anchor,
        billing_anchor=anchor,
        timezone="UTC",
        interval="month",
        currency="USD",
    )
    sub.close(
        start_us=1,
        end_us=2,
        invoice_id="i",
        position=9,
        plan="pro",
        plan_version=1,
        advance_fee="10.00",
    )
    sub.decide_late(
        policy="ignore",
        position=12,
        events=[{"event_id": "e", "period_start_us": 1}],
        adjustments=[{"id": "a", "period_start_us": 1}],
    )
    again = SubscriptionState.from_dict(sub.state.to_dict())
    assert again == sub.state
    assert again.ignored() == {"e"} and again.accounted_through == 12


def test_invoice_ids_are_deterministic_per_period_and_kind() -> None:
    from uuid import UUID

    tenant, sub = UUID(TENANT), UUID(int=7)
    assert invoice_id_for(tenant, sub, 5, "regular") == invoice_id_for(tenant, sub, 5, "regular")
    assert invoice_id_for(tenant, sub, 5, "regular") != invoice_id_for(tenant, sub, 6, "regular")
    assert invoice_id_for(tenant, sub, 5, "regular") != invoice_id_for(tenant, sub, 5, "opening")


def test_finalizing_an_invoice_leaves_the_recorded_lines_as_they_were() -> None:
    invoice = Invoice(
        tenant_id=TENANT,
        subscription_id="0" * 32,
        customer="c",
        kind="regular",
        key="regular",
        corrects=None,
        period_start_us=0,
        period_end_us=1,
        currency="USD",
        plan="pro",
        plan_version=1,
        closed_at_position=3,
    )
    invoice.add_line(line={"id": "l1", "amount": "1.005"})
    invoice.finalize(
        rounded={"l1": "1.01"},
        subtotal="1.01",
        credits_applied="0.00",
        wallet_applied="0.00",
        total="1.01",
    )
    events = invoice.collect_events()
    assert events[1].line == {"id": "l1", "amount": "1.005"}
    assert invoice.lines[0]["amount_rounded"] == "1.01"
    with pytest.raises(Conflict):
        invoice.add_line(line={"id": "l2"})
