"""Usage rating, the dispatcher's claim and the CRM's order views read what their chunk holds,
not what the table holds (SQLite).

The same class as test_bill_run_read_cost.py: SQLite plans without statistics and took an
equality on one column over the condition that picks the chunk.
- usage rating: ``invoice_id IS NULL`` (ix_metered_events_invoice) over ``account_id IN``:
  every unbilled metered event of the table for each group of accounts (migration 0025);
- the dispatcher's claim: ``state IN (... provisioned ...)`` (ix_provisioning_state) over the
  window's subscriptions: every provisioned request of the table for each window;
- order views (the outbox push): no index on invoice_lines.subscription_id, so the join from
  the orders' subscriptions read every invoice line of the table for each chunk;
- voiding an invoice: its overflow credit memos by ``origin_invoice_id``, which had no index
  (migration 0025): every credit memo of the table for each invoice voided.
Measured without a clock: SQLite's virtual machine steps for the same ten accounts with 20 and
3,000 accounts in the tables. PostgreSQL plans from statistics and is not the subject.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from read_cost import steps
from sqlalchemy import Engine, insert, select
from test_bill_run_read_cost import CALLS, CHUNK, NOW, RUN, SEAT, _build

from billing_core.adapters.tables import (
    credit_memos,
    invoice_lines,
    invoices,
    metered_events,
    provisioning_requests,
    subscriptions,
    usage_metrics,
)
from billing_core.domain.invoicing import AccountTerms
from billing_core.service.billing_io import load_catalog
from billing_core.service.provisioning import _claimable
from billing_core.service.usage_rating import load_metered
from billing_core.service.views import order_views
from billing_core.service.voiding import check_voidable

PERIOD_END = date(2026, 3, 31)


def _seats(conn: Any, first: int, last: int) -> dict[int, int]:
    """Each account's seat subscription id."""
    return {int(a): int(s) for a, s in conn.execute(
        select(subscriptions.c.account_id, subscriptions.c.id).where(
            subscriptions.c.account_id.between(first, last), subscriptions.c.product_id == SEAT))}


def _more(engine: Engine, first: int, last: int) -> None:
    """Accounts first..last (built by _build) also get: two unbilled metered events of February,
    a numbered invoice with a line on their seat subscription, and a provisioned request on it
    (the chunk's accounts a pending one instead)."""
    ids = range(first, last + 1)
    with engine.begin() as conn:
        if first == 1:
            conn.execute(insert(usage_metrics), [{
                "code": "calls", "effective_from": date(2020, 1, 1), "aggregation": "count",
                "product_id": CALLS, "created_at": NOW}])
        seat = _seats(conn, first, last)
        conn.execute(insert(metered_events), [
            {"event_id": f"m{a}.{k}", "account_id": a, "metric_code": "calls",
             "occurred_at": NOW - timedelta(days=10 + k), "value": Decimal(1),
             "value_e6": 1_000_000, "received_at": NOW} for a in ids for k in (0, 1)])
        conn.execute(insert(invoices), [
            {"id": a, "account_id": a, "currency": "USD", "number": f"INV-{a:06d}",
             "status": "posted", "period_start": date(2026, 1, 1),
             "period_end": date(2026, 1, 31), "issue_date": date(2026, 1, 1),
             "due_date": date(2026, 1, 31), "subtotal_minor": 2500, "tax_minor": 0,
             "total_minor": 2500, "created_at": NOW} for a in ids])
        conn.execute(insert(invoice_lines), [
            {"invoice_id": a, "line_no": n, "kind": "recurring", "description": "Seats",
             "product_id": SEAT, "subscription_id": seat[a] if n == 1 else None,
             "quantity": Decimal(2), "unit_price": Decimal("12.50"), "amount_minor": 2500,
             "claims_charge": n == 1} for a in ids for n in (1, 2)])
        conn.execute(insert(provisioning_requests), [
            {"account_id": a, "order_id": a, "subscription_id": seat[a], "product_id": SEAT,
             "quantity": Decimal(2), "state": "pending" if a in CHUNK else "provisioned",
             "idempotency_key": f"p{a}", "created_at": NOW, "updated_at": NOW}
            for a in ids])


def _metered(conn: Any) -> Any:
    catalog = load_catalog(conn)
    due = {a: AccountTerms(a, "USD", 1) for a in CHUNK}
    work = load_metered(conn, catalog.book, catalog.products, due, {1: (RUN, PERIOD_END)})
    return sorted((a, w.expected, w.max_id) for a, w in work.items())


def _claim(conn: Any) -> Any:
    return [(int(r.id), int(r.subscription_id))
            for r in _claimable(conn, "sqlite", 50, datetime(2026, 3, 2, tzinfo=UTC))]


def _views(conn: Any) -> Any:
    return sorted((o, v.first_invoice_number, v.provisioning_status)
                  for o, v in order_views(conn, list(CHUNK)).items())


def _world(engine: Engine, first: int, last: int) -> None:
    _build(engine, first, last)
    _more(engine, first, last)


def test_rating_claiming_and_order_views_do_not_grow_with_the_table(
        sqlite_engine: Engine) -> None:
    _world(sqlite_engine, 1, 20)
    few = {name: steps(sqlite_engine, read)
           for name, read in (("metered", _metered), ("claim", _claim), ("views", _views))}
    _world(sqlite_engine, 21, 3000)
    many = {name: steps(sqlite_engine, read)
            for name, read in (("metered", _metered), ("claim", _claim), ("views", _views))}

    # the same results from the bigger table
    assert {n: got for n, (_, got) in many.items()} == {n: got for n, (_, got) in few.items()}
    metered = few["metered"][1]
    assert [(a, n) for a, n, _ in metered] == [(a, 2) for a in CHUNK]
    assert [s for _, s in few["claim"][1]] == sorted(_seat_ids(sqlite_engine).values())
    assert few["views"][1] == [(a, f"INV-{a:06d}", "waiting for hold release") for a in CHUNK]
    # the other 2,990 accounts' rows (150 times as many) may not be walked
    for name in few:
        assert many[name][0] < few[name][0] * 2, (name, few[name][0], many[name][0])


def _memos(engine: Engine, first: int, last: int) -> None:
    """Each invoice of accounts first..last gets an active, unapplied overflow credit memo."""
    with engine.begin() as conn:
        conn.execute(insert(credit_memos), [
            {"account_id": a, "currency": "USD", "number": f"CM-{a:06d}", "status": "active",
             "amount_minor": 100, "reason": "overflow", "origin": "invoice_overflow",
             "origin_invoice_id": a, "created_at": NOW, "activated_at": NOW}
            for a in range(first, last + 1)])


def _voidable(conn: Any) -> Any:
    out = []
    for a in CHUNK:
        invoice = conn.execute(select(invoices).where(invoices.c.id == a)).mappings().one()
        check_voidable(SimpleNamespace(conn=conn), invoice)    # raises if it may not be
        out.append(a)
    return out


def test_voiding_checks_do_not_grow_with_the_credit_memos(sqlite_engine: Engine) -> None:
    _world(sqlite_engine, 1, 20)
    _memos(sqlite_engine, 1, 20)
    few, got = steps(sqlite_engine, _voidable)
    _world(sqlite_engine, 21, 3000)
    _memos(sqlite_engine, 21, 3000)
    many, got_again = steps(sqlite_engine, _voidable)
    assert got == got_again == list(CHUNK)
    assert many < few * 2, (few, many)


def _seat_ids(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {a: s for a, s in _seats(conn, CHUNK[0], CHUNK[-1]).items()}
