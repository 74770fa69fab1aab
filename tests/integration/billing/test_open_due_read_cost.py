"""What is past due costs what is open, not every document ever billed (migration 0028).

Credit control's hourly re-evaluation (``open_debts(due_before=...)``), the outbox refresh's
first run of a day (``accounts_with_overdue``) and the dunning run (``owed_reminders``) ask
which documents are open and past due. Without an index to use, each walked every invoice
and debit memo ever issued: a cost that grew with each month billed, while what is open
stays about a month's worth.

Worked: accounts 1-5 each owe an invoice due 1 March, account 6 a debit memo due 1 March; on
10 March those are past due. Then 20 and 3,000 accounts, each with six paid invoices (September
to February) and a March invoice not due until 31 March. The answers are the same six
documents either way, and SQLite's virtual-machine steps may not grow with the 150 times
larger ledger. PostgreSQL plans from statistics; the answers are checked there too.
"""
from __future__ import annotations

from datetime import UTC, date, datetime

from read_cost import steps
from sqlalchemy import Engine, insert

from billing_core.adapters.tables import accounts, debit_memos, invoices
from billing_core.service.dunning import owed_reminders
from billing_core.service.receivables import accounts_with_overdue, open_debts

AT = datetime(2026, 1, 1, tzinfo=UTC)
TODAY = date(2026, 3, 10)
LATE = range(1, 6)          # accounts owing an invoice due 1 March
MEMO = 6                    # the account owing a debit memo due 1 March
MONTHS = [date(2025, m, 1) for m in range(9, 13)] + [date(2026, m, 1) for m in (1, 2)]


def _invoice(account: int, period: date, status: str, due: date, paid: bool) -> dict:
    end = date(period.year + period.month // 12, period.month % 12 + 1, 1)
    return {"account_id": account, "currency": "USD", "status": status,
            "period_start": period, "period_end": end, "issue_date": period, "due_date": due,
            "subtotal_minor": 1000, "tax_minor": 0, "total_minor": 1000,
            "applied_minor": 1000 if paid else 0, "number": f"INV-{account}-{period}",
            "created_at": AT, "posted_at": AT}


def _build(engine: Engine, first: int, last: int) -> None:
    ids = range(first, last + 1)
    with engine.begin() as conn:
        conn.execute(insert(accounts), [
            {"id": a, "ext_source": "sf", "ext_object": "Account", "ext_id": f"A{a}",
             "name": f"Account {a}", "currency": "USD", "country": "US", "created_at": AT,
             "updated_at": AT} for a in ids])
        rows = [_invoice(a, m, "paid", date(m.year, m.month, 28), True)
                for a in ids for m in MONTHS]
        rows += [_invoice(a, date(2026, 3, 1), "posted",
                          date(2026, 3, 1) if a in LATE else date(2026, 3, 31), False)
                 for a in ids]
        conn.execute(insert(invoices), rows)
        if first <= MEMO <= last:
            conn.execute(insert(debit_memos).values(
                account_id=MEMO, currency="USD", amount_minor=500, reason="late fee",
                status="active", number="DM-1", issue_date=date(2026, 2, 20),
                due_date=date(2026, 3, 1), created_at=AT, activated_at=AT))


def _past_due(conn) -> tuple[list[tuple[str, int]], list[int], list[tuple[str, int]]]:
    debts = sorted((d["type"], int(d["account_id"]))
                   for d in open_debts(conn, due_before=TODAY))
    reminders = sorted((r["doc_type"], int(r["account_id"]))
                       for r in owed_reminders(conn, TODAY, (3,), date(2025, 1, 1)))
    return debts, sorted(accounts_with_overdue(conn, TODAY)), reminders


EXPECTED = ([("debit_memo", MEMO), *(("invoice", a) for a in LATE)], [*LATE, MEMO],
            [("debit_memo", MEMO), *(("invoice", a) for a in LATE)])


def test_what_is_past_due_does_not_grow_with_the_paid_history(sqlite_engine: Engine) -> None:
    _build(sqlite_engine, 1, 20)
    few, got_few = steps(sqlite_engine, _past_due)
    _build(sqlite_engine, 21, 3000)
    many, got_many = steps(sqlite_engine, _past_due)
    assert got_few == got_many == EXPECTED
    # the other 2,980 accounts' 20,860 invoices (paid, or not due yet) may not be walked
    assert many < few * 2, (few, many)


def test_what_is_past_due_is_the_same_on_both_databases(engine: Engine) -> None:
    _build(engine, 1, 40)
    with engine.connect() as conn:
        assert _past_due(conn) == EXPECTED
        assert open_debts(conn, due_before=date(2026, 3, 1)) == []
        assert sorted(accounts_with_overdue(conn, date(2026, 4, 1))) == list(range(1, 41))
