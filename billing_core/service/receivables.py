"""Receivables: what an account owes, how late, and how much credit it has left.

These are the figures credit control decides on and the sync pushes to the CRM. They are read
straight from the documents (no cached totals), in the account's currency, in minor units.

Rules kept here
- Open balance = posted/partially_paid invoices (total − applied)
  + active/partially_paid debit memos (amount − applied)
  − active/partially_applied credit memos (amount − applied)
  − payments (amount − applied): unapplied money is the account's, so it lowers what it owes.
  Draft, void and cancelled documents count for nothing. The balance may be negative (a credit).
- Unbilled orders = for accepted/held/active orders: one-time charges not yet invoiced (not
  cancelled) at quantity × unit price, and subscriptions never billed (``billed_through`` empty,
  not cancelled, not ending on or before their start: such a one bills no day, so it is never
  invoiced) at one period's charge, as the bill run charges it: the product's price per
  its billing period turned into the subscription's (``period_factor``: 12 months of a monthly
  price for an annual subscription, a twelfth of a yearly price for a monthly one). A usage
  product's subscription is left out (it has no recurring charge; its usage counts once
  invoiced). The unit price is the negotiated one or the catalog's on ``on_date``; each line is
  rounded once (the one rounding rule). An item whose product has no catalog price that day
  counts 0, with a warning (exposure is read in every commit hook).
- Exposure = open balance (+ unbilled orders, by default): every figure shown or pushed
  (:func:`account_summaries`) counts them only when credit control does
  (``include_unbilled``).
- A document is overdue when it is open with a balance and ``due_date + grace_days < on_date``;
  days overdue count from the due date.
- Aging buckets by days past due (current, 1-30, 31-60, 61-90, over 90) per account and per
  currency; sums never mix currencies.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Connection, func, literal, null, or_, select, union
from sqlalchemy.sql import ColumnElement

from billing_core.adapters.bulk import id_in
from billing_core.adapters.tables import (
    accounts,
    credit_memos,
    debit_memos,
    invoices,
    one_time_charges,
    orders,
    payments,
    products,
    subscriptions,
)
from billing_core.domain.credit import is_overdue
from billing_core.domain.errors import NotFound
from billing_core.domain.invoicing import period_factor
from billing_core.domain.money import to_minor
from billing_core.domain.states import (
    OPEN_CREDIT_MEMO,
    OPEN_DEBIT_MEMO,
    OPEN_INVOICE,
    OPEN_ORDER,
    InvoiceStatus,
    ItemStatus,
)
from billing_core.service.accounts import get_account
from billing_core.service.pricing import Price, price_for, rate

log = logging.getLogger(__name__)

BUCKETS = ("current", "d1_30", "d31_60", "d61_90", "over_90")   # row keys: f"{bucket}_minor"
IN_LIST = 2000         # accounts per query (the list is one bound value: bulk.id_in)


def open_balance_minor(conn: Connection, account_id: int) -> int:
    """What the account owes now (negative: it holds credit). See the module rules."""
    return open_balances_minor(conn, [account_id]).get(account_id, 0)


def open_balances_minor(conn: Connection, account_ids: Sequence[int]) -> dict[int, int]:
    """:func:`open_balance_minor` for many accounts: four grouped queries, whatever their
    number (credit control evaluates a whole bill-run chunk at once)."""
    ids = sorted(set(account_ids))
    result = dict.fromkeys(ids, 0)
    for table, amount, statuses, sign in (
            (invoices, invoices.c.total_minor, OPEN_INVOICE, 1),
            (debit_memos, debit_memos.c.amount_minor, OPEN_DEBIT_MEMO, 1),
            (credit_memos, credit_memos.c.amount_minor, OPEN_CREDIT_MEMO, -1),
            (payments, payments.c.amount_minor, None, -1)):
        for chunk in _chunks(ids):
            stmt = (select(table.c.account_id, func.sum(amount - table.c.applied_minor))
                    .where(id_in(conn, table.c.account_id, chunk)).group_by(table.c.account_id))
            if statuses is not None:
                stmt = stmt.where(table.c.status.in_(statuses))
            for account_id, total in conn.execute(stmt):
                result[int(account_id)] += sign * int(total or 0)
    return result


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), IN_LIST):
        yield ids[start:start + IN_LIST]


def _unit_amount(conn: Connection, prices: dict[tuple[int, str], Price | None],
                 product_id: int, quantity: Decimal, unit_price: Decimal | None, currency: str,
                 on_date: date, factor: tuple[int, int] = (1, 1)) -> int:
    """One item's charge in minor units, rounded once: quantity at the negotiated price or
    the catalog's on ``on_date``, times ``factor`` (a subscription's one period of its
    product's price: :func:`period_factor`)."""
    num, den = factor
    if unit_price is not None:
        return to_minor(quantity * unit_price * num / den, currency)
    key = (product_id, currency)
    if key not in prices:
        try:
            prices[key] = price_for(conn, product_id, currency, on_date)
        except NotFound:
            # Exposure is read inside every commit hook: one unpriced product must not block
            # every payment of the account. It counts 0 and says so; the bill run refuses it.
            log.warning("unbilled order item of product %s has no %s price on %s: counted as 0",
                        product_id, currency, on_date)
            prices[key] = None
    price = prices[key]
    return 0 if price is None else to_minor(rate(price, quantity) * num / den, currency)


