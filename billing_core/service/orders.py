"""Orders, subscriptions and one-time charges: what billing will charge.

Rules kept here
- An order is taken exactly once per ``source_ref`` (e.g. ``sf:<quote id>:rev2``): placing the
  same ``source_ref`` again returns the existing order id and writes nothing. That is the
  exactly-once CPQ handoff; a racing duplicate loses on the unique constraint and gets the
  winner's id.
- ``place_order`` takes the order (status ``accepted``) with its subscriptions and one-time
  charges (status ``pending``: not billed). ``activate_order`` makes all of them ``active``; only
  active items are billed. Hold logic is credit control's: it decides whether to activate.
- A subscription bills a ``recurring`` product, or a ``usage`` product (a usage-only deal: its
  usage is rated, there is no recurring charge, the bill run and exposure leave it out); a
  one-time charge a ``one_time`` product (a usage product's price is checked when its usage
  is billed, not when the order is taken). An order needs an item unless it is an amendment
  (``amends_order_id``: an amendment that only changes quantities or ends items). Without a
  negotiated ``unit_price`` the catalog price in the account's currency applies, and must exist
  on the start / charge date (checked when the order is placed).
- ``cancel_order`` ends the order's active subscriptions at the cancellation date (the days
  billed in advance after it are credited on the next invoice,
  :mod:`billing_core.service.subscriptions`) and cancels whatever else of it is not billed yet;
  invoiced one-time charges stay invoiced (a credit memo is the way to give that money back).
- Terms (:mod:`billing_core.domain.terms`): a subscription item's ``term_months`` and
  ``auto_renew`` left None take the product's defaults (``term_months=0``: no term). A term's
  end is co-termed (rule 1 there) and stored in ``term_end``; without auto-renew the
  subscription ends there (an item's ``end_date``, if any, must be that term end).
- A renewal order (``renews_order_id``) starts the next term of the deal it names, from its
  subscriptions' earliest start date; the renewed subscriptions end there
  (:mod:`billing_core.service.renewals`, checked before anything is written).
- ``change_quantity`` records a ``subscription_changes`` row in the subscription's
  effective-dated history (:mod:`billing_core.service.subscriptions`); billing prorates
  ``active`` changes only. ``pending=True`` (account on hold) records it without effect until
  :func:`activate_change`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.bulk import id_in, inserted_id
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    one_time_charges,
    orders,
    prices,
    products,
    subscriptions,
)
from billing_core.domain import terms
from billing_core.domain.errors import InvalidState, LedgerError, NotFound, ValidationError
from billing_core.domain.money import to_decimal
from billing_core.domain.periods import FREQUENCIES
from billing_core.domain.states import ItemStatus, OrderStatus
from billing_core.service import audit, renewals
from billing_core.service import subscriptions as subscriptions_service
from billing_core.service.accounts import get_account
from billing_core.service.pricing import get_product, price_for

#: What a subscription may bill: a recurring product (a charge per period) or a usage product
#: (rated from its usage events; no recurring charge).
SUBSCRIBED_KINDS = ("recurring", "usage")


@dataclass(frozen=True)
class SubscriptionItem:
    product_id: int
    quantity: Decimal | str | int
    start_date: date
    frequency: str = "monthly"          # monthly | annual
    unit_price: Decimal | str | int | None = None
    end_date: date | None = None        # exclusive
    term_months: int | None = None      # None: the product's default; 0: no term
    auto_renew: bool | None = None      # None: the product's default


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
    renews_order_id: int | None = None  # a renewal: the next term of that order's deal


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


def find_order(uow: UnitOfWork, source_ref: str) -> int | None:
    found = uow.conn.execute(select(orders.c.id).where(orders.c.source_ref == source_ref)).scalar()
    return None if found is None else int(found)


def find_orders(uow: UnitOfWork, refs: Iterable[str]) -> dict[str, int]:
    """The existing orders of these source references (one query per 500)."""
    wanted = sorted({r for r in refs if r})
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        found.update((ref, int(i)) for ref, i in uow.conn.execute(select(
            orders.c.source_ref, orders.c.id).where(
            orders.c.source_ref.in_(wanted[start:start + 500]))))
    return found


@dataclass(frozen=True)
class Placement:
    """What :func:`place_orders` did with one order: its id, and whether it was created now
    (False: the source reference was known, nothing was written)."""

    order_id: int
    created: bool


class _Catalog:
    """The accounts, products, prices and amended orders a batch of orders refers to, read
    with a few queries for the whole batch; answers and errors as their one-row lookups do."""

    def __init__(self, uow: UnitOfWork, items: Sequence[OrderIn]) -> None:
        conn = uow.conn
        self.conn = conn
        account_ids = {d.account_id for d in items if isinstance(d.account_id, int)}
        self.accounts = {int(r["id"]): r for r in conn.execute(select(accounts).where(
            id_in(conn, accounts.c.id, sorted(account_ids)))).mappings()}
        lines = [x for d in items for x in (*d.subscriptions, *d.one_time_charges)]
        product_ids = {x.product_id for x in lines if isinstance(x.product_id, int)}
        self.products = {int(r["id"]): r for r in conn.execute(select(products).where(
            id_in(conn, products.c.id, sorted(product_ids)))).mappings()}
        currencies = sorted({str(r["currency"]) for r in self.accounts.values()})
        self.price_dates: dict[tuple[int, str], list[date]] = {}
        if self.products and currencies:
            for pid, currency, since in conn.execute(select(
                    prices.c.product_id, prices.c.currency, prices.c.effective_from).where(
                    id_in(conn, prices.c.product_id, sorted(self.products)),
                    prices.c.currency.in_(currencies))):
                self.price_dates.setdefault((int(pid), currency), []).append(since)
        amended = {d.amends_order_id for d in items if isinstance(d.amends_order_id, int)}
        self.amended = {int(i): int(a) for i, a in conn.execute(select(
            orders.c.id, orders.c.account_id).where(id_in(conn, orders.c.id, sorted(amended))))}

    def account(self, account_id: int) -> RowMapping:
        row = self.accounts.get(account_id) if isinstance(account_id, int) else None
        return row if row is not None else get_account(self.conn, account_id)

    def product(self, ref: int | str) -> RowMapping:
        row = self.products.get(ref) if isinstance(ref, int) else None
        return row if row is not None else get_product(self.conn, ref)

    def check_price(self, product_id: int, currency: str, on: date) -> None:
        if not any(d <= on for d in self.price_dates.get((product_id, currency), ())):
            price_for(self.conn, product_id, currency, on)   # raises NotFound naming all three

    def amended_account(self, order_id: int) -> int | None:
        if isinstance(order_id, int) and order_id in self.amended:
            return self.amended[order_id]
        found = self.conn.execute(select(orders.c.account_id).where(
            orders.c.id == order_id)).scalar()
        return None if found is None else int(found)


def _check_product(catalog: _Catalog, product_id: int, kinds: tuple[str, ...],
                   field_name: str, currency: str, on: date, negotiated: Decimal | None) -> int:
    product = catalog.product(product_id)
    if product["kind"] not in kinds:
        raise ValidationError(field_name, product_id,
                              f"product {product['sku']} is {product['kind']}, not "
                              f"{' or '.join(kinds)}")
    # a usage product's price is needed when its usage is rated (the bill run refuses an
    # account's usage without one), not to take the order
    if negotiated is None and product["kind"] != "usage":
        catalog.check_price(int(product["id"]), currency, on)
    return int(product["id"])


@dataclass
class _Plan:
    order: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    charges: list[dict[str, Any]]
    renewed: list[int] = field(default_factory=list)    # subscriptions a renewal ends


def _term_columns(s: SubscriptionItem, product: RowMapping, bcd: int,
                  f: str) -> dict[str, Any]:
    """The item's term columns, and its end date (see the module rules)."""
    months = terms.check_months(product["term_months"] if s.term_months is None
                                else s.term_months, f"{f}.term_months")
    renew = bool(product["auto_renew"]) if s.auto_renew is None else s.auto_renew
    if not isinstance(renew, bool):
        raise ValidationError(f"{f}.auto_renew", s.auto_renew, "must be true or false")
    if months is None:
        return {"term_months": None, "term_end": None, "auto_renew": False,
                "end_date": s.end_date}
    term_end = terms.first_term_end(s.start_date, months, s.frequency, bcd,
                                    f"{f}.term_months")
    if s.end_date is not None and s.end_date != term_end:
        raise ValidationError(f"{f}.end_date", s.end_date, f"must be empty or the end of its "
                                                          f"{months}-month term {term_end}")
    return {"term_months": months, "term_end": term_end, "auto_renew": renew,
            "end_date": s.end_date if renew else term_end}


