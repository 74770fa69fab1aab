"""Orders: exactly-once handoff, activation, cancellation, quantity changes."""
from datetime import date
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from billing_core.adapters.tables import (
    one_time_charges,
    orders,
    subscription_changes,
    subscriptions,
)
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.orders import (
    OneTimeItem,
    OrderIn,
    SubscriptionItem,
    activate_change,
    activate_order,
    cancel_order,
    change_quantity,
    place_order,
)
from billing_core.service.pricing import ProductIn, add_product, set_price


def _setup(uow):
    acc = create_account(uow, AccountIn(name="A", currency="USD", ext_id="A1"))
    seat = add_product(uow, ProductIn(sku="SEAT", name="Seat"))
    setup = add_product(uow, ProductIn(sku="SETUP", name="Setup", kind="one_time"))
    set_price(uow, seat, "USD", date(2026, 1, 1), "10")
    set_price(uow, setup, "USD", date(2026, 1, 1), "100")
    return acc, seat, setup


def test_same_source_ref_returns_the_same_order_and_writes_nothing(uow) -> None:
    acc, seat, setup = _setup(uow)
    data = OrderIn(acc, "sf:Q1:rev1", date(2026, 3, 1),
                   subscriptions=[SubscriptionItem(seat, "3", date(2026, 3, 1))],
                   one_time_charges=[OneTimeItem(setup, 1, date(2026, 3, 1))])
    first = place_order(uow, data)
    assert acc in uow.touched_accounts
    assert place_order(uow, data) == first
    assert len(uow.conn.execute(select(subscriptions)).all()) == 1
    assert len(uow.conn.execute(select(one_time_charges)).all()) == 1
    assert uow.conn.execute(select(orders.c.status)).scalar() == "accepted"
    assert uow.conn.execute(select(subscriptions.c.status)).scalar() == "pending"
    activate_order(uow, first)
    assert uow.conn.execute(select(orders.c.status)).scalar() == "active"
    assert uow.conn.execute(select(subscriptions.c.status)).scalar() == "active"
    assert uow.conn.execute(select(one_time_charges.c.status)).scalar() == "active"
    cancel_order(uow, first, date(2026, 3, 1))
    # an active subscription ends (billing credits what was billed after the end)
    assert uow.conn.execute(select(subscriptions.c.status, subscriptions.c.end_date)).one() == (
        "active", date(2026, 3, 1))


def test_bad_order_items_name_the_field(uow) -> None:
    acc, seat, setup = _setup(uow)
    with pytest.raises(ValidationError) as info:
        place_order(uow, OrderIn(acc, "r1", date(2026, 3, 1),
                                 subscriptions=[SubscriptionItem(setup, 1, date(2026, 3, 1))]))
    assert info.value.field == "subscriptions[0].product_id"
    with pytest.raises(ValidationError) as info:
        place_order(uow, OrderIn(acc, "r2", date(2026, 3, 1),
                                 subscriptions=[SubscriptionItem(seat, "-1", date(2026, 3, 1))]))
    assert info.value.field == "subscriptions[0].quantity"
    with pytest.raises(NotFound) as info:  # no USD price before 2026-01-01
        place_order(uow, OrderIn(acc, "r3", date(2025, 3, 1),
                                 subscriptions=[SubscriptionItem(seat, 1, date(2025, 3, 1))]))
    assert "2025-03-01" in str(info.value)


def test_pending_change_takes_effect_when_activated(uow) -> None:
    acc, seat, _ = _setup(uow)
    order = place_order(uow, OrderIn(acc, "r", date(2026, 3, 1),
                                     subscriptions=[SubscriptionItem(seat, 2, date(2026, 3, 1))]))
    activate_order(uow, order)
    sub = uow.conn.execute(select(subscriptions.c.id)).scalar()
    change = change_quantity(uow, sub, 5, date(2026, 3, 10), pending=True)
    assert uow.conn.execute(select(subscriptions.c.quantity)).scalar() == D(2)
    activate_change(uow, change)
    assert uow.conn.execute(select(subscriptions.c.quantity)).scalar() == D(5)
    assert uow.conn.execute(select(subscription_changes.c.status)).scalar() == "active"
