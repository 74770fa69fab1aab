"""A subscription's quantity history and its end: the writes finance and orders make.

Tables
- ``subscriptions``: ``quantity`` is the quantity at the end of the history (what the
  subscription holds once every recorded change has taken effect; provisioning and the views
  read it), ``end_date`` the exclusive end (NULL: open-ended), ``billed_through`` how far the
  recurring charge was billed.
- ``subscription_changes``: the effective-dated history, one row per change (``status``
  ``active``, or ``pending`` while the account is on hold, never billed), ``invoice_id`` set by
  the invoice that settled it.

Invariants (kept by every write here, in the caller's transaction)
- The quantity on a day is the last active change dated on or before it (by effective date,
  then id), else the ordered quantity; recording order does not matter
  (:mod:`billing_core.domain.history`). Every active change's ``old_quantity`` is the quantity
  in effect just before its date, so the earliest change's ``old_quantity`` is the ordered
  quantity: inserting a change re-chains the later ones (their ``old_quantity``), invoiced or
  not (an invoiced row's ``old_quantity`` is history, not what was billed; billing reads what
  was billed from the invoiced rows' order, see the domain module).
- An invoiced change is never cancelled or altered other than its ``old_quantity``.
- An end date only moves earlier. Ending at a date before ``billed_through`` is all it takes
  for the credit: the next bill run credits the days billed after the end, at the quantities
  billed on them, by the proration rule of quantity changes, and moves ``billed_through`` back
  to the end date (once, by its guarded mark). That credit is a line of the account's next
  invoice; where nothing else is billed the invoice goes below zero and its remainder becomes
  an active credit memo (origin ``invoice_overflow``) on that same bill date.
- Quantity 0 from a date is the end at that date. A cancellation "now" ends at ``uow.now()``'s
  UTC day; a date before the start ends at the start (the whole billed range is credited).

Transactions: each function works inside the caller's unit of work (the gate's, a CLI command's
or an API request's) and commits nothing. The subscription row is locked (``FOR UPDATE`` on
PostgreSQL; SQLite serialises writers) before its history is read, so two changes of one
subscription are chained one after the other.

Committed terms (:mod:`billing_core.domain.terms`; the subscription's ``term_months``,
``term_end``, ``auto_renew``, the product's ``term_decrease`` and ``early_termination``, the
account's bill cycle day for renewal terms): a decrease dated inside a committed term is
refused or recorded from the term end instead (:func:`change_quantity` returns the change
either way; its row holds the date it takes effect); an end dated inside one is refused, moved
to the term end, or kept (:func:`term_end_date`, used by :func:`end_subscription`, hence by
quantity 0, order cancellations and amendments). A change recorded before a later one that it
would turn into a mid-term decrease (the history re-chains) is refused. A subscription never
activated is not committed yet: its changes and end are not checked. Increases are prorated as
before.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, insert, select, update

from billing_core.adapters.bulk import inserted_id
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts, products, subscription_changes, subscriptions
from billing_core.domain import terms
from billing_core.domain.errors import InvalidState, NotFound, RuleViolation, ValidationError
from billing_core.domain.history import ordered, quantity_on
from billing_core.domain.money import to_decimal
from billing_core.domain.states import ItemStatus
from billing_core.service import audit


class _Row:
    """A change row as the history rules read it."""

    __slots__ = ("id", "effective_date", "new_quantity", "invoiced", "old_quantity")

    def __init__(self, r: RowMapping) -> None:
        self.id = int(r["id"])
        self.effective_date: date = r["effective_date"]
        self.new_quantity: Decimal = r["new_quantity"]
        self.old_quantity: Decimal = r["old_quantity"]
        self.invoiced = r["invoice_id"] is not None


def _locked(uow: UnitOfWork, subscription_id: object) -> RowMapping:
    if not isinstance(subscription_id, int) or isinstance(subscription_id, bool):
        raise ValidationError("subscription_id", subscription_id, "must be an integer id")
    sub = uow.conn.execute(select(subscriptions).where(
        subscriptions.c.id == subscription_id).with_for_update()).mappings().first()
    if sub is None:
        raise NotFound("subscription", subscription_id)
    if sub["status"] == ItemStatus.CANCELLED:
        raise InvalidState("subscription", subscription_id, "is cancelled")
    return sub


def _history(uow: UnitOfWork, subscription_id: int) -> list[_Row]:
    return ordered([_Row(r) for r in uow.conn.execute(select(subscription_changes).where(
        subscription_changes.c.subscription_id == subscription_id,
        subscription_changes.c.status == ItemStatus.ACTIVE)).mappings()])


def _base(sub: RowMapping, timeline: list[_Row]) -> Decimal:
    """The ordered quantity: the earliest change's ``old_quantity`` (kept by the chain)."""
    return timeline[0].old_quantity if timeline else Decimal(sub["quantity"])


