"""What a customer document shows, as plain data: invoices, credit memos, debit memos and account
statements, read from the ledger for rendering (``billing_core.documents``).

Rules kept here
- Reads only; amounts stay integers of the document currency's minor units (``*_minor``), the
  renderer formats them. Dates are ``date``s. Nothing here knows templates, HTTP or a CRM.
- A document is named by its ledger id or number; unknown is ``NotFound`` naming it. A draft
  has no number yet (``number`` is None): it renders, marked as a draft.
- The buyer is what the ledger holds of the account: name, CRM account number, country and
  region (the ledger keeps no street address nor tax id of its accounts yet); ``tax_exempt``
  says whether it is billed without tax.
- An invoice's lines keep their kind (``recurring``, ``proration``, ``one_time``, ``usage``,
  ``credit_draw``), period, quantity, unit price, amount and tax; ``taxes`` one row per rate
  (rate, taxable base after credits, tax); ``credits`` the live applications settling it
  (credit memos and payments, by number or reference); ``balance_minor`` = total − applied.
- A statement covers ``[date_from, date_to]`` (both inclusive) of one account: its opening
  balance (what was owed before ``date_from``), every document and payment dated in the range
  with the running balance, and the closing balance. Owed = posted invoices (not void) + debit
  memos (active or later, by issue date) − credit memos (active or later, by activation date,
  UTC) − payments (by received date). Drafts, void invoices and cancelled memos count for
  nothing. Applications move money between documents, not in or out of the account, so they
  do not appear. Example: opening 0; invoice 100.00 on 1 March; payment 60.00 on 10 March;
  credit memo 15.00 on 12 March → closing 25.00.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from billing_core.adapters.tables import (
    accounts,
    credit_memos,
    debit_memos,
    invoice_lines,
    invoice_taxes,
    invoices,
    payments,
)
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.domain.states import CreditMemoStatus, DebitMemoStatus, InvoiceStatus
from billing_core.service.accounts import resolve_account
from billing_core.service.applications import live_applications
from billing_core.service.documents import find

#: The document kinds a template exists for.
KINDS = ("invoice", "credit_memo", "debit_memo", "statement")

_NOT_OWED_INVOICE = (InvoiceStatus.DRAFT, InvoiceStatus.VOID)
_NOT_OWED_MEMO = ("draft", CreditMemoStatus.CANCELLED, DebitMemoStatus.CANCELLED)


def buyer(conn: Connection, account_id: int) -> dict[str, Any]:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
    if row is None:
        raise NotFound("account", account_id)
    return {"id": row["id"], "name": row["name"], "number": row["number"],
            "country": row["country"], "region": row["region"], "currency": row["currency"],
            "tax_exempt": bool(row["tax_exempt"]), "payment_terms_days": row["payment_terms_days"]}


def _credits(conn: Connection, target_type: str, target_id: int) -> list[dict[str, Any]]:
    """The live applications settling a document, each with its source's number/reference."""
    out = []
    for app in live_applications(conn, target_type=target_type, target_id=target_id):
        table = credit_memos if app["source_type"] == "credit_memo" else payments
        label_col = table.c.number if table is credit_memos else table.c.reference
        label = conn.execute(select(label_col).where(table.c.id == app["source_id"])).scalar()
        out.append({"source_type": app["source_type"], "source": label or str(app["source_id"]),
                    "amount_minor": int(app["amount_minor"]),
                    "applied_on": app["applied_at"].date()})
    return out


