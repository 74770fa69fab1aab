"""A bill-run chunk's reads cost what the chunk holds, not what the table holds (SQLite).

SQLite gathers no statistics by itself, so its planner prefers an equality on one column
(``invoice_id IS NULL``, ``product_id IN (...)``, ``state = ?``) to the range on ``account_id``
that picks the chunk: before migration 0024 each chunk walked every unbilled usage event, every
subscription and every waiting provisioning request of the table, and a 100,000-account run
spent a third of its time there. Measured here without a clock: SQLite's count of virtual
machine steps (its progress handler) for the same ten accounts, with few and with many other
accounts' rows in the tables. PostgreSQL plans from statistics and is not the subject.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from read_cost import steps
from sqlalchemy import Engine, insert

from billing_core.adapters.tables import (
    accounts,
    one_time_charges,
    orders,
    prices,
    products,
    provisioning_requests,
    subscriptions,
    tax_rates,
    usage_events,
)
from billing_core.service.billing_io import load_catalog, load_chunk
from billing_core.service.credit_control import _waiting

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
RUN = date(2026, 3, 1)
SEAT, CALLS = 1, 2
CHUNK = range(1, 11)


def _build(engine: Engine, first: int, last: int) -> None:
    """Accounts first..last, each with a seat subscription, a usage-product subscription, two
    unbilled usage events, an unbilled one-time charge and a request waiting for a hold."""
    ids = range(first, last + 1)
    with engine.begin() as conn:
        if first == 1:
            conn.execute(insert(products), [
                {"id": SEAT, "sku": "SEAT", "name": "Seats", "kind": "recurring",
                 "billing_period": "month", "created_at": NOW},
                {"id": CALLS, "sku": "CALLS", "name": "Calls", "kind": "usage", "billing_period": None,
                 "created_at": NOW}])
            conn.execute(insert(prices), [
                {"product_id": p, "currency": "USD", "effective_from": date(2020, 1, 1),
                 "unit_price": Decimal(u), "created_at": NOW}
                for p, u in ((SEAT, "12.50"), (CALLS, "0.01"))])
            conn.execute(insert(tax_rates), [{"country": "US", "region": "", "name": "US",
                                              "rate": Decimal("0.05"),
                                              "effective_from": date(2020, 1, 1)}])
        conn.execute(insert(accounts), [
            {"id": a, "ext_source": "t", "ext_object": "Account", "ext_id": f"A{a}",
             "name": f"Account {a}", "currency": "USD", "country": "US", "created_at": NOW,
             "updated_at": NOW} for a in ids])
        conn.execute(insert(orders), [
            {"id": a, "account_id": a, "source_ref": f"o{a}", "status": "active",
             "order_date": date(2026, 1, 1), "created_at": NOW} for a in ids])
        conn.execute(insert(subscriptions), [
            {"account_id": a, "order_id": a, "product_id": p, "quantity": Decimal(2),
             "frequency": "monthly", "start_date": date(2026, 1, 1), "status": "active",
             "billed_through": RUN, "created_at": NOW} for a in ids for p in (SEAT, CALLS)])
        conn.execute(insert(usage_events), [
            {"event_id": f"e{a}.{k}", "account_id": a, "product_id": CALLS,
             "quantity": Decimal(100 + k), "occurred_at": NOW - timedelta(days=5 + k),
             "created_at": NOW} for a in ids for k in (0, 1)])
        conn.execute(insert(one_time_charges), [
            {"account_id": a, "order_id": a, "product_id": SEAT, "quantity": Decimal(1),
             "charge_date": date(2026, 2, 10), "created_at": NOW} for a in ids])
        conn.execute(insert(provisioning_requests), [
            {"account_id": a, "order_id": a, "product_id": SEAT, "quantity": Decimal(2),
             "state": "awaiting_hold_release", "idempotency_key": f"k{a}", "created_at": NOW,
             "updated_at": NOW} for a in ids])


def _chunk(conn: Any) -> Any:
    data = load_chunk(conn, load_catalog(conn), RUN, 0, len(CHUNK), upto=CHUNK[-1])
    return [(d.account_id, d.total_minor, len(d.lines)) for d in data.drafts], data.errors


def test_a_chunks_reads_do_not_grow_with_the_table(sqlite_engine: Engine) -> None:
    _build(sqlite_engine, 1, 20)
    few, billed = steps(sqlite_engine, _chunk)
    waiting_few, held = steps(sqlite_engine, lambda conn: _waiting(conn, list(CHUNK)))

    _build(sqlite_engine, 21, 3000)
    many, billed_again = steps(sqlite_engine, _chunk)
    waiting_many, held_again = steps(sqlite_engine, lambda conn: _waiting(conn, list(CHUNK)))

    drafts, errors = billed
    assert errors == []
    # each of the ten: the seat (2 x 12.50), the one-time seat, the usage (201 calls x 0.01),
    # with 5 % tax; the usage product's subscription brings no recurring line
    assert [a for a, _, _ in drafts] == list(CHUNK)
    assert {(t, n) for _, t, n in drafts} == {(round((2500 + 1250 + 201) * 105 / 100), 3)}
    assert billed_again == billed and held_again == held == set(CHUNK)
    # the other 2,990 accounts' rows (150 times as many) may not be walked: the step count
    # stays within the same order (it was 40 to 150 times higher before the fix)
    assert many < few * 2, (few, many)
    assert waiting_many < waiting_few * 2, (waiting_few, waiting_many)