def _plan(uow: UnitOfWork, catalog: _Catalog, data: OrderIn, ref: str) -> _Plan:
    """Validate one order; the rows it will insert (every check before any write)."""
    account = catalog.account(data.account_id)
    currency = account["currency"]
    if not isinstance(data.order_date, date):
        raise ValidationError("order_date", data.order_date, "must be a date")
    if not data.subscriptions and not data.one_time_charges and data.amends_order_id is None:
        raise ValidationError("items", 0, "an order needs at least one subscription or charge")
    if data.amends_order_id is not None:
        amended = catalog.amended_account(data.amends_order_id)
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
        pid = _check_product(catalog, s.product_id, SUBSCRIBED_KINDS, f"{f}.product_id",
                             currency, s.start_date, price)
        sub_rows.append({"account_id": account["id"], "product_id": pid,
                         "quantity": _quantity(s.quantity, f"{f}.quantity"), "unit_price": price,
                         "frequency": s.frequency, "start_date": s.start_date,
                         "status": ItemStatus.PENDING, "created_at": now,
                         **_term_columns(s, catalog.product(pid),
                                         int(account["bill_cycle_day"]), f)})
    for i, c in enumerate(data.one_time_charges):
        f = f"one_time_charges[{i}]"
        if not isinstance(c.charge_date, date):
            raise ValidationError(f"{f}.charge_date", c.charge_date, "must be a date")
        price = _unit_price(c.unit_price, f"{f}.unit_price")
        pid = _check_product(catalog, c.product_id, ("one_time",), f"{f}.product_id",
                             currency, c.charge_date, price)
        otc_rows.append({"account_id": account["id"], "product_id": pid,
                         "quantity": _quantity(c.quantity, f"{f}.quantity"), "unit_price": price,
                         "charge_date": c.charge_date, "status": ItemStatus.PENDING,
                         "created_at": now})
    renewed: list[int] = []
    if data.renews_order_id is not None:
        if not sub_rows:
            raise ValidationError("subscriptions", 0, "a renewal order needs a subscription")
        renewed = renewals.renewed_subscriptions(uow, int(account["id"]), data.renews_order_id,
                                                 min(r["start_date"] for r in sub_rows))
    order = {"account_id": account["id"], "source_ref": ref,
             "amends_order_id": data.amends_order_id, "status": OrderStatus.ACCEPTED,
             "order_date": data.order_date, "created_at": now,
             "renews_order_id": data.renews_order_id}
    return _Plan(order, sub_rows, otc_rows, renewed)


