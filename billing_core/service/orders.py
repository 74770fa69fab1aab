"""Orders, subscriptions and one-time charges: what billing will charge.

Rules kept here
- An order is taken exactly once per ``source_ref`` (e.g. ``sf:<quote id>:rev2``): placing the
  same ``source_ref`` again returns the existing order id and writes nothing. That is the
  exactly-once CPQ handoff; a racing duplicate loses on the unique constraint and gets the
  winner's id.
- ``place_order`` takes the order (status ``accepted``) with its subscriptions and one-time
  charges (status ``pending``: not billed). ``activate_order`` makes all of them ``active``; only
  active items are billed. Hold logic is credit control's: it decides whether to activate.
- A subscription bills a ``recurring`` product; a one-time charge a ``one_time`` product. Without a
  negotiated ``unit_price`` the catalog price in the account's currency applies, and must exist
  on the start / charge date (checked when the order is placed).
- ``cancel_order`` cancels the order and whatever of it is not billed yet; already invoiced
  charges stay invoiced (a credit memo is the way to give money back).
- ``change_quantity`` records a ``subscription_changes`` row; billing prorates ``active`` changes
  only. ``pending=True`` (account on hold) records it without effect until
  :func:`activate_change`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    one_time_charges,
    orders,
    subscription_changes,
    subscriptions,
)
from billing_core.domain.errors import InvalidState, NotFound, ValidationError
from billing_core.domain.money import to_decimal
from billing_core.domain.periods import FREQUENCIES
from billing_core.service.accounts import get_account
from billing_core.service.bulk import inserted_id
from billing_core.service.pricing import get_product, price_for


@dataclass(frozen=True)
class SubscriptionItem:
    product_id: int
    quantity: Decimal | str | int
    start_date: date
    frequency: str = "monthly"          # monthly | annual
    unit_price: Decimal | str | int | None = None
    end_date: date | None = None        # exclusive


@dataclass(frozen=True)
class OneTimeItem:
    product_id: int
    quantity: Decimal | str | int
    charge_date: date
    unit_price: Decimal | str | int | None = None


@dataclass(frozen=True)
class OrderIn:
    account_id: int
    source_ref: str
    order_date: date
    subscriptions: tuple[SubscriptionItem, ...] | list[SubscriptionItem] = field(default=())
    one_time_charges: tuple[OneTimeItem, ...] | list[OneTimeItem] = field(default=())
    amends_order_id: int | None = None


def _quantity(value: object, field_name: str) -> Decimal:
    q = to_decimal(value, field_name)
    if q <= 0:
        raise ValidationError(field_name, value, "must be greater than zero")
    return q


def _unit_price(value: object, field_name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    p = to_decimal(value, field_name)
    if p < 0:
        raise ValidationError(field_name, value, "must not be negative")
    return p


def _check_product(uow: UnitOfWork, product_id: int, kind: str, field_name: str,
                   currency: str, on: date, negotiated: Decimal | None) -> int:
    product = get_product(uow.conn, product_id)
    if product["kind"] != kind:
        raise ValidationError(field_name, product_id,
                              f"product {product['sku']} is {product['kind']}, not {kind}")
    if negotiated is None:
        price_for(uow.conn, product["id"], currency, on)
    return int(product["id"])


def find_order(uow: UnitOfWork, source_ref: str) -> int | None:
    found = uow.conn.execute(select(orders.c.id).where(orders.c.source_ref == source_ref)).scalar()
    return None if found is None else int(found)


def place_order(uow: UnitOfWork, data: OrderIn) -> int:
    """Take an order (status accepted, items pending); same ``source_ref`` -> same id."""
    ref = (data.source_ref or "").strip()
    if not ref:
        raise ValidationError("source_ref", data.source_ref, "is required")
    existing = find_order(uow, ref)
    if existing is not None:
        return existing
    account = get_account(uow.conn, data.account_id)
    currency = account["currency"]
    if not isinstance(data.order_date, date):
        raise ValidationError("order_date", data.order_date, "must be a date")
    if not data.subscriptions and not data.one_time_charges:
        raise ValidationError("items", 0, "an order needs at least one subscription or charge")
    if data.amends_order_id is not None:
        amended = uow.conn.execute(select(orders.c.account_id).where(
            orders.c.id == data.amends_order_id)).scalar()
        if amended is None:
            raise NotFound("amends_order_id", data.amends_order_id)
        if amended != account["id"]:
            raise ValidationError("amends_order_id", data.amends_order_id,
                                  "belongs to another account")
    now = uow.now()
    sub_rows, otc_rows = [], []
    for i, s in enumerate(data.subscriptions):
        f = f"subscriptions[{i}]"
        if s.frequency not in FREQUENCIES:
            raise ValidationError(f"{f}.frequency", s.frequency, "must be monthly or annual")
        if not isinstance(s.start_date, date):
            raise ValidationError(f"{f}.start_date", s.start_date, "must be a date")
        if s.end_date is not None and s.end_date <= s.start_date:
            raise ValidationError(f"{f}.end_date", s.end_date, "must be after the start date")
        price = _unit_price(s.unit_price, f"{f}.unit_price")
        pid = _check_product(uow, s.product_id, "recurring", f"{f}.product_id", currency,
                             s.start_date, price)
        sub_rows.append({"account_id": account["id"], "product_id": pid,
                         "quantity": _quantity(s.quantity, f"{f}.quantity"), "unit_price": price,
                         "frequency": s.frequency, "start_date": s.start_date,
                         "end_date": s.end_date, "status": "pending", "created_at": now})
    for i, c in enumerate(data.one_time_charges):
        f = f"one_time_charges[{i}]"
        if not isinstance(c.charge_date, date):
            raise ValidationError(f"{f}.charge_date", c.charge_date, "must be a date")
        price = _unit_price(c.unit_price, f"{f}.unit_price")
        pid = _check_product(uow, c.product_id, "one_time", f"{f}.product_id", currency,
                             c.charge_date, price)
        otc_rows.append({"account_id": account["id"], "product_id": pid,
                         "quantity": _quantity(c.quantity, f"{f}.quantity"), "unit_price": price,
                         "charge_date": c.charge_date, "status": "pending", "created_at": now})
    try:
        with uow.savepoint():
            order_id = inserted_id(uow.conn.execute(insert(orders).values(
                account_id=account["id"], source_ref=ref, amends_order_id=data.amends_order_id,
                status="accepted", order_date=data.order_date, created_at=now)))
    except IntegrityError:
        winner = find_order(uow, ref)
        if winner is None:
            raise
        return winner
    for row in sub_rows + otc_rows:
        row["order_id"] = order_id
    if sub_rows:
        uow.conn.execute(insert(subscriptions), sub_rows)
    if otc_rows:
        uow.conn.execute(insert(one_time_charges), otc_rows)
    uow.touch(account["id"])
    return order_id


def _order(uow: UnitOfWork, order_id: int) -> dict[str, object]:
    row = uow.conn.execute(select(orders).where(orders.c.id == order_id)).mappings().first()
    if row is None:
        raise NotFound("order", order_id)
    return dict(row)


def activate_order(uow: UnitOfWork, order_id: int) -> None:
    """Order -> active; its pending subscriptions and one-time charges -> active (billable)."""
    order = _order(uow, order_id)
    if order["status"] == "active":
        return
    if order["status"] == "cancelled":
        raise InvalidState("order", order_id, "is cancelled")
    uow.conn.execute(update(orders).where(orders.c.id == order_id).values(
        status="active", activated_at=uow.now()))
    uow.conn.execute(update(subscriptions).where(
        subscriptions.c.order_id == order_id, subscriptions.c.status == "pending")
        .values(status="active"))
    uow.conn.execute(update(one_time_charges).where(
        one_time_charges.c.order_id == order_id, one_time_charges.c.status == "pending")
        .values(status="active"))
    uow.touch(int(order["account_id"]))  # type: ignore[call-overload]


def cancel_order(uow: UnitOfWork, order_id: int) -> None:
    """Cancel the order and its unbilled items; invoiced charges stay invoiced."""
    order = _order(uow, order_id)
    if order["status"] == "cancelled":
        return
    uow.conn.execute(update(orders).where(orders.c.id == order_id).values(status="cancelled"))
    uow.conn.execute(update(subscriptions).where(
        subscriptions.c.order_id == order_id, subscriptions.c.status != "cancelled")
        .values(status="cancelled"))
    uow.conn.execute(update(one_time_charges).where(
        one_time_charges.c.order_id == order_id, one_time_charges.c.invoice_id.is_(None))
        .values(status="cancelled"))
    uow.touch(int(order["account_id"]))  # type: ignore[call-overload]


def change_quantity(uow: UnitOfWork, subscription_id: int, new_quantity: Decimal | str | int,
                    effective_date: date, *, pending: bool = False) -> int:
    """Record a quantity change from ``effective_date``; returns the change id."""
    sub = uow.conn.execute(select(subscriptions).where(
        subscriptions.c.id == subscription_id)).mappings().first()
    if sub is None:
        raise NotFound("subscription", subscription_id)
    if sub["status"] == "cancelled":
        raise InvalidState("subscription", subscription_id, "is cancelled")
    quantity = _quantity(new_quantity, "new_quantity")
    if not isinstance(effective_date, date) or effective_date < sub["start_date"]:
        raise ValidationError("effective_date", effective_date,
                              f"must be a date on or after the start {sub['start_date']}")
    if sub["end_date"] is not None and effective_date >= sub["end_date"]:
        raise ValidationError("effective_date", effective_date,
                              f"must be before the end {sub['end_date']}")
    change_id = inserted_id(uow.conn.execute(insert(subscription_changes).values(
        subscription_id=subscription_id, effective_date=effective_date,
        old_quantity=sub["quantity"], new_quantity=quantity,
        status="pending" if pending else "active", created_at=uow.now())))
    if not pending:
        uow.conn.execute(update(subscriptions).where(subscriptions.c.id == subscription_id)
                         .values(quantity=quantity))
    uow.touch(int(sub["account_id"]))
    return change_id


def activate_change(uow: UnitOfWork, change_id: int) -> None:
    """A pending quantity change takes effect (billing prorates it on the next invoice)."""
    row = uow.conn.execute(select(subscription_changes).where(
        subscription_changes.c.id == change_id)).mappings().first()
    if row is None:
        raise NotFound("subscription_change", change_id)
    if row["status"] == "active":
        return
    uow.conn.execute(update(subscription_changes).where(subscription_changes.c.id == change_id)
                     .values(status="active"))
    sub = uow.conn.execute(update(subscriptions).where(
        subscriptions.c.id == row["subscription_id"]).values(quantity=row["new_quantity"])
        .returning(subscriptions.c.account_id)).scalar()
    if sub is not None:
        uow.touch(int(sub))
