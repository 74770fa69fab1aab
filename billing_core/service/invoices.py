"""Invoices: reading them, and posting drafts.

Rules kept here
- An invoice is found by ledger id or number (``INV-000042``); unknown is ``NotFound``.
- Posting a draft assigns the next number of its series from the gapless sequence in the same
  transaction, sets ``posted_at`` and touches the account (credit control re-evaluates).
  Only a draft can be posted. The later states (partially_paid, paid, void) are receivables'.
- The view of an invoice carries its lines, its tax per rate (``taxes``: rate, taxable base
  after credits, tax; in minor units and as decimals), its prepaid credit draws, the live
  applications settling it (credit memos, payments), its totals in minor units and as decimal
  text in its currency, and its open balance (total - applied).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    credit_draws,
    invoice_lines,
    invoice_taxes,
    invoices,
)
from billing_core.domain.errors import InvalidState, NotFound
from billing_core.domain.ids import as_id
from billing_core.domain.money import from_minor
from billing_core.domain.states import InvoiceStatus
from billing_core.service import audit
from billing_core.service.applications import live_applications
from billing_core.service.numbering import take_number


def find_invoice(conn: Connection, ref: int | str) -> RowMapping:
    text = str(ref).strip()
    cond = invoices.c.number == text
    invoice_id = as_id(text)
    if invoice_id is not None:
        cond = (invoices.c.id == invoice_id) | cond
    row = conn.execute(select(invoices).where(cond).order_by(invoices.c.id)).mappings().first()
    if row is None:
        raise NotFound("invoice", ref)
    return row


def list_invoices(conn: Connection, *, account_id: int | None = None, status: str | None = None,
                  limit: int = 500, after_id: int = 0) -> list[dict[str, Any]]:
    query = (select(invoices, accounts.c.name.label("account_name"))
             .join(accounts, accounts.c.id == invoices.c.account_id)
             .where(invoices.c.id > after_id).order_by(invoices.c.id).limit(limit))
    if account_id is not None:
        query = query.where(invoices.c.account_id == account_id)
    if status is not None:
        query = query.where(invoices.c.status == status)
    return [dict(r) for r in conn.execute(query).mappings()]


def invoice_view(conn: Connection, ref: int | str) -> dict[str, Any]:
    """The invoice with its lines, tax per rate and credit draws, amounts also as decimals."""
    inv = dict(find_invoice(conn, ref))
    cur = inv["currency"]
    inv["account_name"] = conn.execute(select(accounts.c.name).where(
        accounts.c.id == inv["account_id"])).scalar()
    inv["lines"] = [dict(r) | {"amount": from_minor(r["amount_minor"], cur),
                               "tax": from_minor(r["tax_minor"], cur)}
                    for r in conn.execute(select(invoice_lines).where(
                        invoice_lines.c.invoice_id == inv["id"])
                        .order_by(invoice_lines.c.line_no)).mappings()]
    inv["taxes"] = [{"rate": r.tax_rate, "base_minor": r.base_minor, "tax_minor": r.tax_minor,
                     "base": from_minor(r.base_minor, cur), "tax": from_minor(r.tax_minor, cur)}
                    for r in conn.execute(select(
                        invoice_taxes.c.tax_rate, invoice_taxes.c.base_minor,
                        invoice_taxes.c.tax_minor).where(invoice_taxes.c.invoice_id == inv["id"])
                        .order_by(invoice_taxes.c.id))]
    inv["draws"] = [dict(r) | {"amount": from_minor(r["amount_minor"], cur)}
                    for r in conn.execute(select(credit_draws).where(
                        credit_draws.c.invoice_id == inv["id"])
                        .order_by(credit_draws.c.id)).mappings()]
    inv["applications"] = [dict(r) for r in live_applications(
        conn, target_type="invoice", target_id=inv["id"])]
    for key in ("subtotal", "tax", "total", "applied"):
        inv[key] = from_minor(inv[f"{key}_minor"], cur)
    inv["balance"] = from_minor(inv["total_minor"] - inv["applied_minor"], cur)
    return inv


def post_invoice(uow: UnitOfWork, ref: int | str) -> str:
    """Post a draft: take its number, mark it posted; returns the number."""
    inv = find_invoice(uow.conn, ref)
    if inv["status"] != InvoiceStatus.DRAFT:
        raise InvalidState("invoice", ref, f"is {inv['status']}, only a draft can be posted")
    number = take_number(uow.conn, inv["series"])
    done = uow.conn.execute(update(invoices).where(
        invoices.c.id == inv["id"], invoices.c.status == InvoiceStatus.DRAFT).values(
        status=InvoiceStatus.POSTED, number=number, posted_at=uow.now())).rowcount
    if done != 1:
        raise InvalidState("invoice", ref, "changed while posting it: try again")
    uow.touch(int(inv["account_id"]))
    audit.record(uow, "posted", "invoice", inv["id"], entity_ref=number,
                 account_id=int(inv["account_id"]),
                 before={"status": inv["status"], "number": inv["number"]},
                 after={"status": InvoiceStatus.POSTED.value, "number": number})
    return number