def place_order(uow: UnitOfWork, data: OrderIn) -> int:
    """Take an order (status accepted, items pending); same ``source_ref`` -> same id."""
    result = place_orders(uow, [data])[0]
    if isinstance(result, LedgerError):
        raise result
    return result.order_id


def place_orders(uow: UnitOfWork, items: Sequence[OrderIn]) -> list[Placement | LedgerError]:
    """:func:`place_order` for a batch, answered per item in the given order: the placement,
    or the error that refused that order (nothing of it written; the others go on). A known
    source reference (or one repeated in the batch) gives the existing order, ``created``
    False. The batch's accounts, products, prices and known references are read with a few
    queries, and its orders and items inserted with one statement per table."""
    refs = [(d.source_ref or "").strip() for d in items]
    existing = find_orders(uow, refs)
    catalog = _Catalog(uow, items)
    results: list[Placement | LedgerError | None] = [None] * len(items)
    plans: dict[str, tuple[int, _Plan]] = {}
    repeats: list[tuple[int, str]] = []
    for i, (data, ref) in enumerate(zip(items, refs, strict=True)):
        if not ref:
            results[i] = ValidationError("source_ref", data.source_ref, "is required")
        elif ref in existing:
            results[i] = Placement(existing[ref], created=False)
        elif ref in plans:
            repeats.append((i, ref))
        else:
            try:
                plans[ref] = (i, _plan(uow, catalog, data, ref))
            except LedgerError as exc:
                results[i] = exc
    placed = _insert_orders(uow, [p for _, p in plans.values()])
    sub_rows, otc_rows = [], []
    trail: list[audit.Entry] = []
    for (ref, (i, plan)), (order_id, created) in zip(plans.items(), placed, strict=True):
        results[i] = Placement(order_id, created)
        existing[ref] = order_id
        if created:
            sub_rows += [{**row, "order_id": order_id} for row in plan.subscriptions]
            otc_rows += [{**row, "order_id": order_id} for row in plan.charges]
            uow.touch(int(plan.order["account_id"]))
            trail.append(audit.Entry("placed", "order", order_id, ref,
                                     int(plan.order["account_id"]), audit.diff(None, {
                                         "status": plan.order.get("status"),
                                         "subscriptions": len(plan.subscriptions),
                                         "one_time_charges": len(plan.charges)})))
            trail += [audit.Entry("created", "one_time_charge", None, ref,
                                  int(plan.order["account_id"]), audit.diff(None, {
                                      "order_id": order_id, "product_id": c["product_id"],
                                      "quantity": c["quantity"], "unit_price": c["unit_price"],
                                      "charge_date": c["charge_date"]}))
                      for c in plan.charges]
            if plan.renewed:
                renewals.end_renewed(uow, plan.renewed, min(
                    r["start_date"] for r in plan.subscriptions))
    for i, ref in repeats:
        first = results[plans[ref][0]]
        results[i] = (Placement(existing[ref], created=False)
                      if isinstance(first, Placement) else first)
    if sub_rows:
        uow.conn.execute(insert(subscriptions), sub_rows)
    if otc_rows:
        uow.conn.execute(insert(one_time_charges), otc_rows)
    audit.record_many(uow, trail)
    return [r for r in results if r is not None]


