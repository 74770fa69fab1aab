"""What moved since the outbox's watermark costs what moved, not what the ledger holds
(``billing_core.service.accounts.changed_since``; migration 0026).

Every sync cycle's outbox refresh asks which accounts' figures or holds may have moved since
its last watermark: a range per time column of nine tables. Without an index on those columns
each cycle walked every account, invoice, payment, application, memo, hold change, order and
provisioning request ever written.

Worked: 12 accounts each with one change after the watermark, each of another kind (the
account row, an invoice posted, an invoice voided, a payment, an application, a reversal, a
credit memo activated, a debit memo cancelled, a hold change, an order placed, an order
activated, a provisioning request updated); then 20 and 3,000 accounts with one row of every
kind dated 30 days before it. The answer is the 12 accounts either way, and SQLite's
virtual-machine steps for it may not grow with the 150 times larger ledger. PostgreSQL plans
from statistics; the answer is checked there too.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from read_cost import steps
from sqlalchemy import Engine, insert

from billing_core.adapters.tables import (
    accounts,
    applications,
    credit_memos,
    debit_memos,
    hold_history,
    invoices,
    orders,
    payments,
    products,
    provisioning_requests,
)
from billing_core.service.accounts import changed_since

SINCE = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
OLD = SINCE - timedelta(days=30)
NEW = SINCE + timedelta(minutes=3)
KINDS = ("account", "posted", "voided", "payment", "applied", "reversed", "credit_memo",
         "debit_memo", "hold", "order", "activated", "provisioning")
RECENT = {kind: n for n, kind in enumerate(KINDS, start=1)}      # account id per kind


def _at(account_id: int, kind: str) -> datetime:
    """The time of the account's row of ``kind``: after the watermark for its recent kind."""
    return NEW if RECENT.get(kind) == account_id else OLD


def _build(engine: Engine, first: int, last: int) -> None:
    ids = range(first, last + 1)
    with engine.begin() as conn:
        if first == 1:
            conn.execute(insert(products).values(id=1, sku="SEAT", name="Seat", kind="recurring",
                                                 created_at=OLD))
        conn.execute(insert(accounts), [
            {"id": a, "ext_source": "sf", "ext_object": "Account", "ext_id": f"A{a}",
             "name": f"Account {a}", "currency": "USD", "country": "US", "created_at": OLD,
             "updated_at": _at(a, "account")} for a in ids])
        conn.execute(insert(invoices), [
            {"id": a, "account_id": a, "currency": "USD",
             "status": "void" if _at(a, "voided") is NEW else "posted",
             "period_start": date(2026, 2, 1), "period_end": date(2026, 3, 1),
             "issue_date": date(2026, 2, 1), "due_date": date(2026, 3, 3),
             "subtotal_minor": 1000, "tax_minor": 0, "total_minor": 1000, "created_at": OLD,
             "posted_at": _at(a, "posted"),
             "voided_at": NEW if _at(a, "voided") is NEW else None} for a in ids])
        conn.execute(insert(payments), [
            {"account_id": a, "currency": "USD", "amount_minor": 500,
             "received_on": date(2026, 2, 5), "reference": f"P{a}",
             "created_at": _at(a, "payment")} for a in ids])
        conn.execute(insert(applications), [
            {"account_id": a, "source_type": "payment", "source_id": a, "target_type": "invoice",
             "target_id": a, "amount_minor": 500, "applied_at": _at(a, "applied"),
             "reversed_at": NEW if _at(a, "reversed") is NEW else None} for a in ids])
        for table, kind in ((credit_memos, "credit_memo"), (debit_memos, "debit_memo")):
            conn.execute(insert(table), [
                {"account_id": a, "currency": "USD", "amount_minor": 200, "reason": "test",
                 "status": "active", "created_at": OLD, "activated_at":
                 _at(a, kind) if table is credit_memos else OLD,
                 "cancelled_at": NEW if table is debit_memos and _at(a, kind) is NEW else None}
                for a in ids])
        conn.execute(insert(hold_history), [
            {"account_id": a, "reason": "manual", "action": "placed", "actor": "finance",
             "at": _at(a, "hold"), "details": "{}"} for a in ids])
        conn.execute(insert(orders), [
            {"id": a, "account_id": a, "source_ref": f"o{a}", "status": "active",
             "order_date": date(2026, 2, 1), "created_at": _at(a, "order"),
             "activated_at": _at(a, "activated")} for a in ids])
        conn.execute(insert(provisioning_requests), [
            {"account_id": a, "order_id": a, "product_id": 1, "quantity": Decimal(1), "state": "done",
             "idempotency_key": f"k{a}", "created_at": OLD,
             "updated_at": _at(a, "provisioning")} for a in ids])


def _changed(conn) -> list[int]:
    return sorted(changed_since(conn, SINCE))


def test_what_changed_since_the_watermark_does_not_grow_with_the_ledger(
        sqlite_engine: Engine) -> None:
    _build(sqlite_engine, 1, 20)
    few, got_few = steps(sqlite_engine, _changed)
    _build(sqlite_engine, 21, 3000)
    many, got_many = steps(sqlite_engine, _changed)
    assert got_few == got_many == sorted(RECENT.values())
    # the other 2,980 accounts' rows of every kind (150 times as many) may not be walked
    assert many < few * 2, (few, many)


def test_every_kind_of_change_is_found_on_both_databases(engine: Engine) -> None:
    _build(engine, 1, 40)
    with engine.connect() as conn:
        assert _changed(conn) == sorted(RECENT.values())
        assert sorted(changed_since(conn, NEW + timedelta(seconds=1))) == []
        assert sorted(changed_since(conn, OLD)) == list(range(1, 41))
