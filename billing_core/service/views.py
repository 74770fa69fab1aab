"""Read-only views of billing for outside readers (the sync shows them on CRM records): plain
values for a page of accounts or orders at once.

Rules kept here:
- An account's view is receivables' figures (:func:`receivables.account_summaries`: open
  balance, exposure, available credit = limit − exposure or None without a limit, oldest overdue
  days, last invoice) as amounts in the account's currency, with the names of the hold reasons
  it has now, sorted, and whether one of them is a reason billing places and lifts itself
  (``credit.BILLING_OWNED``). An unknown account is ``NotFound``.
- An order's view: its number ``ORD-<id>``; one provisioning status summing up the requests
  of its deal (:func:`provisioning_status`); its deal's first invoice, the earliest issued
  (then lowest id) numbered, non-void invoice that bills one of the deal's subscriptions or
  one-time charges. The deal of an order is the order and the orders it amends in turn
  (``amends_order_id``): an amendment changes the first order's subscriptions and queues its
  requests there, so the quote of an amendment shows the increase still pending and the
  deal's invoice, not "not required" and none.
- Reads are batched (a fixed handful of queries per chunk of ids, whatever the page size) and
  write nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from billing_core.adapters.bulk import id_in
from billing_core.adapters.tables import (
    invoice_lines,
    invoices,
    one_time_charges,
    orders,
    provisioning_requests,
    subscriptions,
)
from billing_core.domain.credit import BILLING_OWNED
from billing_core.domain.money import from_minor
from billing_core.domain.records import quick_init
from billing_core.domain.states import InvoiceStatus, OrderStatus, ProvisioningState
from billing_core.service.holds import current_reasons_many
from billing_core.service.receivables import account_summaries

ORDER_CHUNK = 500      # orders per query


@quick_init
@dataclass(frozen=True)
class AccountView:
    account_id: int
    currency: str
    open_balance: Decimal
    exposure: Decimal
    available_credit: Decimal | None          # None: the account has no credit limit
    oldest_overdue_days: int                  # 0 when nothing is late
    last_invoice_number: str | None
    last_invoice_date: date | None
    hold_reasons: tuple[str, ...]             # sorted; empty when not on hold
    held_by_billing: bool                     # one of them is billing's (credit limit, overdue)


@quick_init
@dataclass(frozen=True)
class OrderView:
    order_id: int
    order_number: str
    provisioning_status: str
    first_invoice_number: str | None


def account_views(conn: Connection, account_ids: Sequence[int], on_date: date, *,
                  grace_days: int = 0, include_unbilled: bool = True) -> dict[int, AccountView]:
    """Each account's view on ``on_date`` (overdue after ``grace_days``; exposure with unbilled
    orders when ``include_unbilled``), keyed by id."""
    ids = sorted(set(account_ids))
    summaries = account_summaries(conn, ids, on_date, grace_days=grace_days,
                                  include_unbilled=include_unbilled)
    reasons = current_reasons_many(conn, ids)
    out: dict[int, AccountView] = {}
    amounts: dict[tuple[int, str], Decimal] = {}     # amounts repeat (zero, the limits)

    def amount(minor: Any, cur: str) -> Decimal:
        key = (int(minor), cur)
        found = amounts.get(key)
        if found is None:
            found = amounts[key] = from_minor(key[0], cur)
        return found

    for account_id in ids:
        s = summaries[account_id]
        cur = s["currency"]
        available = s["available_credit_minor"]
        held = reasons.get(account_id, {})
        out[account_id] = AccountView(
            account_id=account_id, currency=cur,
            open_balance=amount(s["open_balance_minor"], cur),
            exposure=amount(s["exposure_minor"], cur),
            available_credit=None if available is None else amount(available, cur),
            oldest_overdue_days=int(s["oldest_overdue_days"]),
            last_invoice_number=s["last_invoice_number"],
            last_invoice_date=s["last_invoice_date"],
            hold_reasons=tuple(sorted(held)),
            held_by_billing=not BILLING_OWNED.isdisjoint(held))
    return out


def order_views(conn: Connection, order_ids: Iterable[int]) -> dict[int, OrderView]:
    """Each order's view (over its deal), keyed by id; a few queries per chunk of orders, and
    one more per level of amendments walked back."""
    ids = sorted(set(order_ids))
    deal = _deals(conn, ids)
    members = sorted({m for chain in deal.values() for m in chain})
    states: dict[int, list[str]] = {}
    status: dict[int, str] = {}
    first: dict[int, tuple[date, int, str]] = {}
    for chunk in _chunks(members):
        for order_id, state in conn.execute(select(
                provisioning_requests.c.order_id, provisioning_requests.c.state).where(
                id_in(conn, provisioning_requests.c.order_id, chunk))):
            states.setdefault(int(order_id), []).append(state)
        status.update((int(i), st) for i, st in conn.execute(
            select(orders.c.id, orders.c.status).where(id_in(conn, orders.c.id, chunk))))
        for order_id, issued, invoice_id, number in _invoices_of(conn, chunk):
            key = (issued, invoice_id, number)
            if order_id not in first or key < first[order_id]:
                first[order_id] = key
    out: dict[int, OrderView] = {}
    for order_id in ids:
        chain = deal[order_id]
        held = any(status.get(m) == OrderStatus.HELD for m in chain)
        firsts = [first[m] for m in chain if m in first]
        out[order_id] = OrderView(
            order_id=order_id, order_number=f"ORD-{order_id}",
            provisioning_status=provisioning_status(
                [s for m in chain for s in states.get(m, [])],
                OrderStatus.HELD if held else status.get(order_id)),
            first_invoice_number=min(firsts)[2] if firsts else None)
    return out


def _deals(conn: Connection, ids: list[int]) -> dict[int, list[int]]:
    """Each order and the orders it amends in turn (``amends_order_id``), by walking back one
    level of the chains at a time (a loop stops where it began)."""
    parent: dict[int, int | None] = {}
    frontier = set(ids)
    while frontier:
        found: dict[int, int | None] = {}
        for chunk in _chunks(sorted(frontier)):
            found.update((int(i), None if a is None else int(a)) for i, a in conn.execute(
                select(orders.c.id, orders.c.amends_order_id)
                .where(id_in(conn, orders.c.id, chunk))))
        parent.update(found)
        frontier = {a for a in found.values() if a is not None and a not in parent}
    out: dict[int, list[int]] = {}
    for order_id in ids:
        chain: list[int] = []
        current: int | None = order_id
        while current is not None and current not in chain:
            chain.append(current)
            current = parent.get(current)
        out[order_id] = chain
    return out


def _invoices_of(conn: Connection, chunk: list[int]) -> Iterator[tuple[int, date, int, str]]:
    """(order id, issue date, invoice id, number) of every numbered, non-void invoice billing a
    subscription or a one-time charge of the orders in ``chunk``."""
    billed = (invoices.c.number.is_not(None), invoices.c.status != InvoiceStatus.VOID)
    # invoice_lines has no index on subscription_id (the bill run writes ~4 lines per invoice):
    # joining lines to the orders' subscriptions read every line of the table for each chunk.
    # The subscriptions' accounts' invoices are read by account instead, their lines by invoice
    # (uq_invoice_lines_no), and the lines kept by subscription in Python.
    order_of: dict[int, int] = {}
    accounts_of: set[int] = set()
    for sub_id, order_id, account_id in conn.execute(
            select(subscriptions.c.id, subscriptions.c.order_id, subscriptions.c.account_id)
            .where(id_in(conn, subscriptions.c.order_id, chunk))):
        order_of[int(sub_id)] = int(order_id)
        accounts_of.add(int(account_id))
    if order_of:
        for sub_id, issued, invoice_id, number in conn.execute(
                select(invoice_lines.c.subscription_id, invoices.c.issue_date, invoices.c.id,
                       invoices.c.number)
                .join(invoice_lines, invoice_lines.c.invoice_id == invoices.c.id)
                .where(id_in(conn, invoices.c.account_id, sorted(accounts_of)), *billed,
                       invoice_lines.c.subscription_id.is_not(None))):
            if int(sub_id) in order_of:
                yield order_of[int(sub_id)], issued, int(invoice_id), number
    via_charges = (select(one_time_charges.c.order_id, invoices.c.issue_date, invoices.c.id,
                          invoices.c.number)
                   .join(invoices, invoices.c.id == one_time_charges.c.invoice_id)
                   .where(id_in(conn, one_time_charges.c.order_id, chunk), *billed))
    for order_id, issued, invoice_id, number in conn.execute(via_charges):
        yield int(order_id), issued, int(invoice_id), number


def provisioning_status(states: Sequence[str], order_status: str | None) -> str:
    """One status for an order from its provisioning requests' states: ``not required``
    without requests; ``waiting for hold release`` while any waits for it (or the order is
    held); then ``failed`` if any failed; ``provisioned`` (or ``cancelled`` when none was
    provisioned) once all are settled; ``dispatched`` once all are at least dispatched;
    otherwise ``in progress``."""
    if not states:
        return "not required"
    if ProvisioningState.AWAITING_HOLD_RELEASE in states or order_status == OrderStatus.HELD:
        return "waiting for hold release"
    if ProvisioningState.FAILED in states:
        return "failed"
    if all(s in _SETTLED for s in states):
        return "provisioned" if ProvisioningState.PROVISIONED in states else "cancelled"
    if all(s in _SETTLED or s == ProvisioningState.DISPATCHED for s in states):
        return "dispatched"
    return "in progress"


_SETTLED = frozenset({ProvisioningState.PROVISIONED, ProvisioningState.CANCELLED})


def orders_of_accounts(conn: Connection, account_ids: Sequence[int]) -> list[int]:
    """The ids of every order of these accounts, ascending."""
    if not account_ids:
        return []
    return sorted(int(i) for i in conn.execute(
        select(orders.c.id).where(id_in(conn, orders.c.account_id, account_ids))).scalars())


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), ORDER_CHUNK):
        yield ids[start:start + ORDER_CHUNK]
