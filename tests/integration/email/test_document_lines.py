"""The lines a CRM that keeps them gets (``crm_documents.document_lines``, the native Dynamics
365 invoice), on SQLite and PostgreSQL: an invoice's ledger lines with quantity x price when
that is their amount, else 1 x the amount (a proration, a credit draw); a memo one line for its
amount, negative for a credit memo; keys ``<document key>-<line no>``.

Figures: ``billed_ledger`` (email_helpers): INV-000001 of 2 seats at 10.00 USD, no tax; a
credit memo of 5.00 activated on it."""
from __future__ import annotations

from decimal import Decimal

from email_helpers import billed_ledger
from sqlalchemy import Engine

from billing_core.service import ledger_uow
from billing_core.service.crm_documents import _line, document_lines, document_views
from billing_core.service.memos import create_credit_memo


def test_invoice_and_memo_lines(engine: Engine) -> None:
    [account] = billed_ledger(engine, 1)
    with ledger_uow(engine) as uow:
        create_credit_memo(uow, account, "5.00", "Goodwill", activate=True)
        uow.commit()
    with engine.connect() as conn:
        views = document_views(conn, [account])
        lines = document_lines(conn, views)
    by_kind = {v.kind: v for v in views}
    invoice, memo = by_kind["invoice"], by_kind["credit_memo"]
    assert [(ln.key, ln.quantity, ln.unit_price, ln.tax) for ln in lines[invoice.key]] == [
        (f"{invoice.key}-1", Decimal(2), Decimal(10), Decimal(0))]
    assert [(ln.key, ln.description, ln.quantity, ln.unit_price)
            for ln in lines[memo.key]] == [
        (f"{memo.key}-1", f"Credit Memo {memo.number}", Decimal(1), Decimal("-5.00"))]
    assert sum(ln.quantity * ln.unit_price + ln.tax for ln in lines[invoice.key]) \
        == invoice.total


def test_a_line_whose_price_does_not_make_its_amount_is_one_at_the_amount() -> None:
    prorated = _line("invoice-1", 2, "Seats 15-31 Jan", Decimal(2), Decimal(10), 1097, 0, "USD")
    assert (prorated.quantity, prorated.unit_price) == (Decimal(1), Decimal("10.97"))
    draw = _line("invoice-1", 3, "Credit applied", None, None, -500, 0, "JPY")
    assert (draw.quantity, draw.unit_price) == (Decimal(1), Decimal(-500))