def rechain(uow: UnitOfWork, subscription_id: int, base: Decimal) -> None:
    """Write the chain invariant for the active history from ``base`` (every
    ``old_quantity``, and the subscription's ``quantity``), changing only rows that differ."""
    q = base
    for c in _history(uow, subscription_id):
        if c.old_quantity != q:
            uow.conn.execute(update(subscription_changes).where(
                subscription_changes.c.id == c.id).values(old_quantity=q))
        q = c.new_quantity
    uow.conn.execute(update(subscriptions).where(subscriptions.c.id == subscription_id)
                     .values(quantity=q))


def _term(uow: UnitOfWork, sub: RowMapping) -> tuple[terms.Term | None, str, str]:
    """The subscription's term and its product's (decrease, early termination) policies."""
    if not sub["term_months"] or sub["status"] == ItemStatus.PENDING:
        return None, terms.TermDecrease.AT_TERM_END, terms.EarlyTermination.ALLOWED
    row = uow.conn.execute(select(
        products.c.term_decrease, products.c.early_termination, accounts.c.bill_cycle_day)
        .select_from(products.join(accounts, accounts.c.id == sub["account_id"]))
        .where(products.c.id == sub["product_id"])).one()
    term = terms.make_term(sub["term_months"], sub["start_date"], sub["term_end"],
                           bool(sub["auto_renew"]), sub["frequency"], int(row.bill_cycle_day))
    return term, row.term_decrease, row.early_termination


def term_end_date(uow: UnitOfWork, sub: RowMapping, at: date) -> date:
    """Where an end asked at ``at`` falls under the subscription's committed term: ``at``, or
    the term end (``early_termination=at_term_end``); ``RuleViolation`` when refused."""
    term, _, rule = _term(uow, sub)
    return terms.end_date(term, rule, at)


def change_quantity(uow: UnitOfWork, subscription_id: int, new_quantity: Decimal | str | int,
                    effective_date: date, *, pending: bool = False) -> int:
    """Record a quantity change from ``effective_date`` (``pending``: the account is on hold,
    no effect until :func:`activate_change`); returns the change id. Quantity 0 is refused
    here: the gate turns it into :func:`end_subscription`. A decrease inside a committed term
    is refused or recorded from the term end (the product's ``term_decrease``)."""
    sub = _locked(uow, subscription_id)
    quantity = to_decimal(new_quantity, "quantity")
    if quantity <= 0:
        raise ValidationError("quantity", new_quantity, "must be greater than zero")
    _check_date(sub, effective_date, "effective_date")
    if sub["end_date"] is not None and effective_date >= sub["end_date"]:
        raise ValidationError("effective_date", effective_date,
                              f"must be before the end {sub['end_date']}")
    timeline = _history(uow, subscription_id)
    base = _base(sub, timeline)
    term, rule, _ = _term(uow, sub)
    asked = effective_date
    effective_date = terms.decrease_date(term, rule, asked, quantity_on(timeline, base, asked),
                                         quantity)
    if sub["end_date"] is not None and effective_date >= sub["end_date"]:
        raise RuleViolation("quantity", new_quantity, f"would take effect at the term end "
                            f"{effective_date}, when the subscription ends; renew it at the "
                            "lower quantity instead")
    _check_later(term, timeline, effective_date, quantity, new_quantity)
    change_id = inserted_id(uow.conn.execute(insert(subscription_changes).values(
        subscription_id=subscription_id, effective_date=effective_date,
        old_quantity=quantity_on(timeline, base, effective_date), new_quantity=quantity,
        status=ItemStatus.PENDING if pending else ItemStatus.ACTIVE, created_at=uow.now())))
    if not pending:
        rechain(uow, subscription_id, base)
    uow.touch(int(sub["account_id"]))
    audit.record(uow, "quantity_changed", "subscription", subscription_id,
                 account_id=int(sub["account_id"]), changes={
                     "quantity": [quantity_on(timeline, base, effective_date), quantity],
                     "effective_date": [None, effective_date],
                     "change_id": [None, change_id],
                     **({"status": [None, ItemStatus.PENDING.value]} if pending else {})})
    return change_id