def _insert_orders(uow: UnitOfWork, plans: list[_Plan]) -> list[tuple[int, bool]]:
    """(order id, created) per plan. One INSERT for all; when a racing transaction took one of
    the references first (unique violation, PostgreSQL), each is inserted on its own and a
    lost race answers the winner's id."""
    if not plans:
        return []
    try:
        with uow.savepoint():
            rows = uow.conn.execute(insert(orders).returning(
                orders.c.id, sort_by_parameter_order=True), [p.order for p in plans]).all()
        return [(int(r[0]), True) for r in rows]
    except IntegrityError:
        pass
    out = []
    for plan in plans:
        try:
            with uow.savepoint():
                out.append((inserted_id(uow.conn.execute(insert(orders).values(plan.order))),
                            True))
        except IntegrityError:
            winner = find_order(uow, plan.order["source_ref"])
            if winner is None:
                raise
            out.append((winner, False))
    return out


def _order(uow: UnitOfWork, order_id: int) -> dict[str, object]:
    row = uow.conn.execute(select(orders).where(orders.c.id == order_id)).mappings().first()
    if row is None:
        raise NotFound("order", order_id)
    return dict(row)


def activate_order(uow: UnitOfWork, order_id: int) -> None:
    """Order -> active; its pending subscriptions and one-time charges -> active (billable)."""
    order = _order(uow, order_id)
    if order["status"] == OrderStatus.ACTIVE:
        return
    if order["status"] == OrderStatus.CANCELLED:
        raise InvalidState("order", order_id, "is cancelled")
    activate_orders(uow, [order_id])


