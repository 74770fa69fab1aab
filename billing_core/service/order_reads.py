"""What finance reads of orders and subscriptions (the CLI's ``orders`` / ``subscriptions`` and
the API's ``/billing/orders`` / ``/billing/subscriptions`` answer with these).

Rules kept here
- Lists are keyset pages in id order (``id > after_id``), filtered by account, order or status.
- A subscription's ``state`` is derived for people: ``pending`` / ``cancelled`` as stored;
  an active one is ``ended`` on and after its end date, ``ending`` before it, else ``active``.
  Its ``quantity`` is the quantity at the end of its history; ``quantity_today`` the quantity in
  effect on the day asked (0 once ended); ``history`` its changes in effective order, with
  each change's status and the invoice that settled it.
- An id that is not a positive integer is a ``ValidationError`` naming the field; an unknown
  one ``NotFound``.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from billing_core.adapters.tables import (
    accounts,
    one_time_charges,
    orders,
    products,
    subscription_changes,
    subscriptions,
)
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.domain.ids import as_id
from billing_core.domain.states import ItemStatus, OrderStatus

ORDER_STATUSES = tuple(s.value for s in OrderStatus)      # as the CLI offers them
SUBSCRIPTION_STATES = ("pending", "active", "ending", "ended", "cancelled")


def parse_id(value: object, field: str) -> int:
    """A positive integer id from an int or its decimal text."""
    found = as_id(value)
    if found is None:
        raise ValidationError(field, value, "must be a positive integer id")
    return found


def list_orders(conn: Connection, *, account_id: int | None = None, status: str | None = None,
                after_id: int = 0, limit: int = 200) -> list[dict[str, Any]]:
    if status is not None and status not in ORDER_STATUSES:
        raise ValidationError("status", status, f"must be one of {', '.join(ORDER_STATUSES)}")
    stmt = (select(orders, accounts.c.name.label("account_name"))
            .join(accounts, accounts.c.id == orders.c.account_id)
            .where(orders.c.id > after_id).order_by(orders.c.id).limit(limit))
    if account_id is not None:
        stmt = stmt.where(orders.c.account_id == account_id)
    if status is not None:
        stmt = stmt.where(orders.c.status == status)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def order_view(conn: Connection, order_id: object, on: date) -> dict[str, Any]:
    """One order with its subscriptions (as :func:`subscription_view` without history) and
    one-time charges."""
    oid = parse_id(order_id, "order_id")
    row = conn.execute(select(orders, accounts.c.name.label("account_name"))
                       .join(accounts, accounts.c.id == orders.c.account_id)
                       .where(orders.c.id == oid)).mappings().first()
    if row is None:
        raise NotFound("order", order_id)
    subs = list_subscriptions(conn, order_id=oid, on=on, limit=10_000)
    charges = [dict(r) for r in conn.execute(
        select(one_time_charges, products.c.sku, products.c.name.label("product_name"))
        .join(products, products.c.id == one_time_charges.c.product_id)
        .where(one_time_charges.c.order_id == oid).order_by(one_time_charges.c.id)).mappings()]
    return {**dict(row), "subscriptions": subs, "one_time_charges": charges}


def _state(row: RowMapping | dict[str, Any], on: date) -> str:
    if row["status"] != ItemStatus.ACTIVE:
        return str(row["status"])
    end = row["end_date"]
    if end is None:
        return "active"
    return "ended" if end <= on else "ending"


def _sub_select() -> Any:
    return (select(subscriptions, products.c.sku, products.c.name.label("product_name"),
                   accounts.c.currency)
            .join(products, products.c.id == subscriptions.c.product_id)
            .join(accounts, accounts.c.id == subscriptions.c.account_id))


def _history(conn: Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    for r in conn.execute(select(subscription_changes).where(
            subscription_changes.c.subscription_id.in_(ids)).order_by(
            subscription_changes.c.effective_date, subscription_changes.c.id)).mappings():
        out[int(r["subscription_id"])].append(dict(r))
    return out


def _with_quantity_on(row: dict[str, Any], history: list[dict[str, Any]], on: date) -> None:
    q: Decimal = row["quantity"]
    active = [h for h in history if h["status"] == ItemStatus.ACTIVE]
    if active:
        q = active[0]["old_quantity"]
        for h in active:
            if h["effective_date"] <= on:
                q = h["new_quantity"]
    if row["end_date"] is not None and row["end_date"] <= on or on < row["start_date"]:
        q = Decimal(0)
    row["quantity_today"] = q
    row["state"] = _state(row, on)


def list_subscriptions(conn: Connection, *, on: date, account_id: int | None = None,
                       order_id: int | None = None, state: str | None = None,
                       after_id: int = 0, limit: int = 200) -> list[dict[str, Any]]:
    """Subscriptions in id order; ``state`` filters by the derived state on ``on``."""
    if state is not None and state not in SUBSCRIPTION_STATES:
        raise ValidationError("state", state,
                              f"must be one of {', '.join(SUBSCRIPTION_STATES)}")
    stmt = _sub_select().where(subscriptions.c.id > after_id).order_by(subscriptions.c.id)
    if account_id is not None:
        stmt = stmt.where(subscriptions.c.account_id == account_id)
    if order_id is not None:
        stmt = stmt.where(subscriptions.c.order_id == order_id)
    rows = [dict(r) for r in conn.execute(stmt.limit(limit if state is None else 10_000))
            .mappings()]
    history = _history(conn, [int(r["id"]) for r in rows])
    for r in rows:
        _with_quantity_on(r, history[int(r["id"])], on)
    if state is not None:
        rows = [r for r in rows if r["state"] == state][:limit]
    return rows


def subscription_view(conn: Connection, subscription_id: object, on: date) -> dict[str, Any]:
    """One subscription with its derived state, quantity on ``on`` and full history."""
    sid = parse_id(subscription_id, "subscription_id")
    row = conn.execute(_sub_select().where(subscriptions.c.id == sid)).mappings().first()
    if row is None:
        raise NotFound("subscription", subscription_id)
    out = dict(row)
    history = _history(conn, [sid])[sid]
    _with_quantity_on(out, history, on)
    out["history"] = history
    return out