def unbilled_orders_minor(conn: Connection, account_id: int, on_date: date) -> int:
    """Accepted/held/active orders' items not invoiced yet (see the module rules)."""
    get_account(conn, account_id)
    return unbilled_orders_many(conn, [account_id], on_date).get(account_id, 0)


def unbilled_orders_many(conn: Connection, account_ids: Sequence[int],
                         on_date: date) -> dict[int, int]:
    """:func:`unbilled_orders_minor` for many accounts: two queries per chunk of accounts, each
    catalog price looked up once."""
    ids = sorted(set(account_ids))
    result = dict.fromkeys(ids, 0)
    prices: dict[tuple[int, str], Price | None] = {}
    for chunk in _chunks(ids):
        open_orders = select(orders.c.id).where(id_in(conn, orders.c.account_id, chunk),
                                                orders.c.status.in_(OPEN_ORDER))
        items: list[Any] = []
        for table in (one_time_charges, subscriptions):
            period: tuple[ColumnElement[Any], ColumnElement[Any]]
            unbilled: ColumnElement[bool]
            if table is one_time_charges:       # a charge is its quantity times its price
                unbilled, period = table.c.invoice_id.is_(None), (null(), null())
            else:                               # a subscription, one period of it
                # one that ends on (or before) its start bills no day: it is never invoiced
                unbilled = table.c.billed_through.is_(None) & or_(
                    table.c.end_date.is_(None), table.c.end_date > table.c.start_date)
                period = (products.c.billing_period, table.c.frequency)
            items += conn.execute(
                select(table.c.account_id, accounts.c.currency, table.c.product_id,
                       table.c.quantity, table.c.unit_price, *period)
                .join(accounts, accounts.c.id == table.c.account_id)
                .join(products, products.c.id == table.c.product_id)
                .where(id_in(conn, table.c.account_id, chunk), table.c.order_id.in_(open_orders),
                       unbilled, table.c.status != ItemStatus.CANCELLED,
                       products.c.kind != "usage")).all()
        for account_id, currency, product_id, quantity, unit_price, billing_period, \
                frequency in items:
            factor = (1, 1) if frequency is None else period_factor(billing_period, frequency)
            result[int(account_id)] += _unit_amount(conn, prices, product_id, quantity,
                                                    unit_price, currency, on_date, factor)
    return result


def exposure_minor(conn: Connection, account_id: int, on_date: date, *,
                   include_unbilled: bool = True) -> int:
    exposure = open_balance_minor(conn, account_id)
    if include_unbilled:
        exposure += unbilled_orders_minor(conn, account_id, on_date)
    return exposure


def exposures_minor(conn: Connection, account_ids: Sequence[int], on_date: date, *,
                    include_unbilled: bool = True) -> dict[int, int]:
    """:func:`exposure_minor` for many accounts, in a handful of queries."""
    exposure = open_balances_minor(conn, account_ids)
    if include_unbilled:
        for account_id, unbilled in unbilled_orders_many(conn, account_ids, on_date).items():
            exposure[account_id] += unbilled
    return exposure


def in_open(column: Column[Any], statuses: Sequence[str]) -> ColumnElement[bool]:
    """``status IN (...)`` with the statuses written into the SQL, not bound: SQLite uses a
    partial index (``ix_invoices_open_due``, ``ix_debit_memos_open_due``) only when the query's
    own text implies the index's condition."""
    return column.in_([literal(str(s), literal_execute=True) for s in statuses])