def activate_orders(uow: UnitOfWork, order_ids: Sequence[int]) -> None:
    """:func:`activate_order` for orders known to be accepted or held, one statement per
    table for the lot."""
    if not order_ids:
        return
    conn = uow.conn
    touched = conn.execute(update(orders).where(
        id_in(conn, orders.c.id, order_ids), orders.c.status.in_((OrderStatus.ACCEPTED, OrderStatus.HELD)))
        .values(status=OrderStatus.ACTIVE, activated_at=uow.now())
        .returning(orders.c.id, orders.c.account_id, orders.c.status, orders.c.source_ref)).all()
    for account_id in {int(r[1]) for r in touched}:
        uow.touch(account_id)
    audit.record_many(uow, [audit.Entry("activated", "order", int(r[0]), r[3], int(r[1]),
                                        {"status": [None, OrderStatus.ACTIVE.value]})
                            for r in touched])
    for table in (subscriptions, one_time_charges):
        conn.execute(update(table).where(id_in(conn, table.c.order_id, order_ids),
                                         table.c.status == ItemStatus.PENDING)
                     .values(status=ItemStatus.ACTIVE))


def cancel_order(uow: UnitOfWork, order_id: int, at: date | None = None) -> None:
    """Cancel the order: its active subscriptions end at ``at`` (default today; days billed in
    advance after it are credited), the rest of its unbilled items are cancelled; invoiced
    one-time charges stay invoiced."""
    order = _order(uow, order_id)
    if order["status"] == OrderStatus.CANCELLED:
        return
    uow.conn.execute(update(orders).where(orders.c.id == order_id)
                     .values(status=OrderStatus.CANCELLED))
    for sid, end in uow.conn.execute(select(subscriptions.c.id, subscriptions.c.end_date).where(
            subscriptions.c.order_id == order_id, subscriptions.c.status == ItemStatus.ACTIVE)
            .order_by(subscriptions.c.id)).all():
        day = uow.now().date() if at is None else at
        if end is None or end > day:
            subscriptions_service.end_subscription(uow, int(sid), day)
    uow.conn.execute(update(subscriptions).where(
        subscriptions.c.order_id == order_id, subscriptions.c.status == ItemStatus.PENDING)
        .values(status=ItemStatus.CANCELLED))
    uow.conn.execute(update(one_time_charges).where(
        one_time_charges.c.order_id == order_id, one_time_charges.c.invoice_id.is_(None))
        .values(status=ItemStatus.CANCELLED))
    uow.touch(int(order["account_id"]))  # type: ignore[call-overload]
    audit.record(uow, "cancelled", "order", order_id, entity_ref=order["source_ref"],
                 account_id=int(order["account_id"]),  # type: ignore[call-overload]
                 before={"status": order["status"]},
                 after={"status": OrderStatus.CANCELLED.value, "at": at})


def change_quantity(uow: UnitOfWork, subscription_id: int, new_quantity: Decimal | str | int,
                    effective_date: date, *, pending: bool = False) -> int:
    """Record a quantity change from ``effective_date``; returns the change id (the history
    rules are :mod:`billing_core.service.subscriptions`')."""
    return subscriptions_service.change_quantity(uow, subscription_id, new_quantity,
                                                 effective_date, pending=pending)


def activate_change(uow: UnitOfWork, change_id: int) -> None:
    """A pending quantity change takes effect (billing prorates it on the next invoice)."""
    subscriptions_service.activate_change(uow, change_id)
