"""Amendments: a new revision of a deal, taken as the difference against what the deal ordered.

A *deal* is an order and the amendment orders that followed it, each naming the order of the
revision before it (``amends_order_id``). What the difference is (quantity changes, added and
removed items, one-time items never charged twice) is decided by
:mod:`billing_core.domain.amendments`; this module reads the deal and writes the plan.

Rules kept here
- :func:`amend_orders` takes each amendment exactly once per ``source_ref`` (a repeat returns
  the first amendment order's id and writes nothing), as orders are.
- An amendment is one *amendment order* (``amends_order_id`` = the previous revision's order,
  of the same account; a cancelled deal refuses it). What it does, all effective on its start
  date (``effective_date``):

  | plan item            | written                                                           |
  |----------------------|-------------------------------------------------------------------|
  | added subscription   | a subscription of the amendment order, from its start date; a     |
  |                      | committed one is co-termed with the deal (its first term ends     |
  |                      | with the deal's current term: ``domain.terms`` rule 5)            |
  | extra one-time items | a one-time charge of the amendment order (the quantity not yet    |
  |                      | charged by the deal)                                              |
  | quantity change      | ``gate.change_quantity`` on the deal's subscription, from the     |
  |                      | start date (or the subscription's start, when later)              |
  | removed subscription | its ``end_date`` set to the start date (cancelled when it had     |
  |                      | not started by then)                                              |

  Each is one ``amendment_items`` row naming the amendment order: which revision produced
  which change stays known. A revision that changes nothing is an amendment order with no
  items: the revision is recorded, nothing is billed.
- Credit control treats the amendment's added exposure like a new order's, because it goes
  through the same gate: the amendment order goes through ``gate.accept_orders`` (held with
  its added items while the account is on hold, their provisioning requests waiting for the
  release; activated otherwise) and the quantity changes through ``gate.change_quantity``
  (``pending`` while on hold, released in creation order; a provisioning request for the new
  quantity of a provisioned product, ``increase`` or ``decrease``, dated by the change). A
  removed subscription of a provisioned product gets its ``deprovision`` request, dated by its
  end (never held).
- Proration is the bill run's, by the existing rules: a quantity change inside a period
  already billed is a catch-up ``proration`` line on the next invoice; the range not billed
  yet is billed at the quantity in effect each day.
- A revision dated before a change the deal already has scheduled after it (a quantity
  change, or an end a revision's removal recorded) is refused, naming that change: taken as
  the difference on its own date, it would leave the later change in force over its content.
- A revision dated on or after the start of a renewal of the deal (an order whose
  ``renews_order_id`` is one of the deal's) is refused, naming ``effective_date``: the
  renewal ended the deal's subscriptions there and bills from then on, so what the revision
  orders would be billed beside the renewal's. Amend the renewal (its own deal) instead.
- Committed terms (:mod:`billing_core.domain.terms`) apply as to finance's changes: a decrease
  inside a term is refused or recorded from the term end (its ``amendment_items`` row holds
  that date), a removal is refused or moved to the term end by the product's early-termination
  policy; a removal moved so, of a subscription the amendment replaces (a new price or
  frequency of the same product), refuses the amendment: both would bill until the term end.
- Transactions: the caller's unit of work; each amendment in a savepoint of its own, so one
  that is refused (a ``LedgerError``, answered in its place) leaves nothing behind and the
  others go on. The amended order's row is locked first (``FOR UPDATE`` on PostgreSQL), so two
  amendments of one deal (or a racing twin of one) are decided one after the other.

Invariants
- Each day of a deal's subscription is billed at one quantity, the one in effect that day, by
  one subscription per key: an amendment never adds a second subscription beside one it can
  change.
- A deal's one-time quantity of a product is the largest any of its revisions ordered.
- Every amendment order names the order of the revision before it; every change it made is
  an ``amendment_items`` row naming it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    amendment_items,
    one_time_charges,
    orders,
    subscription_changes,
    subscriptions,
)
from billing_core.domain import amendments as domain
from billing_core.domain import terms
from billing_core.domain.credit import CreditPolicy
from billing_core.domain.errors import (
    InvalidState,
    LedgerError,
    NotFound,
    RuleViolation,
    ValidationError,
)
from billing_core.domain.money import to_decimal
from billing_core.domain.states import ItemStatus, OrderStatus
from billing_core.service import audit, gate
from billing_core.service import orders as order_service
from billing_core.service.deals import deal_orders


@dataclass(frozen=True)
class AmendmentIn:
    """A new revision of the deal ``amends_order_id`` belongs to, with its whole content."""

    account_id: int
    source_ref: str
    amends_order_id: int
    effective_date: date
    subscriptions: tuple[order_service.SubscriptionItem, ...] = field(default=())
    one_time_charges: tuple[order_service.OneTimeItem, ...] = field(default=())


def amend_orders(uow: UnitOfWork, items: Sequence[AmendmentIn], *,
                 policy: CreditPolicy | None = None) -> list[int | LedgerError]:
    """Take these amendments in order; per item the amendment order's id, or the error that
    refused it (nothing of it written)."""
    results: list[int | LedgerError] = []
    for data in items:
        known = order_service.find_order(uow, (data.source_ref or "").strip())
        if known is not None:
            results.append(known)
            continue
        try:
            with uow.savepoint():
                results.append(_amend(uow, data, policy))
        except LedgerError as exc:
            results.append(exc)
    return results


def _amend(uow: UnitOfWork, data: AmendmentIn, policy: CreditPolicy | None) -> int:
    if not isinstance(data.effective_date, date):
        raise ValidationError("effective_date", data.effective_date, "must be a date")
    # The amended order's row lock (PostgreSQL; SQLite has one writer) serialises the
    # amendments of a deal: a racing twin of this amendment waits here, then finds it placed.
    amended = uow.conn.execute(select(orders.c.account_id, orders.c.status).where(
        orders.c.id == data.amends_order_id).with_for_update()).first()
    if amended is None:
        raise NotFound("amends_order_id", data.amends_order_id)
    placed = order_service.find_order(uow, (data.source_ref or "").strip())
    if placed is not None:
        return placed
    if amended.account_id != data.account_id:
        raise ValidationError("amends_order_id", data.amends_order_id,
                              "belongs to another account")
    chain = deal_orders(uow, data.amends_order_id)
    cancelled = uow.conn.execute(select(orders.c.id).where(
        orders.c.id.in_(chain), orders.c.status == OrderStatus.CANCELLED)).first()
    if cancelled is not None:
        raise InvalidState("amends_order_id", data.amends_order_id,
                           f"its deal's order {cancelled[0]} is cancelled")
    on = data.effective_date
    _refuse_before_scheduled(uow, chain, on)
    _refuse_after_renewal(uow, chain, on)
    held, starts = _held(uow, chain, on)
    plan = domain.diff(held, _charged(uow, chain), _wanted(data), [
        domain.WantedCharge(int(c.product_id), _price(c.unit_price), to_decimal(
            c.quantity, "quantity"), c.charge_date) for c in data.one_time_charges])
    order = order_service.OrderIn(
        account_id=data.account_id, source_ref=data.source_ref, order_date=on,
        amends_order_id=data.amends_order_id,
        # nothing an amendment adds starts before the amendment: an earlier start would bill
        # the days before it again, beside what the deal already billed for them
        subscriptions=tuple(order_service.SubscriptionItem(
            w.product_id, w.quantity, max(w.start_date, on), w.frequency, w.unit_price)
            for w in plan.added),
        one_time_charges=tuple(order_service.OneTimeItem(
            c.product_id, c.quantity, c.charge_date, c.unit_price) for c in plan.charges))
    result = gate.accept_orders(uow, [order], policy=policy)[0]
    if isinstance(result, LedgerError):
        raise result
    order_id = result
    _coterm(uow, chain, order_id, on)
    history: list[dict[str, Any]] = []
    for table, key, action in ((subscriptions, "subscription_id", "added"),
                               (one_time_charges, "one_time_charge_id", "one_time")):
        for item_id, product_id, quantity in uow.conn.execute(select(
                table.c.id, table.c.product_id, table.c.quantity).where(
                table.c.order_id == order_id).order_by(table.c.id)):
            history.append({"action": action, "product_id": product_id, key: item_id,
                            "new_quantity": quantity})
    for change in plan.changes:
        when = max(on, starts[change.subscription_id])
        change_id = gate.change_quantity(uow, change.subscription_id, change.new_quantity,
                                         when, policy=policy)
        if change_id is not None:       # a decrease a committed term moved to its end
            when = uow.conn.execute(select(subscription_changes.c.effective_date).where(
                subscription_changes.c.id == change_id)).scalar_one()
        history.append({"action": "quantity", "product_id": change.product_id,
                        "subscription_id": change.subscription_id, "change_id": change_id,
                        "old_quantity": change.old_quantity,
                        "new_quantity": change.new_quantity, "effective_date": when})
    replaced = {w.product_id for w in plan.added}
    for sub in plan.removed:
        ended = _end(uow, sub.id, on)
        if ended is not None and ended != on and sub.product_id in replaced:
            raise RuleViolation("amends_order_id", data.amends_order_id,
                                f"subscription {sub.id} is committed to {ended}: a new price "
                                "or frequency inside its term would bill both; amend it from "
                                "the term end or renew")
        history.append({"action": "removed", "product_id": sub.product_id,
                        "subscription_id": sub.id, "old_quantity": sub.quantity})
    if history:
        now = uow.now()
        uow.conn.execute(insert(amendment_items), [
            {"order_id": order_id, "subscription_id": None, "one_time_charge_id": None,
             "change_id": None, "old_quantity": None, "new_quantity": None,
             "effective_date": on, "created_at": now, **row} for row in history])
    uow.touch(data.account_id)
    audit.record(uow, "amended", "order", data.amends_order_id, entity_ref=data.source_ref,
                 account_id=data.account_id, changes={
                     "amendment_order_id": [None, order_id], "effective_date": [None, on],
                     "items": [None, [{k: v for k, v in h.items() if v is not None}
                                      for h in history]]})
    return order_id


def _refuse_before_scheduled(uow: UnitOfWork, chain: list[int], on: date) -> None:
    """Refuse a revision dated before a change the deal already has scheduled after that date
    (a quantity change, or a removal a revision recorded): the revision is taken as the
    difference on its own date, so the later change would stay in force over it (8 seats from
    1 March kept though a revision from 1 February orders 5)."""
    sub_ids = select(subscriptions.c.id).where(subscriptions.c.order_id.in_(chain),
                                               subscriptions.c.status != ItemStatus.CANCELLED)
    change = uow.conn.execute(select(
        subscription_changes.c.subscription_id, subscription_changes.c.effective_date,
        subscription_changes.c.old_quantity, subscription_changes.c.new_quantity).where(
        subscription_changes.c.subscription_id.in_(sub_ids),
        subscription_changes.c.status != ItemStatus.CANCELLED,
        subscription_changes.c.effective_date > on)
        .order_by(subscription_changes.c.effective_date)).first()
    removal = uow.conn.execute(select(subscriptions.c.id, subscriptions.c.end_date).join(
        amendment_items, amendment_items.c.subscription_id == subscriptions.c.id).where(
        amendment_items.c.order_id.in_(chain), amendment_items.c.action == "removed",
        subscriptions.c.id.in_(sub_ids), subscriptions.c.end_date > on)
        .order_by(subscriptions.c.end_date)).first()
    if change is not None and (removal is None or change.effective_date <= removal.end_date):
        what = (f"the quantity change of subscription {change.subscription_id} from "
                f"{change.old_quantity.normalize():f} to {change.new_quantity.normalize():f} on "
                f"{change.effective_date}")
    elif removal is not None:
        what = f"the end of subscription {removal.id} on {removal.end_date}"
    else:
        return
    raise RuleViolation("effective_date", on, f"is before {what}, which the deal already has: "
                        "this revision would leave it in force; date the revision from then "
                        "on, or change the deal by hand")


def _refuse_after_renewal(uow: UnitOfWork, chain: list[int], on: date) -> None:
    """Refuse a revision dated on or after the start of a renewal of the deal: the renewal
    ended the deal's subscriptions there and bills that term itself, so what the revision
    orders would be added beside it (6 renewed seats and 7 amended ones billed for the same
    days)."""
    renewal = uow.conn.execute(select(orders.c.id, orders.c.order_date).where(
        orders.c.renews_order_id.in_(chain), orders.c.status != OrderStatus.CANCELLED)
        .order_by(orders.c.id)).first()
    if renewal is None:
        return
    start = uow.conn.execute(select(func.min(subscriptions.c.start_date)).where(
        subscriptions.c.order_id == renewal.id)).scalar() or renewal.order_date
    if on >= start:
        raise RuleViolation("effective_date", on, f"is on or after {start}, when the deal's "
                            f"renewal (order {renewal.id}) starts: the renewal bills from "
                            "then on; amend the renewal, or date the revision before it")


def _coterm(uow: UnitOfWork, chain: list[int], order_id: int, on: date) -> None:
    """Rule 5 of :mod:`billing_core.domain.terms`: the committed subscriptions the amendment
    order added end their first term with the deal's current term (that of the deal's
    first-created committed subscription in force on ``on``); without auto-renew they end
    there too."""
    bcd = int(uow.conn.execute(select(accounts.c.bill_cycle_day).join(
        orders, orders.c.account_id == accounts.c.id).where(orders.c.id == order_id))
        .scalar_one())
    deal_end = None
    for r in uow.conn.execute(select(subscriptions).where(
            subscriptions.c.order_id.in_(chain), subscriptions.c.status != ItemStatus.CANCELLED,
            subscriptions.c.term_months.is_not(None), subscriptions.c.start_date <= on)
            .order_by(subscriptions.c.id)).mappings():
        if r["end_date"] is not None and r["end_date"] <= on:
            continue
        held = terms.term_on(terms.make_term(r["term_months"], r["start_date"], r["term_end"],
                                             bool(r["auto_renew"]), r["frequency"], bcd), on)
        if held is not None:
            deal_end = held[1]
            break
    if deal_end is None:
        return
    for r in uow.conn.execute(select(subscriptions).where(
            subscriptions.c.order_id == order_id, subscriptions.c.term_months.is_not(None))
            .order_by(subscriptions.c.id)).mappings().all():
        end = terms.coterm_end(deal_end, r["start_date"], r["frequency"], bcd)
        if end is None or end == r["term_end"]:
            continue
        values: dict[str, Any] = {"term_end": end}
        if not r["auto_renew"]:
            values["end_date"] = end
        uow.conn.execute(update(subscriptions).where(subscriptions.c.id == r["id"])
                         .values(**values))
        if "end_date" in values:
            gate.record_end(uow, int(r["id"]), end)     # its deprovisioning moves with it


def _price(value: object) -> Decimal | None:
    return None if value is None or value == "" else to_decimal(value, "unit_price")


def _wanted(data: AmendmentIn) -> list[domain.WantedSub]:
    return [domain.WantedSub(int(s.product_id), _price(s.unit_price), s.frequency,
                             to_decimal(s.quantity, "quantity"), s.start_date)
            for s in data.subscriptions]


def _held(uow: UnitOfWork, chain: list[int], on: date
          ) -> tuple[list[domain.HeldSub], dict[int, date]]:
    """The deal's subscriptions in force on ``on`` (not cancelled, not ended by then), each at
    the quantity in effect that day (its changes, pending ones included, applied in date
    order), and every subscription's start date."""
    rows = uow.conn.execute(select(
        subscriptions.c.id, subscriptions.c.product_id, subscriptions.c.unit_price,
        subscriptions.c.frequency, subscriptions.c.quantity, subscriptions.c.start_date,
        subscriptions.c.end_date).where(
        subscriptions.c.order_id.in_(chain), subscriptions.c.status != ItemStatus.CANCELLED)
        .order_by(subscriptions.c.id)).all()
    ids = [int(r.id) for r in rows]
    timeline: dict[int, list[Any]] = {}
    for c in uow.conn.execute(select(
            subscription_changes.c.subscription_id, subscription_changes.c.effective_date,
            subscription_changes.c.old_quantity, subscription_changes.c.new_quantity)
            .where(subscription_changes.c.subscription_id.in_(ids))
            .order_by(subscription_changes.c.effective_date, subscription_changes.c.id)):
        timeline.setdefault(int(c.subscription_id), []).append(c)
    held = []
    for r in rows:
        if r.end_date is not None and r.end_date <= on:
            continue
        changes = timeline.get(int(r.id), [])
        quantity = changes[0].old_quantity if changes else r.quantity
        for c in changes:
            if c.effective_date <= on:
                quantity = c.new_quantity
        held.append(domain.HeldSub(int(r.id), int(r.product_id), r.unit_price, r.frequency,
                                   quantity))
    return held, {int(r.id): r.start_date for r in rows}


def _charged(uow: UnitOfWork, chain: list[int]) -> dict[int, Decimal]:
    """The deal's one-time quantity per product (cancelled charges count for nothing)."""
    out: dict[int, Decimal] = {}
    for product_id, quantity in uow.conn.execute(select(
            one_time_charges.c.product_id, one_time_charges.c.quantity).where(
            one_time_charges.c.order_id.in_(chain),
            one_time_charges.c.status != ItemStatus.CANCELLED)):
        out[int(product_id)] = out.get(int(product_id), Decimal(0)) + quantity
    return out


def _end(uow: UnitOfWork, subscription_id: int, on: date) -> date | None:
    """End the subscription on ``on`` (exclusive) by the subscriptions' own rule: days billed in
    advance after it are credited by the next bill run; one never active is cancelled; a
    committed term refuses it or moves it to the term end (the date returned). One that
    already ends on or before ``on`` is left as it is (None)."""
    try:
        return gate.end_subscription(uow, subscription_id, on)    # with its deprovisioning
    except InvalidState:
        return None             # it already ends on or before the amendment's start