def open_debts(conn: Connection, account_id: int | None = None, *,
               account_ids: Sequence[int] | None = None,
               due_before: date | None = None) -> list[dict[str, Any]]:
    """Every open invoice and debit memo with a balance: type, id, number, account, currency,
    due date, balance. Of one account, of several (``account_ids``), or of all; with
    ``due_before``, only those due before that day (a document without a due date is never)."""
    if account_id is not None:
        account_ids = [account_id]
    scopes: list[list[int] | None] = (
        [None] if account_ids is None else list(_chunks(sorted(set(account_ids)))))
    rows: list[dict[str, Any]] = []
    for doc_type, table, amount, statuses in (
            ("invoice", invoices, invoices.c.total_minor, OPEN_INVOICE),
            ("debit_memo", debit_memos, debit_memos.c.amount_minor, OPEN_DEBIT_MEMO)):
        for scope in scopes:
            stmt = select(table.c.id, table.c.number, table.c.account_id, table.c.currency,
                          table.c.due_date, (amount - table.c.applied_minor).label("balance")
                          ).where(in_open(table.c.status, statuses),
                                  amount > table.c.applied_minor)
            if due_before is not None:
                stmt = stmt.where(table.c.due_date < due_before)
            if scope is not None:
                stmt = stmt.where(id_in(conn, table.c.account_id, scope))
            rows += [{"type": doc_type, "id": r.id, "number": r.number,
                      "account_id": r.account_id, "currency": r.currency,
                      "due_date": r.due_date, "balance_minor": int(r.balance)}
                     for r in conn.execute(stmt)]
    return rows


def overdue_documents(conn: Connection, account_id: int, on_date: date,
                      grace_days: int = 0) -> list[dict[str, Any]]:
    """Open invoices and debit memos past ``due_date + grace_days``, most overdue first,
    each with ``days_overdue`` (counted from the due date)."""
    return overdue_many(conn, [account_id], on_date, grace_days).get(account_id, [])


def overdue_many(conn: Connection, account_ids: Sequence[int], on_date: date,
                 grace_days: int = 0) -> dict[int, list[dict[str, Any]]]:
    """:func:`overdue_documents` for many accounts (accounts with nothing late are absent)."""
    late: dict[int, list[dict[str, Any]]] = {}
    for d in open_debts(conn, account_ids=account_ids):
        if is_overdue(d["due_date"], on_date, grace_days):
            late.setdefault(int(d["account_id"]), []).append(
                dict(d, days_overdue=(on_date - d["due_date"]).days))
    for docs in late.values():
        docs.sort(key=lambda d: (-d["days_overdue"], d["number"] or ""))
    return late


