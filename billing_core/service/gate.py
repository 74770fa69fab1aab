"""The provisioning gate: how orders and quantity changes enter billing under credit control.

Rules kept here
- :func:`accept_order` takes an order exactly once per ``source_ref`` (a repeat returns the
  first order's id and creates nothing). It first brings the account's hold reasons up to date
  (so a CRM flag set earlier in the same transaction counts), then places the order and creates
  one provisioning request per subscription line / one-time item whose product
  ``needs_provisioning``. :func:`accept_orders` does the same for a batch with a few statements
  per batch, deciding an account's orders in their batch order, and answers each order with
  its id or the error that refused it.
  - Account not on hold: the order activates at once (billing starts) and its requests are
    ``pending``. If the order itself pushes exposure over the limit, the commit hook places
    ``credit_limit`` and the requests wait: the order was taken in good standing and is
    invoiced, but nothing is provisioned while the hold applies.
  - Account on hold: the order is ``held`` (taken, not activated, nothing billed) and its
    requests are ``awaiting_hold_release``. When the last reason goes, credit control activates
    held orders and pending changes in creation order and releases the requests.
- :func:`change_quantity` likewise: on hold the change is recorded ``pending`` (no proration, no
  quantity change) until release. A change of a provisioned product gets its own request,
  dated by the date the change takes effect (a decrease a committed term defers: the term
  end): ``increase`` (above the quantity in effect just before that date, as recorded; waits
  while on hold, like a new order) or ``decrease`` (not above it; never held, so reducing
  service never waits for a hold lift, while billing still records the change ``pending``
  and credits it from its date on release). The kind is decided when the change is recorded.
  Quantity 0 from a date is :func:`end_subscription` at that date.
- :func:`end_subscription` ends (cancels) a subscription now or at a date, hold or not (an end
  only lowers exposure); the days billed in advance after it are credited on the next invoice
  (:mod:`billing_core.service.subscriptions`). A provisioned subscription gets a
  ``deprovision`` request (quantity 0) dated by its end (:func:`record_end`): never held, and
  its unsent requests dated on or after the end are cancelled. So does a subscription ordered
  with an end (an end date, or a term without auto-renew), when its order is taken. One that
  never started (cancelled) has its unsent requests cancelled and no deprovision.
- :func:`cancel_order` cancels the order (its active subscriptions end at the cancellation date,
  credited the same way, each with its ``deprovision`` request) and what of it is not sent yet
  and would add (provisions, increases); a decrease or an end already queued still goes,
  except for a subscription cancelled before it started (nothing of it goes).
- A renewal order (``renews_order_id``): its subscriptions' ``provision`` requests are dated
  by their start (not sent before it), and each provisioned subscription of the renewed deal
  that the renewal ended gets its ``deprovision`` dated by that end: the old term goes and the
  new one comes on the same day, never both at once.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from billing_core.adapters.bulk import id_in
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    one_time_charges,
    orders,
    products,
    subscription_changes,
    subscriptions,
)
from billing_core.adapters.tables import provisioning_requests as pr
from billing_core.domain.credit import CreditPolicy
from billing_core.domain.errors import LedgerError, NotFound, ValidationError
from billing_core.domain.money import to_decimal
from billing_core.domain.states import ChangeKind, ItemStatus, OrderStatus
from billing_core.domain.states import ProvisioningState as State
from billing_core.service import audit
from billing_core.service import orders as order_service
from billing_core.service import subscriptions as subscription_service
from billing_core.service.credit_control import reevaluate_account, reevaluate_accounts
from billing_core.service.deals import deal_orders
from billing_core.service.provisioning import (
    NewRequest,
    cancel_from,
    cancel_order_requests,
    cancel_subscription_requests,
    create_requests,
    idempotency_key,
)


def accept_order(uow: UnitOfWork, data: order_service.OrderIn, *,
                 policy: CreditPolicy | None = None) -> int:
    """Take the order through the gate; returns its id (the existing one for a repeat)."""
    result = accept_orders(uow, [data], policy=policy)[0]
    if isinstance(result, LedgerError):
        raise result
    return result


def accept_orders(uow: UnitOfWork, items: Sequence[order_service.OrderIn], *,
                  policy: CreditPolicy | None = None) -> list[int | LedgerError]:
    """:func:`accept_order` for a batch, answered per item in the given order: the order id,
    or the error that refused that order (nothing of it written; the others go on).

    The batch goes in rounds, each holding at most one new order per account (an account's
    second order is decided after its first, as one at a time would): per round, one credit
    evaluation of its accounts, one :func:`orders.place_orders`, and the provisioning requests
    and activations written with one statement per table."""
    refs = [(d.source_ref or "").strip() for d in items]
    known = order_service.find_orders(uow, refs)
    results: list[int | LedgerError | None] = [None] * len(items)
    rounds: list[list[int]] = []
    depth: dict[object, int] = {}
    for i, (data, ref) in enumerate(zip(items, refs, strict=True)):
        if ref and ref in known:
            results[i] = known[ref]         # a repeat: nothing to evaluate or write
            continue
        n = depth.get(data.account_id, 0)
        depth[data.account_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    for batch in rounds:
        for i, result in zip(batch, _accept_round(uow, [items[i] for i in batch], policy),
                             strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _accept_round(uow: UnitOfWork, items: list[order_service.OrderIn],
                  policy: CreditPolicy | None) -> list[int | LedgerError]:
    # The evaluation brings the reasons up to date (a CRM flag set earlier in this transaction
    # counts) and, on PostgreSQL, locks the accounts: a racing twin of an order waits here,
    # then place_orders finds the order and answers it (only a new order is gated).
    ids = sorted({d.account_id for d in items if isinstance(d.account_id, int)})
    existing = [int(i) for i in uow.conn.scalars(select(accounts.c.id).where(
        id_in(uow.conn, accounts.c.id, ids)))]
    on_hold = {e.account_id: e.on_hold
               for e in reevaluate_accounts(uow, existing, policy)}
    placed = order_service.place_orders(uow, items)
    new = {p.order_id: d for d, p in zip(items, placed, strict=True)
           if isinstance(p, order_service.Placement) and p.created}
    if new:
        _create_requests(uow, new, on_hold)
        held = sorted(o for o, d in new.items() if on_hold.get(d.account_id))
        if held:
            uow.conn.execute(update(orders).where(id_in(uow.conn, orders.c.id, held))
                             .values(status=OrderStatus.HELD))
            audit.record_many(uow, [audit.Entry(
                "held", "order", o, new[o].source_ref, new[o].account_id,
                {"status": [OrderStatus.ACCEPTED.value, OrderStatus.HELD.value]}) for o in held])
        order_service.activate_orders(uow, sorted(set(new) - set(held)))
        for d in new.values():
            uow.touch(d.account_id)
    return [p if isinstance(p, LedgerError) else p.order_id for p in placed]


def _create_requests(uow: UnitOfWork, new: dict[int, order_service.OrderIn],
                     on_hold: dict[int, bool]) -> None:
    """One provisioning request per item of a product that needs provisioning, in the order
    one order at a time creates them (order, then subscriptions before charges, then id).
    A renewal's subscriptions are provisioned from their start (dated, so not before it), and
    the renewed subscriptions it ends there get their ``deprovision`` for that day: a receiver
    keyed by subscription sees the old term go and the new one come on the same day, never
    both at once."""
    wanted: list[tuple[int, int, int, int, Any, str, date | None]] = []
    for kind, (table, prefix) in enumerate(((subscriptions, "sub"), (one_time_charges, "otc"))):
        starts = subscriptions.c.start_date if kind == 0 else one_time_charges.c.charge_date
        for item_id, order_id, product_id, quantity, start in uow.conn.execute(
                select(table.c.id, table.c.order_id, table.c.product_id, table.c.quantity,
                       starts)
                .join(products, products.c.id == table.c.product_id)
                .where(id_in(uow.conn, table.c.order_id, sorted(new)),
                       products.c.needs_provisioning.is_(True))):
            dated = start if kind == 0 and new[int(order_id)].renews_order_id is not None \
                else None
            wanted.append((int(order_id), kind, int(item_id), int(product_id), quantity, prefix,
                           dated))
    create_requests(uow, [
        NewRequest(account_id=new[order_id].account_id, order_id=order_id,
                   product_id=product_id, quantity=quantity,
                   key=idempotency_key(new[order_id].source_ref.strip(), f"{prefix}:{item_id}"),
                   on_hold=bool(on_hold.get(new[order_id].account_id)),
                   subscription_id=item_id if kind == 0 else None,
                   one_time_charge_id=item_id if kind == 1 else None, effective_date=dated)
        for order_id, kind, item_id, product_id, quantity, prefix, dated in sorted(
            wanted, key=lambda w: w[:6])])
    for data in new.values():
        if data.renews_order_id is not None:
            _end_renewed(uow, int(data.renews_order_id))
    ending = uow.conn.execute(
        select(subscriptions.c.id, subscriptions.c.end_date)
        .join(products, products.c.id == subscriptions.c.product_id)
        .where(id_in(uow.conn, subscriptions.c.order_id, sorted(new)),
               subscriptions.c.end_date.is_not(None),
               products.c.needs_provisioning.is_(True)).order_by(subscriptions.c.id)).all()
    for sid, end in ending:
        record_end(uow, int(sid), end)


def _end_renewed(uow: UnitOfWork, renewed_order_id: int) -> None:
    """The ``deprovision`` of each subscription of the renewed deal that has ended (the
    renewal ended them at its start; one ended before keeps the request it has: once per
    date)."""
    for sid, end in uow.conn.execute(
            select(subscriptions.c.id, subscriptions.c.end_date)
            .join(products, products.c.id == subscriptions.c.product_id)
            .where(id_in(uow.conn, subscriptions.c.order_id,
                         deal_orders(uow, renewed_order_id)),
                   subscriptions.c.end_date.is_not(None),
                   products.c.needs_provisioning.is_(True)).order_by(subscriptions.c.id)).all():
        record_end(uow, int(sid), end)


def change_quantity(uow: UnitOfWork, subscription_id: int, new_quantity: Decimal | str | int,
                    effective_date: date, *, policy: CreditPolicy | None = None) -> int | None:
    """Record a quantity change through the gate; returns the change id (None for quantity 0:
    the subscription ends at ``effective_date``)."""
    if to_decimal(new_quantity, "quantity") == 0:
        if not isinstance(effective_date, date):
            raise ValidationError("effective_date", effective_date, "must be a date")
        end_subscription(uow, subscription_id, effective_date)
        return None
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
        change = uow.conn.execute(select(
            subscription_changes.c.effective_date, subscription_changes.c.old_quantity,
            subscription_changes.c.new_quantity).where(
            subscription_changes.c.id == change_id)).one()
        # every change, even to the quantity in effect: a change recorded later with an
        # earlier date re-chains the history and can make this one move the quantity
        ref = uow.conn.execute(select(orders.c.source_ref).where(
            orders.c.id == sub.order_id)).scalar_one()
        create_requests(uow, [NewRequest(
            account_id=sub.account_id, order_id=sub.order_id, product_id=sub.product_id,
            quantity=change.new_quantity, on_hold=on_hold,
            subscription_id=subscription_id, key=idempotency_key(ref, f"change:{change_id}"),
            change_kind=ChangeKind.INCREASE if change.new_quantity > change.old_quantity
            else ChangeKind.DECREASE, effective_date=change.effective_date)])
    uow.touch(sub.account_id)
    return change_id


def end_subscription(uow: UnitOfWork, subscription_id: int, at: date | None = None) -> date:
    """End the subscription at ``at`` (default today, UTC); returns the end date (its
    deprovisioning is requested for that date)."""
    end = subscription_service.end_subscription(uow, subscription_id, at)
    record_end(uow, subscription_id, end)
    return end


def record_end(uow: UnitOfWork, subscription_id: int, end: date) -> None:
    """Provisioning of the subscription's end at ``end`` (see the module rules): its unsent
    requests dated on or after it are cancelled and a ``deprovision`` request dated ``end``
    is created (once per date), or, for one cancelled before it started, its unsent requests
    are cancelled. Nothing for a product that needs no provisioning, or a subscription that
    never had a request."""
    sub = uow.conn.execute(
        select(subscriptions.c.account_id, subscriptions.c.order_id, subscriptions.c.product_id,
               subscriptions.c.status, products.c.needs_provisioning)
        .join(products, products.c.id == subscriptions.c.product_id)
        .where(subscriptions.c.id == subscription_id)).first()
    if sub is None or sub.order_id is None:
        return
    requests = uow.conn.execute(select(pr.c.state, pr.c.change_kind, pr.c.effective_date)
                                .where(pr.c.subscription_id == subscription_id)).all()
    live = [r for r in requests if r.state not in (State.CANCELLED, State.SUPERSEDED)]
    if not live:
        return
    if sub.status == ItemStatus.CANCELLED:
        cancel_subscription_requests(uow, subscription_id)
        return
    cancel_from(uow, subscription_id, end)
    if any(r.change_kind == ChangeKind.DEPROVISION and r.effective_date == end for r in live):
        return
    ref = uow.conn.execute(select(orders.c.source_ref).where(
        orders.c.id == sub.order_id)).scalar_one()
    create_requests(uow, [NewRequest(
        account_id=sub.account_id, order_id=sub.order_id, product_id=sub.product_id,
        quantity=Decimal(0), on_hold=False, subscription_id=subscription_id,
        key=idempotency_key(ref, f"end:{subscription_id}:{end.isoformat()}"),
        change_kind=ChangeKind.DEPROVISION, effective_date=end)])


def cancel_order(uow: UnitOfWork, order_id: int, at: date | None = None) -> int:
    """Cancel the order (its active subscriptions end at ``at``, default today); returns how
    many of its requests were cancelled before sending. Each subscription it ends gets its
    ``deprovision`` request."""
    before = dict(uow.conn.execute(select(subscriptions.c.id, subscriptions.c.end_date).where(
        subscriptions.c.order_id == order_id)).all())
    order_service.cancel_order(uow, order_id, at)
    cancelled = cancel_order_requests(uow, order_id)
    for sid, end, status in uow.conn.execute(select(
            subscriptions.c.id, subscriptions.c.end_date, subscriptions.c.status).where(
            subscriptions.c.order_id == order_id).order_by(subscriptions.c.id)).all():
        if status == ItemStatus.CANCELLED:
            cancelled += cancel_subscription_requests(uow, int(sid))   # never provisioned
        elif end is not None and end != before.get(sid):
            record_end(uow, int(sid), end)
    return cancelled
