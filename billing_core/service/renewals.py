"""Renewal orders: the next term of a deal, with its own prices and quantities.

A renewal order (``OrderIn.renews_order_id``, e.g. from a CPQ quote of type Renewal) names an
order of the deal it renews (the deal: that order and the orders it amends in turn). Its
subscriptions are new subscriptions from the renewal's start (the earliest start date of its
subscriptions), each with its own price, quantity and term (the product's defaults unless the
item says otherwise); the renewed deal's subscriptions end there. An auto-renew subscription
needs no renewal order (:mod:`billing_core.domain.terms`, rule 2): a renewal order is how the
next term gets other prices or quantities, or how one that does not renew goes on.

Rules kept here
- The renewal starts where the renewed terms end: every subscription of the deal in force the
  day before the start (not cancelled, started before it, ending after it) either has no
  committed term, or a term that ends on the start (an auto-renew one: the term holding the
  day before). Anything else refuses the renewal order (``RuleViolation`` naming
  ``renews_order_id`` and the subscription's term), and so does a subscription of the deal
  starting on or after the renewal's start: it would be billed beside the renewal.
- The renewed subscriptions end on the start (exclusive), by
  :func:`billing_core.service.subscriptions.end_subscription`: that is a term boundary, so no
  early-termination policy applies; a subscription that does not renew already ends there.
  A day already billed after it (an auto-renew annual term billed in advance before the
  renewal order came) is credited on the next invoice, while the renewal's subscriptions bill
  from the start: each day of the boundary period is billed once.
- Transactions: the caller's (orders are placed in their unit of work); the check reads
  before anything is written, the ends are written after the renewal order is inserted.
"""
from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts, orders, subscriptions
from billing_core.domain import terms
from billing_core.domain.errors import NotFound, RuleViolation, ValidationError
from billing_core.domain.states import ItemStatus, OrderStatus
from billing_core.service import subscriptions as subscription_service
from billing_core.service.deals import deal_orders


def renewed_subscriptions(uow: UnitOfWork, account_id: int, renews_order_id: object,
                          start: date) -> list[int]:
    """Check the renewal of ``renews_order_id``'s deal from ``start``; the ids of the
    subscriptions it ends there (see the module rules). Writes nothing."""
    if not isinstance(renews_order_id, int) or isinstance(renews_order_id, bool):
        raise ValidationError("renews_order_id", renews_order_id, "must be an order id")
    renewed = uow.conn.execute(select(orders.c.account_id, orders.c.status).where(
        orders.c.id == renews_order_id)).first()
    if renewed is None:
        raise NotFound("renews_order_id", renews_order_id)
    if renewed.account_id != account_id:
        raise ValidationError("renews_order_id", renews_order_id, "belongs to another account")
    if renewed.status == OrderStatus.CANCELLED:
        raise RuleViolation("renews_order_id", renews_order_id, "is cancelled")
    bcd = int(uow.conn.execute(select(accounts.c.bill_cycle_day).where(
        accounts.c.id == account_id)).scalar_one())
    out = []
    for sub in uow.conn.execute(select(subscriptions).where(
            subscriptions.c.order_id.in_(deal_orders(uow, renews_order_id)),
            subscriptions.c.status != ItemStatus.CANCELLED)
            .order_by(subscriptions.c.id)).mappings():
        if sub["end_date"] is not None and sub["end_date"] <= start:
            continue                                    # over by the renewal's start
        if sub["start_date"] >= start:
            raise RuleViolation("renews_order_id", renews_order_id,
                                f"its subscription {sub['id']} starts {sub['start_date']}, not "
                                f"before the renewal's start {start}")
        term = terms.make_term(sub["term_months"], sub["start_date"], sub["term_end"],
                               bool(sub["auto_renew"]), sub["frequency"], bcd)
        held = terms.term_on(term, start - timedelta(days=1))
        if held is not None and held[1] != start:
            raise RuleViolation("renews_order_id", renews_order_id,
                                f"its subscription {sub['id']}'s term runs {held[0]} to "
                                f"{held[1] - timedelta(days=1)}: a renewal starts at the "
                                f"term end {held[1]}, not {start}")
        out.append(int(sub["id"]))
    return out


def end_renewed(uow: UnitOfWork, subscription_ids: list[int], start: date) -> None:
    """End the renewed subscriptions on the renewal's start (a term boundary)."""
    for sid in subscription_ids:
        subscription_service.end_subscription(uow, sid, start)
