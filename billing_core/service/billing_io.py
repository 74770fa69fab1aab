"""The bill run's database side: read a chunk of accounts, write its invoices, in bulk.

Rules kept here
- Reading a chunk is one SELECT per table, by account-id range (accounts, live invoices,
  subscriptions, quantity changes, one-time charges, unbilled usage, credit grants); the
  catalog, prices and tax rates are read once per run.
- Writing a chunk is one executemany INSERT per table (invoices with RETURNING in parameter
  order, lines, credit draws) and one executemany UPDATE per kind of mark (billed_through,
  change / charge / usage ``invoice_id``, grant ``remaining_minor``). No per-row ORM round trips.
- Usage events are dated by their UTC day.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    credit_draws,
    credit_grants,
    invoice_lines,
    invoices,
    one_time_charges,
    products,
    subscription_changes,
    subscriptions,
    usage_events,
)
from billing_core.domain.errors import LedgerError
from billing_core.domain.invoicing import (
    AccountTerms,
    Change,
    Charge,
    Draft,
    Grant,
    Product,
    Sub,
    Usage,
    compute_invoice,
)
from billing_core.domain.periods import bill_period
from billing_core.domain.rating import PriceBook
from billing_core.service.numbering import take_numbers
from billing_core.service.pricing import list_prices
from billing_core.service.tax import TaxTable, load_tax_table


@dataclass
class Catalog:
    book: PriceBook
    products: dict[int, Product]
    tax: TaxTable


@dataclass
class ChunkData:
    account_ids: list[int]
    drafts: list[Draft] = field(default_factory=list)
    already_billed: int = 0
    errors: list[dict[str, object]] = field(default_factory=list)


@dataclass
class Written:
    invoices: int = 0
    lines: int = 0
    rows: int = 0
    previews: list[tuple[Draft, str | None]] = field(default_factory=list)


def load_catalog(conn: Connection) -> Catalog:
    prods = {r.id: Product(r.name, r.billing_period) for r in conn.execute(
        select(products.c.id, products.c.name, products.c.billing_period))}
    return Catalog(PriceBook(list_prices(conn)), prods, load_tax_table(conn))


def load_chunk(conn: Connection, catalog: Catalog, run_date: date, after_id: int,
               size: int) -> ChunkData:
    acct_rows = conn.execute(select(
        accounts.c.id, accounts.c.currency, accounts.c.bill_cycle_day,
        accounts.c.payment_terms_days, accounts.c.country, accounts.c.region,
    ).where(accounts.c.id > after_id).order_by(accounts.c.id).limit(size)).all()
    data = ChunkData([r.id for r in acct_rows])
    if not acct_rows:
        return data
    lo, hi = acct_rows[0].id, acct_rows[-1].id
    periods: dict[int, tuple[date, date]] = {}
    for bcd in {r.bill_cycle_day for r in acct_rows}:
        periods[bcd] = bill_period(run_date, bcd)
    latest = dict(conn.execute(select(invoices.c.account_id, func.max(invoices.c.period_start))
                               .where(invoices.c.account_id.between(lo, hi),
                                      invoices.c.status != "void")
                               .group_by(invoices.c.account_id)).all())
    due: dict[int, AccountTerms] = {}
    for r in acct_rows:
        start = periods[r.bill_cycle_day][0]
        last = latest.get(r.id)
        if last is not None and last >= start:
            data.already_billed += 1
            continue
        due[r.id] = AccountTerms(r.id, r.currency, r.bill_cycle_day, r.payment_terms_days,
                                 r.country, r.region)
    if not due:
        return data
    max_start = max(periods[a.bill_cycle_day][0] for a in due.values())

    subs: dict[int, list[Sub]] = defaultdict(list)
    by_id: dict[int, Sub] = {}
    for s in conn.execute(select(
            subscriptions.c.id, subscriptions.c.account_id, subscriptions.c.product_id,
            subscriptions.c.quantity, subscriptions.c.frequency, subscriptions.c.start_date,
            subscriptions.c.end_date, subscriptions.c.billed_through, subscriptions.c.unit_price,
    ).where(subscriptions.c.account_id.between(lo, hi), subscriptions.c.status == "active")):
        if s.account_id in due:
            sub = Sub(s.id, s.product_id, s.quantity, s.frequency, s.start_date, s.end_date,
                      s.billed_through, s.unit_price)
            subs[s.account_id].append(sub)
            by_id[s.id] = sub
    if by_id:
        sub_ids = select(subscriptions.c.id).where(subscriptions.c.account_id.between(lo, hi))
        for c in conn.execute(select(
                subscription_changes.c.id, subscription_changes.c.subscription_id,
                subscription_changes.c.effective_date, subscription_changes.c.old_quantity,
                subscription_changes.c.new_quantity, subscription_changes.c.invoice_id,
        ).where(subscription_changes.c.subscription_id.in_(sub_ids),
                subscription_changes.c.status == "active")):
            sub = by_id.get(c.subscription_id)
            if sub is not None:
                sub.changes.append(Change(c.id, c.effective_date, c.old_quantity,
                                          c.new_quantity, c.invoice_id is not None))

    charges: dict[int, list[Charge]] = defaultdict(list)
    for c in conn.execute(select(
            one_time_charges.c.id, one_time_charges.c.account_id, one_time_charges.c.product_id,
            one_time_charges.c.quantity, one_time_charges.c.charge_date,
            one_time_charges.c.unit_price,
    ).where(one_time_charges.c.account_id.between(lo, hi), one_time_charges.c.status == "active",
            one_time_charges.c.invoice_id.is_(None))):
        if c.account_id in due:
            charges[c.account_id].append(Charge(c.id, c.product_id, c.quantity, c.charge_date,
                                                c.unit_price))

    usage: dict[int, list[Usage]] = defaultdict(list)
    cutoff = datetime.combine(max_start, time(), tzinfo=UTC)
    for u in conn.execute(select(
            usage_events.c.id, usage_events.c.account_id, usage_events.c.product_id,
            usage_events.c.quantity, usage_events.c.occurred_at,
    ).where(usage_events.c.account_id.between(lo, hi), usage_events.c.invoice_id.is_(None),
            usage_events.c.occurred_at < cutoff)):
        acct = due.get(u.account_id)
        if acct is None:
            continue
        day = u.occurred_at.astimezone(UTC).date()
        if day < periods[acct.bill_cycle_day][0]:
            usage[u.account_id].append(Usage(u.id, u.product_id, u.quantity, day))

    grants: dict[int, list[Grant]] = defaultdict(list)
    for g in conn.execute(select(
            credit_grants.c.id, credit_grants.c.account_id, credit_grants.c.currency,
            credit_grants.c.remaining_minor, credit_grants.c.expires_on,
    ).where(credit_grants.c.account_id.between(lo, hi), credit_grants.c.remaining_minor > 0)):
        acct = due.get(g.account_id)
        if acct is not None and g.currency == acct.currency:
            grants[g.account_id].append(Grant(g.id, g.remaining_minor, g.expires_on))

    for account_id, acct in due.items():
        start, end = periods[acct.bill_cycle_day]
        rate, _ = catalog.tax.rate_for(acct.country, acct.region, start)
        try:
            draft = compute_invoice(acct, start, end, run_date, subs.get(account_id, []),
                                    charges.get(account_id, []), usage.get(account_id, []),
                                    grants.get(account_id, []), catalog.products, catalog.book,
                                    rate)
        except LedgerError as exc:
            data.errors.append({"account_id": account_id, **exc.as_dict()})
            continue
        if draft is not None:
            data.drafts.append(draft)
    return data


def _many(conn: Connection, stmt: Any, rows: list[dict[str, Any]]) -> int:
    if rows:
        conn.execute(stmt, rows)
    return len(rows)


def write_chunk(uow: UnitOfWork, data: ChunkData, *, run_id: int | None, post: bool,
                series: str, issue_date: date) -> Written:
    """Insert the chunk's invoices (posted, numbered in account order) and mark what they bill."""
    out = Written()
    drafts = data.drafts
    if not drafts:
        return out
    conn, now = uow.conn, uow.now()
    numbers: list[str | None] = list(take_numbers(conn, series, len(drafts))) if post \
        else [None] * len(drafts)
    rows = [{
        "account_id": d.account_id, "currency": d.currency, "series": series, "number": n,
        "status": "posted" if post else "draft", "period_start": d.period_start,
        "period_end": d.period_end, "issue_date": d.issue_date, "due_date": d.due_date,
        "subtotal_minor": d.subtotal_minor, "tax_minor": d.tax_minor,
        "total_minor": d.total_minor, "applied_minor": 0, "bill_run_id": run_id,
        "created_at": now, "posted_at": now if post else None,
    } for d, n in zip(drafts, numbers)]
    ids = [r[0] for r in conn.execute(
        insert(invoices).returning(invoices.c.id, sort_by_parameter_order=True), rows)]
    lines, subs_bt, changes, charges, usage, draws, grants = [], [], [], [], [], [], []
    for d, inv_id in zip(drafts, ids):
        for no, ln in enumerate(d.lines, 1):
            lines.append({
                "invoice_id": inv_id, "line_no": no, "kind": ln.kind,
                "description": ln.description[:255], "product_id": ln.product_id,
                "subscription_id": ln.subscription_id, "quantity": ln.quantity,
                "unit_price": ln.unit_price, "period_start": ln.period_start,
                "period_end": ln.period_end, "amount_minor": ln.amount_minor,
                "tax_rate": ln.tax_rate, "tax_minor": ln.tax_minor})
        subs_bt.extend({"b_id": sid, "b_bt": bt} for sid, bt in d.billed_through.items())
        changes.extend({"b_id": cid, "b_inv": inv_id} for cid in d.changes)
        charges.extend({"b_id": cid, "b_inv": inv_id} for cid in d.charges)
        usage.extend({"b_id": uid, "b_inv": inv_id} for uid in d.usage)
        for grant_id, amount in d.draws:
            draws.append({"grant_id": grant_id, "invoice_id": inv_id, "kind": "usage",
                          "amount_minor": amount, "created_at": now})
            grants.append({"b_id": grant_id, "b_amt": amount})
    out.rows = len(rows) + _many(conn, insert(invoice_lines), lines)
    out.rows += _many(conn, update(subscriptions).where(subscriptions.c.id == bindparam("b_id"))
                      .values(billed_through=bindparam("b_bt")), subs_bt)
    out.rows += _many(conn, update(subscription_changes)
                      .where(subscription_changes.c.id == bindparam("b_id"))
                      .values(invoice_id=bindparam("b_inv")), changes)
    out.rows += _many(conn, update(one_time_charges)
                      .where(one_time_charges.c.id == bindparam("b_id"))
                      .values(invoice_id=bindparam("b_inv")), charges)
    out.rows += _many(conn, update(usage_events).where(usage_events.c.id == bindparam("b_id"))
                      .values(invoice_id=bindparam("b_inv")), usage)
    out.rows += _many(conn, update(credit_grants).where(credit_grants.c.id == bindparam("b_id"))
                      .values(remaining_minor=credit_grants.c.remaining_minor
                              - bindparam("b_amt")), grants)
    out.rows += _many(conn, insert(credit_draws), draws)
    for d, inv_id in zip(drafts, ids):
        if d.overflow_minor:
            from billing_core.service.memos import issue_credit_memo

            issue_credit_memo(uow, d.account_id, d.overflow_minor,
                              f"Invoice below zero for {d.period_start}",
                              origin="invoice_overflow", origin_invoice_id=inv_id, activate=True)
            out.rows += 1
        if post:
            uow.touch(d.account_id)
    out.invoices, out.lines = len(drafts), len(lines)
    out.previews = list(zip(drafts, numbers))
    return out