def _bucket(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "d1_30"
    if days_past_due <= 60:
        return "d31_60"
    if days_past_due <= 90:
        return "d61_90"
    return "over_90"


def aging(conn: Connection, on_date: date, account_id: int | None = None) -> list[dict[str, Any]]:
    """Aging rows: one per (account, currency) with debts, then one total per currency
    (``account_id`` None). Amounts in minor units of that row's currency; ``total_minor`` is the
    sum of the buckets."""
    per_account: dict[tuple[int, str], dict[str, Any]] = {}
    for doc in open_debts(conn, account_id):
        key = (doc["account_id"], doc["currency"])
        row = per_account.setdefault(key, {"account_id": key[0], "currency": key[1],
                                           **{f"{b}_minor": 0 for b in BUCKETS}, "total_minor": 0})
        days = (on_date - doc["due_date"]).days if doc["due_date"] else 0
        row[f"{_bucket(days)}_minor"] += doc["balance_minor"]
        row["total_minor"] += doc["balance_minor"]
    ids = sorted({account for account, _ in per_account})
    names = dict(conn.execute(select(accounts.c.id, accounts.c.name).where(
        id_in(conn, accounts.c.id, ids))).all()) if ids else {}
    rows = [dict(r, account_name=names.get(r["account_id"]))
            for _, r in sorted(per_account.items())]
    totals: dict[str, dict[str, Any]] = {}
    for r in rows:
        total = totals.setdefault(r["currency"], {
            "account_id": None, "account_name": "TOTAL", "currency": r["currency"],
            **{f"{b}_minor": 0 for b in BUCKETS}, "total_minor": 0})
        for col in (*(f"{b}_minor" for b in BUCKETS), "total_minor"):
            total[col] += r[col]
    return rows + [totals[c] for c in sorted(totals)]


def account_summary(conn: Connection, account_id: int, on_date: date, *,
                    grace_days: int = 0, include_unbilled: bool = True) -> dict[str, Any]:
    """The figures the CRM shows: open balance, exposure (with unbilled orders only when
    ``include_unbilled``, as credit control counts it: the policy's
    ``include_unbilled_orders``), available credit (limit − exposure, or None without a
    limit), oldest overdue days (0 when nothing is late), last invoice."""
    return account_summaries(conn, [account_id], on_date, grace_days=grace_days,
                             include_unbilled=include_unbilled)[account_id]


def account_summaries(conn: Connection, account_ids: Sequence[int], on_date: date, *,
                      grace_days: int = 0,
                      include_unbilled: bool = True) -> dict[int, dict[str, Any]]:
    """:func:`account_summary` for many accounts: a handful of grouped queries per chunk of
    accounts, whatever their number (the sync's outbox reads a page of accounts at once).
    Raises ``NotFound`` naming the first unknown account."""
    ids = sorted(set(account_ids))
    rows: dict[int, Any] = {}
    last: dict[int, Any] = {}
    for chunk in _chunks(ids):
        rows.update((int(r.id), r) for r in conn.execute(
            select(accounts.c.id, accounts.c.currency, accounts.c.credit_limit_minor,
                   accounts.c.credit_limit_override_minor)
            .where(id_in(conn, accounts.c.id, chunk))))
        last.update(_last_invoices(conn, chunk))
    for account_id in ids:
        if account_id not in rows:
            raise NotFound("account", account_id)
    balances = open_balances_minor(conn, ids)
    unbilled = unbilled_orders_many(conn, ids, on_date)
    overdue = overdue_many(conn, ids, on_date, grace_days)
    out: dict[int, dict[str, Any]] = {}
    for account_id in ids:
        account, late, inv = rows[account_id], overdue.get(account_id, []), last.get(account_id)
        exposure = balances[account_id] + (unbilled[account_id] if include_unbilled else 0)
        limit = account.credit_limit_override_minor
        if limit is None:       # finance's override wins over the CRM's limit
            limit = account.credit_limit_minor
        out[account_id] = {
            "account_id": account_id, "currency": account.currency,
            "open_balance_minor": balances[account_id], "unbilled_minor": unbilled[account_id],
            "exposure_minor": exposure, "credit_limit_minor": limit,
            "available_credit_minor": None if limit is None else int(limit) - exposure,
            "oldest_overdue_days": max((d["days_overdue"] for d in late), default=0),
            "overdue_minor": sum(d["balance_minor"] for d in late),
            "last_invoice_number": inv.number if inv else None,
            "last_invoice_date": inv.issue_date if inv else None,
        }
    return out


def _last_invoices(conn: Connection, account_ids: list[int]) -> dict[int, Any]:
    """Each account's latest numbered, non-draft, non-void invoice (issue date, then id)."""
    ranked = select(
        invoices.c.account_id, invoices.c.number, invoices.c.issue_date,
        func.row_number().over(partition_by=invoices.c.account_id,
                               order_by=(invoices.c.issue_date.desc(), invoices.c.id.desc())
                               ).label("rank"),
    ).where(id_in(conn, invoices.c.account_id, account_ids), invoices.c.number.is_not(None),
            invoices.c.status.not_in((InvoiceStatus.DRAFT, InvoiceStatus.VOID))).subquery()
    return {int(r.account_id): r for r in conn.execute(
        select(ranked.c.account_id, ranked.c.number, ranked.c.issue_date)
        .where(ranked.c.rank == 1))}


def accounts_with_overdue(conn: Connection, on_date: date) -> set[int]:
    """Accounts with an unpaid document past due on ``on_date`` (grace not counted): their
    overdue days grow with no event."""
    parts = [
        select(invoices.c.account_id.label("a")).where(
            in_open(invoices.c.status, OPEN_INVOICE), invoices.c.due_date < on_date),
        select(debit_memos.c.account_id).where(
            in_open(debit_memos.c.status, OPEN_DEBIT_MEMO),
            debit_memos.c.due_date < on_date),
    ]
    return {int(r[0]) for r in conn.execute(union(*parts))}
