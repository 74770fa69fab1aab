"""What voiding an invoice gives back, so that the next bill run bills it again, once.

Rules kept here (called by ``documents.void_invoice`` inside its savepoint):
- Only the account's latest live invoice can be voided: voiding an earlier one would leave a
  hole under a later period that was billed on top of it. The error names the later invoice.
- A negative-remainder credit memo issued by the invoice (origin ``invoice_overflow``) is
  cancelled with it; if any of it was applied, the void is refused (unapply first).
- One-time charges, usage events and quantity changes the invoice billed become unbilled, and
  its lines give up their claims (``invoice_lines.claims_charge``), so a new line may bill them.
- Each subscription the invoice charged gets ``billed_through`` recomputed from the live
  invoices that remain (the latest period end they billed, or none): the rule holds whatever
  mix of recurring, partial-period and catch-up lines the invoice had. A subscription the
  invoice credited after its end date (lines from the end date on) goes back to the latest
  end of those lines: how far it was billed before that credit.
- Credit drawn by the invoice is returned by ``documents.void_invoice`` itself.
"""
from __future__ import annotations

from sqlalchemy import RowMapping, func, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    credit_memos,
    invoice_lines,
    invoices,
    metered_events,
    one_time_charges,
    subscription_changes,
    subscriptions,
    usage_events,
)
from billing_core.domain.errors import InvalidState
from billing_core.domain.states import CANCELLABLE_CREDIT_MEMO, CreditMemoStatus, InvoiceStatus


def check_voidable(uow: UnitOfWork, invoice: RowMapping) -> None:
    conn = uow.conn
    later = conn.execute(select(invoices.c.number, invoices.c.id).where(
        invoices.c.account_id == invoice["account_id"], invoices.c.status != InvoiceStatus.VOID,
        invoices.c.period_start > invoice["period_start"]).order_by(invoices.c.period_start)
    ).first()
    if later is not None:
        raise InvalidState("invoice", invoice["number"] or invoice["id"],
                           f"is not the account's latest invoice: void {later[0] or later[1]} first")
    applied = conn.execute(select(credit_memos.c.number).where(
        credit_memos.c.origin_invoice_id == invoice["id"],
        credit_memos.c.status != CreditMemoStatus.CANCELLED,
        credit_memos.c.applied_minor > 0)).first()
    if applied is not None:
        raise InvalidState("invoice", invoice["number"] or invoice["id"],
                           f"its overflow credit memo {applied[0]} is applied: unapply it first")


def release_billed(uow: UnitOfWork, invoice: RowMapping) -> None:
    """Run after the invoice's status became ``void`` in the same transaction."""
    conn, invoice_id = uow.conn, invoice["id"]
    conn.execute(update(credit_memos).where(
        credit_memos.c.origin_invoice_id == invoice_id,
        credit_memos.c.status.in_(CANCELLABLE_CREDIT_MEMO)).values(
        status=CreditMemoStatus.CANCELLED, cancelled_at=uow.now()))
    for table in (one_time_charges, usage_events, metered_events, subscription_changes):
        conn.execute(update(table).where(table.c.invoice_id == invoice_id).values(invoice_id=None))
    conn.execute(update(invoice_lines).where(invoice_lines.c.invoice_id == invoice_id,
                                             invoice_lines.c.claims_charge)
                 .values(claims_charge=False))
    charged = select(invoice_lines.c.subscription_id).where(
        invoice_lines.c.invoice_id == invoice_id,
        invoice_lines.c.subscription_id.is_not(None)).distinct()
    live_end = (select(func.max(invoice_lines.c.period_end))
                .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
                .where(invoice_lines.c.subscription_id == subscriptions.c.id,
                       invoices.c.status != InvoiceStatus.VOID)
                .scalar_subquery())
    conn.execute(update(subscriptions).where(subscriptions.c.id.in_(charged))
                 .values(billed_through=live_end))
    # An end credit moved billed_through back to the end date: voiding it restores how far
    # the subscription was billed before it (its lines' end), not an earlier credit's range.
    for sub_id, end in conn.execute(
            select(invoice_lines.c.subscription_id, func.max(invoice_lines.c.period_end))
            .join(subscriptions, subscriptions.c.id == invoice_lines.c.subscription_id)
            .where(invoice_lines.c.invoice_id == invoice_id,
                   subscriptions.c.end_date.is_not(None),
                   invoice_lines.c.period_start >= subscriptions.c.end_date)
            .group_by(invoice_lines.c.subscription_id)).all():
        conn.execute(update(subscriptions).where(subscriptions.c.id == sub_id)
                     .values(billed_through=end))