def invoice_document(conn: Connection, ref: int | str, *,
                     tax_inclusive: bool = False) -> dict[str, Any]:
    """An invoice as a document (``tax_inclusive``: its prices included tax, [billing])."""
    inv = find(conn, "invoice", ref, field="invoice")
    lines = [{"line_no": r["line_no"], "kind": r["kind"], "description": r["description"],
              "quantity": r["quantity"], "unit_price": r["unit_price"],
              "period_start": r["period_start"], "period_end": r["period_end"],
              "amount_minor": int(r["amount_minor"]), "tax_rate": r["tax_rate"],
              "tax_minor": int(r["tax_minor"])}
             for r in conn.execute(select(invoice_lines).where(
                 invoice_lines.c.invoice_id == inv["id"]).order_by(invoice_lines.c.line_no))
             .mappings()]
    taxes = [{"rate": r.tax_rate, "base_minor": int(r.base_minor), "tax_minor": int(r.tax_minor)}
             for r in conn.execute(select(invoice_taxes.c.tax_rate, invoice_taxes.c.base_minor,
                                          invoice_taxes.c.tax_minor)
                                   .where(invoice_taxes.c.invoice_id == inv["id"])
                                   .order_by(invoice_taxes.c.tax_rate))]
    return {
        "kind": "invoice", "id": inv["id"], "number": inv["number"], "status": inv["status"],
        "draft": inv["status"] == InvoiceStatus.DRAFT, "currency": inv["currency"],
        "issue_date": inv["issue_date"], "due_date": inv["due_date"],
        "period_start": inv["period_start"], "period_end": inv["period_end"],
        "payment_terms_days": (inv["due_date"] - inv["issue_date"]).days,
        "buyer": buyer(conn, inv["account_id"]), "lines": lines, "taxes": taxes,
        "tax_inclusive": tax_inclusive,
        "subtotal_minor": int(inv["subtotal_minor"]), "tax_minor": int(inv["tax_minor"]),
        "total_minor": int(inv["total_minor"]), "applied_minor": int(inv["applied_minor"]),
        "balance_minor": int(inv["total_minor"]) - int(inv["applied_minor"]),
        "credits": _credits(conn, "invoice", int(inv["id"])),
    }


def credit_memo_document(conn: Connection, ref: int | str) -> dict[str, Any]:
    """A credit memo as a document: its amount, reason, origin and where it was applied."""
    memo = find(conn, "credit_memo", ref, field="credit_memo")
    origin_invoice = None
    if memo["origin_invoice_id"] is not None:
        origin_invoice = conn.execute(select(invoices.c.number).where(
            invoices.c.id == memo["origin_invoice_id"])).scalar()
    applied_to = []
    for app in live_applications(conn, source_type="credit_memo", source_id=memo["id"]):
        table = invoices if app["target_type"] == "invoice" else debit_memos
        number = conn.execute(select(table.c.number).where(table.c.id == app["target_id"])).scalar()
        applied_to.append({"target_type": app["target_type"], "target": number,
                           "amount_minor": int(app["amount_minor"]),
                           "applied_on": app["applied_at"].date()})
    issued = memo["activated_at"].date() if memo["activated_at"] else memo["created_at"].date()
    return {
        "kind": "credit_memo", "id": memo["id"], "number": memo["number"],
        "status": memo["status"], "draft": memo["status"] == CreditMemoStatus.DRAFT,
        "currency": memo["currency"], "issue_date": issued, "reason": memo["reason"],
        "origin": memo["origin"], "origin_invoice": origin_invoice,
        "buyer": buyer(conn, memo["account_id"]),
        "amount_minor": int(memo["amount_minor"]), "applied_minor": int(memo["applied_minor"]),
        "balance_minor": int(memo["amount_minor"]) - int(memo["applied_minor"]),
        "applied_to": applied_to,
    }


def debit_memo_document(conn: Connection, ref: int | str) -> dict[str, Any]:
    """A debit memo as a document: amount, reason, issue and due dates, what settled it."""
    memo = find(conn, "debit_memo", ref, field="debit_memo")
    issued = memo["issue_date"] or memo["created_at"].date()
    due = memo["due_date"]
    return {
        "kind": "debit_memo", "id": memo["id"], "number": memo["number"],
        "status": memo["status"], "draft": memo["status"] == DebitMemoStatus.DRAFT,
        "currency": memo["currency"], "issue_date": issued, "due_date": due,
        "payment_terms_days": (due - issued).days if due else None, "reason": memo["reason"],
        "buyer": buyer(conn, memo["account_id"]),
        "amount_minor": int(memo["amount_minor"]), "applied_minor": int(memo["applied_minor"]),
        "balance_minor": int(memo["amount_minor"]) - int(memo["applied_minor"]),
        "credits": _credits(conn, "debit_memo", int(memo["id"])),
    }


