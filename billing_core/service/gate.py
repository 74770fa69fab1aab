"""The provisioning gate: how orders and quantity changes enter billing under credit control.

Rules kept here
- :func:`accept_order` takes an order exactly once per ``source_ref`` (a repeat returns the
  first order's id and creates nothing). It first brings the account's hold reasons up to date
  (so a CRM flag set earlier in the same transaction counts), then places the order and creates
  one provisioning request per subscription line / one-time item whose product
  ``needs_provisioning``.
  - Account not on hold: the order activates at once (billing starts) and its requests are
    ``pending``. If the order itself pushes exposure over the limit, the commit hook places
    ``credit_limit`` and the requests wait: the order was taken in good standing and is
    invoiced, but nothing is provisioned while the hold applies.
  - Account on hold: the order is ``held`` (taken, not activated, nothing billed) and its
    requests are ``awaiting_hold_release``. When the last reason goes, credit control activates
    held orders and pending changes in creation order and releases the requests.
- :func:`change_quantity` likewise: on hold the change is recorded ``pending`` (no proration, no
  quantity change) until release; a change of a provisioned product gets its own request.
- :func:`cancel_order` cancels the order and every request of it not yet sent.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    one_time_charges,
    orders,
    products,
    subscriptions,
)
from billing_core.domain.errors import NotFound
from billing_core.domain.money import to_decimal
from billing_core.service import orders as order_service
from billing_core.service.credit_control import reevaluate_account
from billing_core.service.provisioning import (
    cancel_order_requests,
    create_request,
    idempotency_key,
)
from config.settings import CreditPolicy


def accept_order(uow: UnitOfWork, data: order_service.OrderIn, *,
                 policy: CreditPolicy | None = None) -> int:
    """Take the order through the gate; returns its id (the existing one for a repeat)."""
    ref = (data.source_ref or "").strip()
    existing = order_service.find_order(uow, ref)
    if existing is not None:
        return existing
    # Also locks the account on PostgreSQL: a racing twin of this order waits here, then finds
    # the order below and returns it (only a newly placed order is 'accepted').
    on_hold = reevaluate_account(uow, data.account_id, policy).on_hold
    order_id = order_service.place_order(uow, data)
    status = uow.conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar_one()
    if status != "accepted":
        return order_id
    for table, column, prefix in ((subscriptions, "subscription_id", "sub"),
                                  (one_time_charges, "one_time_charge_id", "otc")):
        items = uow.conn.execute(
            select(table.c.id, table.c.product_id, table.c.quantity)
            .join(products, products.c.id == table.c.product_id)
            .where(table.c.order_id == order_id, products.c.needs_provisioning.is_(True))
            .order_by(table.c.id)).all()
        for item_id, product_id, quantity in items:
            create_request(uow, account_id=data.account_id, order_id=order_id,
                           product_id=product_id, quantity=quantity, on_hold=on_hold,
                           key=idempotency_key(ref, f"{prefix}:{item_id}"),
                           **{column: item_id})
    if on_hold:
        uow.conn.execute(update(orders).where(orders.c.id == order_id).values(status="held"))
    else:
        order_service.activate_order(uow, order_id)
    uow.touch(data.account_id)
    return order_id


def change_quantity(uow: UnitOfWork, subscription_id: int, new_quantity: Decimal | str | int,
                    effective_date: date, *, policy: CreditPolicy | None = None) -> int:
    """Record a quantity change through the gate; returns the change id."""
    sub = uow.conn.execute(
        select(subscriptions.c.account_id, subscriptions.c.order_id, subscriptions.c.product_id,
               products.c.needs_provisioning)
        .join(products, products.c.id == subscriptions.c.product_id)
        .where(subscriptions.c.id == subscription_id)).first()
    if sub is None:
        raise NotFound("subscription", subscription_id)
    on_hold = reevaluate_account(uow, sub.account_id, policy).on_hold
    change_id = order_service.change_quantity(uow, subscription_id, new_quantity, effective_date,
                                              pending=on_hold)
    if sub.needs_provisioning and sub.order_id is not None:
        ref = uow.conn.execute(select(orders.c.source_ref).where(
            orders.c.id == sub.order_id)).scalar_one()
        create_request(uow, account_id=sub.account_id, order_id=sub.order_id,
                       product_id=sub.product_id, quantity=to_decimal(new_quantity, "new_quantity"),
                       on_hold=on_hold, subscription_id=subscription_id,
                       key=idempotency_key(ref, f"change:{change_id}"))
    uow.touch(sub.account_id)
    return change_id


def cancel_order(uow: UnitOfWork, order_id: int) -> int:
    """Cancel the order; returns how many of its requests were cancelled before sending."""
    order_service.cancel_order(uow, order_id)
    return cancel_order_requests(uow, order_id)
