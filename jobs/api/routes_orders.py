"""Orders and subscriptions over HTTP: what finance reads, and its hand on a subscription.

A thin layer over :mod:`billing_core.service.order_reads` (list, show) and
:mod:`billing_core.service.gate` (``:change-quantity``, ``:cancel``), the same functions the CLI
calls. As everywhere in the API: reads need ``billing:read``, actions ``billing:write``; an
action runs in the request's one unit of work and is replayed, not repeated, under the same
``Idempotency-Key``; quantities leave and arrive as decimal strings; a bad id, quantity or date
is a 422 naming the field, an unknown id a 404, a ledger rule (an end date moving later) a 409.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from billing_core.service import gate
from billing_core.service.order_reads import (
    list_orders,
    list_subscriptions,
    order_view,
    subscription_view,
)
from jobs.api.deps import Policy, Reader, Uow, Writer, router
from jobs.api.models import MAX_ID, Model
from jobs.api.routes_billing import Cursor, Limit
from jobs.api.views import decode_cursor, encode_cursor

routes = router("orders and subscriptions")

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
AccountFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this account.")]
OrderFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this order.")]
OrderStatus = Annotated[str | None, Query(pattern=r"^(accepted|held|active|cancelled)$")]
SubState = Annotated[str | None, Query(pattern=r"^(pending|active|ending|ended|cancelled)$")]
Quantity = Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$", examples=["8"],
                                description="A decimal quantity as a string; 0 ends it.")]


def _q(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


class ChangeOut(BaseModel):
    id: int
    effective_date: date
    old_quantity: str
    new_quantity: str
    status: str = Field(examples=["active"])
    invoice_id: int | None
    created_at: datetime


class SubscriptionOut(BaseModel):
    id: int
    account_id: int
    order_id: int | None
    product_id: int
    sku: str
    product_name: str
    frequency: str = Field(examples=["monthly"])
    unit_price: str | None = Field(description="Negotiated price; null: the catalog's.")
    currency: str
    status: str = Field(examples=["active"], description="As stored: pending|active|cancelled.")
    state: str = Field(examples=["ending"], description="pending|active|ending|ended|cancelled.")
    quantity: str = Field(description="At the end of the history.")
    quantity_today: str
    start_date: date
    end_date: date | None = Field(description="Exclusive; null: open-ended.")
    billed_through: date | None
    history: list[ChangeOut] | None = None


class SubscriptionPage(BaseModel):
    items: list[SubscriptionOut]
    next_cursor: str | None = None


class OneTimeChargeOut(BaseModel):
    id: int
    product_id: int
    sku: str
    quantity: str
    unit_price: str | None
    charge_date: date
    status: str
    invoice_id: int | None


class OrderOut(BaseModel):
    id: int
    account_id: int
    account_name: str
    source_ref: str
    amends_order_id: int | None
    status: str = Field(examples=["active"])
    order_date: date
    created_at: datetime
    activated_at: datetime | None = None
    subscriptions: list[SubscriptionOut] | None = None
    one_time_charges: list[OneTimeChargeOut] | None = None


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = None


class ChangeQuantity(Model):
    quantity: Quantity
    effective_date: date = Field(description="From this day (YYYY-MM-DD), past or future.")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"quantity": "8", "effective_date": "2026-03-01"}]})


class CancelSubscription(Model):
    at: date | None = Field(None, description="End date, exclusive; default today (UTC).")


def _sub_out(row: dict[str, Any]) -> SubscriptionOut:
    history = row.get("history")
    return SubscriptionOut(
        **{k: row[k] for k in ("id", "account_id", "order_id", "product_id", "sku",
                               "product_name", "frequency", "currency", "status", "state",
                               "start_date", "end_date", "billed_through")},
        unit_price=_q(row["unit_price"]), quantity=_q(row["quantity"]) or "0",
        quantity_today=_q(row["quantity_today"]) or "0",
        history=None if history is None else [ChangeOut(
            **{**h, "old_quantity": _q(h["old_quantity"]),
               "new_quantity": _q(h["new_quantity"])}) for h in history])


def _order_out(row: dict[str, Any]) -> OrderOut:
    subs, charges = row.get("subscriptions"), row.get("one_time_charges")
    fields: dict[str, Any] = {k: row.get(k) for k in OrderOut.model_fields
                              if k not in ("subscriptions", "one_time_charges")}
    return OrderOut(**fields,
                    subscriptions=None if subs is None else [_sub_out(s) for s in subs],
                    one_time_charges=None if charges is None else [OneTimeChargeOut(
                        **{**c, "quantity": _q(c["quantity"]),
                           "unit_price": _q(c["unit_price"])})
                        for c in charges])


@routes.get("/billing/orders")
def get_orders(uow: Uow, _: Reader, account_id: AccountFilter = None, status: OrderStatus = None,
               cursor: Cursor = None, limit: Limit = 100) -> OrderPage:
    """Orders in id order, keyset-paginated."""
    rows = list_orders(uow.conn, account_id=account_id, status=status,
                       after_id=decode_cursor(cursor), limit=limit + 1)
    items = [_order_out(r) for r in rows[:limit]]
    return OrderPage(items=items, next_cursor=encode_cursor(items[-1].id)
                     if len(rows) > limit else None)


@routes.get("/billing/orders/{order_id}")
def get_order(order_id: Id, uow: Uow, _: Reader) -> OrderOut:
    """One order with its subscriptions and one-time charges."""
    return _order_out(order_view(uow.conn, order_id, uow.now().date()))


@routes.get("/billing/subscriptions")
def get_subscriptions(uow: Uow, _: Reader, account_id: AccountFilter = None,
                      order_id: OrderFilter = None, state: SubState = None,
                      cursor: Cursor = None, limit: Limit = 100) -> SubscriptionPage:
    """Subscriptions in id order with today's quantity and state, keyset-paginated."""
    rows = list_subscriptions(uow.conn, on=uow.now().date(), account_id=account_id,
                              order_id=order_id, state=state, after_id=decode_cursor(cursor),
                              limit=limit + 1)
    items = [_sub_out(r) for r in rows[:limit]]
    return SubscriptionPage(items=items, next_cursor=encode_cursor(items[-1].id)
                            if len(rows) > limit else None)


@routes.get("/billing/subscriptions/{subscription_id}")
def get_subscription(subscription_id: Id, uow: Uow, _: Reader) -> SubscriptionOut:
    """One subscription with its effective-dated quantity history."""
    return _sub_out(subscription_view(uow.conn, subscription_id, uow.now().date()))


@routes.post("/billing/subscriptions/{subscription_id}:change-quantity")
def change_quantity(subscription_id: Id, body: ChangeQuantity, uow: Uow, _: Writer,
                    policy: Policy) -> SubscriptionOut:
    """Change the quantity from a date (0 ends the subscription then). The next invoice
    prorates it against the quantity in effect on that date; on hold it waits, pending."""
    gate.change_quantity(uow, subscription_id, body.quantity, body.effective_date, policy=policy)
    return _sub_out(subscription_view(uow.conn, subscription_id, uow.now().date()))


@routes.post("/billing/subscriptions/{subscription_id}:cancel")
def cancel_subscription(subscription_id: Id, uow: Uow, _: Writer,
                        body: CancelSubscription | None = None) -> SubscriptionOut:
    """End the subscription now (no body) or at ``at`` (an end date only moves earlier); days
    billed in advance after it are credited on the next invoice."""
    gate.end_subscription(uow, subscription_id, None if body is None else body.at)
    return _sub_out(subscription_view(uow.conn, subscription_id, uow.now().date()))
