"""Helpers for the receivables tests (imported by their conftest and tests): accounts and posted
invoices made straight in the schema, so these tests do not depend on the bill run."""
from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, insert, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import invoices
from billing_core.service.accounts import AccountIn, create_account

FIXED_NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def make_account(uow: UnitOfWork, ext_id: str = "ACC1", currency: str = "USD",
                 terms: int = 30, limit: str | None = None) -> int:
    return create_account(uow, AccountIn(name=f"Account {ext_id}", currency=currency,
                                         ext_id=ext_id, payment_terms_days=terms,
                                         credit_limit=limit, tax_exempt=True))


def post_invoice(uow: UnitOfWork, account_id: int, total_minor: int, *,
                 due: date = date(2026, 3, 31), issue: date = date(2026, 3, 1),
                 currency: str | None = None, status: str = "posted") -> int:
    """An invoice row as the bill run would post it (numbered, status posted)."""
    conn = uow.conn
    if currency is None:
        from billing_core.service.accounts import get_account
        currency = get_account(conn, account_id)["currency"]
    seq = conn.execute(select(func.count()).select_from(invoices)).scalar_one() + 1
    invoice_id = conn.execute(insert(invoices).values(
        account_id=account_id, currency=currency, series="INV", number=f"TINV-{seq:06d}",
        status=status, period_start=date(2000, 1, 1).replace(year=2000 + seq),
        period_end=date(2000, 2, 1).replace(year=2000 + seq), issue_date=issue, due_date=due,
        subtotal_minor=total_minor, tax_minor=0, total_minor=total_minor, applied_minor=0,
        created_at=uow.now(), posted_at=uow.now())).inserted_primary_key[0]
    uow.touch(account_id)
    return int(invoice_id)


SNAPSHOT_TABLES = ("invoices", "credit_memos", "debit_memos", "payments", "applications",
                   "credit_grants", "credit_draws", "number_sequences")


def snapshot(conn) -> dict[str, list[tuple]]:
    """Every row of the receivables tables: compare before/after to prove nothing was written.
    Plain driver SQL: the property tests call it at every step."""
    return {name: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {name} ORDER BY 1")]
            for name in SNAPSHOT_TABLES}