def _check_later(term: terms.Term | None, timeline: list[_Row], day: date, quantity: Decimal,
                 asked: object) -> None:
    """A change recorded before a later one re-chains it: refuse it when that would make the
    later change a decrease inside a committed term (recorded out of order, 8 from 1 February
    after 6 from 1 March would otherwise decrease 8 -> 6 mid-term)."""
    later = next((c for c in timeline if c.effective_date > day), None)
    if later is None or later.new_quantity >= quantity:
        return
    held = terms.term_on(term, later.effective_date)
    if held is not None and held[0] != later.effective_date:
        raise RuleViolation("quantity", asked, f"would make the later change to "
                            f"{later.new_quantity} from {later.effective_date} a decrease "
                            f"inside the committed term {held[0]} to {held[1]} (exclusive)")


def activate_change(uow: UnitOfWork, change_id: int) -> None:
    """A pending change takes effect at its own date in the history (billing prorates it on
    the next invoice)."""
    row = uow.conn.execute(select(subscription_changes).where(
        subscription_changes.c.id == change_id)).mappings().first()
    if row is None:
        raise NotFound("subscription_change", change_id)
    if row["status"] != ItemStatus.PENDING:
        return
    sub = _locked(uow, int(row["subscription_id"]))
    base = _base(sub, _history(uow, int(sub["id"])))
    uow.conn.execute(update(subscription_changes).where(subscription_changes.c.id == change_id)
                     .values(status=ItemStatus.ACTIVE))
    rechain(uow, int(sub["id"]), base)
    uow.touch(int(sub["account_id"]))
    audit.record(uow, "change_activated", "subscription", sub["id"],
                 account_id=int(sub["account_id"]), changes={
                     "change_id": [change_id, change_id],
                     "status": [ItemStatus.PENDING.value, ItemStatus.ACTIVE.value]})


def end_subscription(uow: UnitOfWork, subscription_id: int, at: date | None = None) -> date:
    """End (cancel) the subscription at ``at`` (default: today, UTC), exclusive; returns the end
    date (the term end when the product moves an early end there; ``RuleViolation`` when it
    refuses one). Days billed in advance after it are credited by the next bill run."""
    sub = _locked(uow, subscription_id)
    day = uow.now().date() if at is None else at
    if not isinstance(day, date):
        raise ValidationError("at", at, "must be a date (YYYY-MM-DD)")
    asked = max(day, sub["start_date"])
    day = term_end_date(uow, sub, asked)
    if day != asked and day == sub["end_date"]:
        return day                  # already ends at its term end
    if sub["end_date"] is not None and day >= sub["end_date"]:
        raise InvalidState("at", day, f"the subscription already ends on {sub['end_date']}; "
                                      "an end date only moves earlier")
    values: dict[str, Any] = {"end_date": day}
    if sub["status"] == ItemStatus.PENDING and day <= sub["start_date"]:
        values["status"] = ItemStatus.CANCELLED     # never active, nothing billed
    uow.conn.execute(update(subscriptions).where(subscriptions.c.id == subscription_id)
                     .values(**values))
    uow.touch(int(sub["account_id"]))
    audit.record(uow, "ended", "subscription", subscription_id,
                 account_id=int(sub["account_id"]),
                 before={k: sub[k] for k in values}, after=values)
    return day


def _check_date(sub: RowMapping, value: object, field: str) -> None:
    if not isinstance(value, date) or value < sub["start_date"]:
        raise ValidationError(field, value, f"must be a date on or after the start "
                                            f"{sub['start_date']}")