def _movements(conn: Connection, account_id: int, date_to: date) -> list[dict[str, Any]]:
    """Every owed or paid movement of the account dated up to ``date_to``: date, kind,
    number, description, period (invoices), due date, signed amount (owed +, paid/credited -)."""
    out: list[dict[str, Any]] = []
    for r in conn.execute(select(invoices).where(
            invoices.c.account_id == account_id, invoices.c.status.not_in(_NOT_OWED_INVOICE),
            invoices.c.issue_date <= date_to)).mappings():
        out.append({"date": r["issue_date"], "kind": "invoice", "number": r["number"],
                    "description": "", "period_start": r["period_start"],
                    "period_end": r["period_end"], "due_date": r["due_date"],
                    "amount_minor": int(r["total_minor"])})
    for r in conn.execute(select(debit_memos).where(
            debit_memos.c.account_id == account_id, debit_memos.c.status.not_in(_NOT_OWED_MEMO),
            debit_memos.c.issue_date <= date_to)).mappings():
        out.append({"date": r["issue_date"], "kind": "debit_memo", "number": r["number"],
                    "description": r["reason"], "period_start": None, "period_end": None,
                    "due_date": r["due_date"], "amount_minor": int(r["amount_minor"])})
    for r in conn.execute(select(credit_memos).where(
            credit_memos.c.account_id == account_id,
            credit_memos.c.status.not_in(_NOT_OWED_MEMO),
            credit_memos.c.activated_at.is_not(None))).mappings():
        on = r["activated_at"].date()
        if on <= date_to:
            out.append({"date": on, "kind": "credit_memo", "number": r["number"],
                        "description": r["reason"], "period_start": None, "period_end": None,
                        "due_date": None, "amount_minor": -int(r["amount_minor"])})
    for r in conn.execute(select(payments).where(
            payments.c.account_id == account_id, payments.c.received_on <= date_to)).mappings():
        out.append({"date": r["received_on"], "kind": "payment", "number": r["reference"],
                    "description": r["method"] or "", "period_start": None, "period_end": None,
                    "due_date": None, "amount_minor": -int(r["amount_minor"])})
    order = {"invoice": 0, "debit_memo": 1, "credit_memo": 2, "payment": 3}
    out.sort(key=lambda m: (m["date"], order[m["kind"]], str(m["number"])))
    return out


def statement_document(conn: Connection, account: int | str, date_from: date,
                       date_to: date) -> dict[str, Any]:
    """The account's statement for ``[date_from, date_to]`` (see the module's rules)."""
    if date_to < date_from:
        raise ValidationError("--to", date_to.isoformat(),
                              f"is before --from {date_from.isoformat()}")
    acc = resolve_account(conn, account)
    moves = _movements(conn, int(acc["id"]), date_to)
    opening = sum(m["amount_minor"] for m in moves if m["date"] < date_from)
    running = opening
    items = []
    for m in moves:
        if m["date"] < date_from:
            continue
        running += m["amount_minor"]
        items.append(m | {"debit_minor": max(m["amount_minor"], 0),
                          "credit_minor": max(-m["amount_minor"], 0), "balance_minor": running})
    return {
        "kind": "statement", "id": int(acc["id"]),
        "number": f"ST-{acc['id']}-{date_from:%Y%m%d}-{date_to:%Y%m%d}", "draft": False,
        "status": None,
        "currency": acc["currency"], "issue_date": date_to, "date_from": date_from,
        "date_to": date_to, "buyer": buyer(conn, int(acc["id"])),
        "opening_balance_minor": opening, "entries": items, "closing_balance_minor": running,
        "debits_minor": sum(i["debit_minor"] for i in items),
        "credits_minor": sum(i["credit_minor"] for i in items),
    }
