"""Read-only views of an account's issued documents, for the CRM push (``sync.outbox``).

Rules kept here:
- Issued documents only: invoices with a number (posted, partially paid, paid or void) and credit
  and debit memos with a number (active or cancelled). Drafts are never shown outside billing.
- Amounts are in the document's currency (Decimal, from minor units): ``total`` is what the
  document is for; ``balance`` what remains open (an invoice's or debit memo's amount due, a
  credit memo's credit not yet applied); zero for a void invoice or a cancelled memo.
- ``status``: an invoice's ledger status (``posted``, ``partially_paid``, ``paid``, ``void``);
  a memo's ``cancelled``, else ``open`` while a balance remains, else ``applied`` (credit memo)
  or ``paid`` (debit memo).
- ``key`` is ``<kind>-<ledger id>``: stable for the document's life, the CRM record's external
  id (the number is a display value).
- Reads are batched: three queries per chunk of accounts; nothing is written.
- Lines (:func:`document_lines`, for a CRM that keeps them: the native Dynamics 365 ``invoice``
  with its ``invoicedetail`` rows): an invoice's ledger lines in order; a memo one line for its
  amount (a credit memo's negative). A line whose quantity times unit price is exactly its
  amount keeps them; any other (a proration, a credit draw, a tiered usage line) is quantity 1
  at its amount, so the CRM's sum of lines is the document's total to the cent. ``tax`` is the
  line's tax; ``key`` is ``<document key>-<line no>``, the CRM line's external id.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import Connection, select

from billing_core.adapters.bulk import id_in
from billing_core.adapters.tables import credit_memos, debit_memos, invoice_lines, invoices
from billing_core.domain.money import from_minor, to_minor

TYPES = {"invoice": "Invoice", "credit_memo": "Credit Memo", "debit_memo": "Debit Memo"}


@dataclass(frozen=True, slots=True)
class DocumentView:
    kind: str                     # invoice | credit_memo | debit_memo
    doc_id: int
    account_id: int
    number: str
    issue_date: date | None
    due_date: date | None
    currency: str
    total: Decimal
    balance: Decimal
    status: str

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.doc_id}"

    @property
    def type_label(self) -> str:
        return TYPES[self.kind]


def _memo_status(kind: str, status: str, balance_minor: int) -> str:
    if status == "cancelled":
        return "cancelled"
    if balance_minor > 0:
        return "open"
    return "applied" if kind == "credit_memo" else "paid"


def document_views(conn: Connection, account_ids: Sequence[int]) -> list[DocumentView]:
    """The issued documents of ``account_ids``, by account, kind and id."""
    if not account_ids:
        return []
    ids = list(account_ids)
    out: list[DocumentView] = []
    inv = invoices.c
    for r in conn.execute(select(
            inv.id, inv.account_id, inv.number, inv.issue_date, inv.due_date, inv.currency,
            inv.total_minor, inv.applied_minor, inv.status).where(
            id_in(conn, inv.account_id, ids), inv.number.is_not(None))):
        open_minor = 0 if r.status == "void" else int(r.total_minor) - int(r.applied_minor)
        out.append(DocumentView("invoice", int(r.id), int(r.account_id), r.number,
                                r.issue_date, r.due_date, r.currency,
                                from_minor(int(r.total_minor), r.currency),
                                from_minor(open_minor, r.currency), r.status))
    for kind, table in (("credit_memo", credit_memos), ("debit_memo", debit_memos)):
        c = table.c
        dates = (c.issue_date, c.due_date) if kind == "debit_memo" else ()
        for r in conn.execute(select(
                c.id, c.account_id, c.number, c.currency, c.amount_minor, c.applied_minor,
                c.status, c.activated_at, *dates).where(
                id_in(conn, c.account_id, ids), c.number.is_not(None))):
            open_minor = 0 if r.status == "cancelled" \
                else int(r.amount_minor) - int(r.applied_minor)
            activated = r.activated_at.date() if r.activated_at is not None else None
            issue = (r.issue_date or activated) if kind == "debit_memo" else activated
            due = r.due_date if kind == "debit_memo" else None
            out.append(DocumentView(kind, int(r.id), int(r.account_id), r.number, issue, due,
                                    r.currency, from_minor(int(r.amount_minor), r.currency),
                                    from_minor(open_minor, r.currency),
                                    _memo_status(kind, r.status, open_minor)))
    out.sort(key=lambda d: (d.account_id, d.kind, d.doc_id))
    return out


@dataclass(frozen=True, slots=True)
class LineView:
    key: str                      # <document key>-<line no>
    line_no: int
    description: str
    quantity: Decimal
    unit_price: Decimal
    tax: Decimal


def _line(doc_key: str, no: int, description: str, quantity: object, unit_price: object,
          amount_minor: int, tax_minor: int, currency: str) -> LineView:
    amount = from_minor(amount_minor, currency)
    if isinstance(quantity, Decimal) and isinstance(unit_price, Decimal) \
            and quantity * unit_price == amount:
        qty, price = quantity, unit_price
    else:
        qty, price = Decimal(1), amount
    return LineView(f"{doc_key}-{no}", no, description, qty, price,
                    from_minor(tax_minor, currency))


def document_lines(conn: Connection, views: Sequence[DocumentView]) -> dict[str, list[LineView]]:
    """The lines of each of ``views`` by document key (module rules)."""
    out: dict[str, list[LineView]] = {v.key: [] for v in views}
    views_by_key = {v.key: v for v in views}
    by_invoice = {v.doc_id: v for v in views if v.kind == "invoice"}
    if by_invoice:
        raw: dict[str, list[tuple[int, str, object, object, int, int]]] = {
            v.key: [] for v in by_invoice.values()}
        c = invoice_lines.c
        for r in conn.execute(select(
                c.invoice_id, c.line_no, c.description, c.quantity, c.unit_price,
                c.amount_minor, c.tax_minor).where(
                id_in(conn, c.invoice_id, sorted(by_invoice))).order_by(c.invoice_id,
                                                                        c.line_no)):
            view = by_invoice[int(r.invoice_id)]
            raw[view.key].append((int(r.line_no), r.description, r.quantity, r.unit_price,
                                  int(r.amount_minor), int(r.tax_minor)))
        for key, rows in raw.items():
            view = views_by_key[key]
            # tax-inclusive prices: the amounts hold the tax, so the CRM's base is without it
            inclusive = sum(a for *_, a, _ in rows) != to_minor(view.total, view.currency) \
                - sum(t for *_, t in rows)
            out[key] = [_line(key, no, text, None if inclusive else qty,
                              None if inclusive else price, amount - tax if inclusive
                              else amount, tax, view.currency)
                        for no, text, qty, price, amount, tax in rows]
    for view in views:
        if view.kind != "invoice":
            minor = to_minor(view.total, view.currency)
            out[view.key].append(_line(view.key, 1, f"{view.type_label} {view.number}", None,
                                       None, -minor if view.kind == "credit_memo" else minor,
                                       0, view.currency))
    return out
