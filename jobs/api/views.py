"""From service answers (minor units, rows) to API models; cursors; per-item batches.

- Amounts leave as decimal strings in the document's currency (``from_minor``), never floats.
- A cursor is opaque to clients (base64 of the last id seen); a malformed one is a 422 naming
  ``cursor``. Pages are keyset pages (``id > last``), stable while documents are added.
- :func:`per_item` runs one callable per batch item in its own savepoint: an item completes or
  changes nothing, and a failing item answers with its error without stopping the others.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import LedgerError, ValidationError
from billing_core.domain.money import from_minor
from jobs.api.models import (
    ApplicationOut,
    BatchResult,
    CreditDrawOut,
    DocumentOut,
    DocumentPage,
    ErrorDetail,
    GrantOut,
    InvoiceLineOut,
    InvoiceOut,
    InvoiceTaxOut,
    ItemResult,
)

T = TypeVar("T")


def money(minor: int | None, currency: str) -> str | None:
    return None if minor is None else str(from_minor(int(minor), currency))


def application_out(row: Mapping[str, Any], currency: str) -> ApplicationOut:
    return ApplicationOut(id=row["id"], source_type=row["source_type"],
                          source_id=row["source_id"], target_type=row["target_type"],
                          target_id=row["target_id"],
                          amount=money(row["amount_minor"], currency) or "0",
                          applied_at=row["applied_at"])


def document_out(view: Mapping[str, Any]) -> DocumentOut:
    currency = str(view["currency"])
    total = view["total_minor"] if view["type"] == "invoice" else view["amount_minor"]
    apps = view.get("applications")
    fields = {k: view.get(k) for k in (
        "number", "reason", "origin", "reference", "method", "issue_date", "due_date",
        "received_on", "period_start", "period_end", "created_at", "activated_at",
        "cancelled_at", "posted_at", "voided_at")}
    return DocumentOut(
        id=view["id"], type=view["type"], account_id=view["account_id"], currency=currency,
        status=str(view.get("status") or _payment_status(view)),
        amount=money(total, currency) or "0",
        applied=money(view["applied_minor"], currency) or "0",
        balance=money(view["balance_minor"], currency) or "0",
        applications=None if apps is None else [application_out(a, currency) for a in apps],
        **fields)


def invoice_out(view: Mapping[str, Any]) -> InvoiceOut:
    """``billing_core.service.invoices.invoice_view`` as the API's invoice."""
    cur = str(view["currency"])
    base = document_out({**view, "type": "invoice",
                         "balance_minor": view["total_minor"] - view["applied_minor"]})
    lines = [InvoiceLineOut(
        line_no=ln["line_no"], kind=ln["kind"], description=ln["description"],
        product_id=ln["product_id"], subscription_id=ln["subscription_id"],
        quantity=_text(ln["quantity"]), unit_price=_text(ln["unit_price"]),
        period_start=ln["period_start"], period_end=ln["period_end"],
        amount=money(ln["amount_minor"], cur) or "0", tax_rate=_text(ln["tax_rate"]),
        tax=money(ln["tax_minor"], cur) or "0") for ln in view["lines"]]
    return InvoiceOut(
        **base.model_dump(), subtotal=money(view["subtotal_minor"], cur) or "0",
        tax=money(view["tax_minor"], cur) or "0", lines=lines,
        taxes=[InvoiceTaxOut(rate=_text(t["rate"]) or "0", base=money(t["base_minor"], cur) or "0",
                             tax=money(t["tax_minor"], cur) or "0") for t in view["taxes"]],
        credit_draws=[CreditDrawOut(grant_id=d["grant_id"],
                                    amount=money(d["amount_minor"], cur) or "0")
                      for d in view["draws"]])


def _text(value: Any) -> str | None:
    """A rate, quantity or price as plain decimal text (PostgreSQL's numeric scale dropped:
    0.0825, not 0.0825000000)."""
    if value is None:
        return None
    return f"{Decimal(value).normalize():f}"


def _payment_status(view: Mapping[str, Any]) -> str:
    applied, amount = int(view["applied_minor"]), int(view["amount_minor"])
    return "unapplied" if applied == 0 else "applied" if applied == amount else "partially_applied"


def grant_out(grant: Mapping[str, Any]) -> GrantOut:
    currency = str(grant["currency"])
    return GrantOut(id=grant["id"], account_id=grant["account_id"], currency=currency,
                    kind=grant["kind"], amount=money(grant["amount_minor"], currency) or "0",
                    remaining=money(grant["remaining_minor"], currency) or "0",
                    expires_on=grant.get("expires_on"), source=grant["source"],
                    reason=grant["reason"],
                    origin_credit_memo_id=grant.get("origin_credit_memo_id"),
                    created_at=grant.get("created_at"))


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    kind, _, number = text.partition(":")
    if kind != "id" or not number.isdigit() or len(number) > 18:
        raise ValidationError("cursor", cursor, "is not a cursor this API gave out")
    return int(number)


def page(views: Iterable[Mapping[str, Any]], cursor: str | None, limit: int) -> DocumentPage:
    """One keyset page of documents (``views`` in id order) after ``cursor``."""
    after = decode_cursor(cursor)
    items: list[DocumentOut] = []
    more = False
    for view in views:
        if int(view["id"]) <= after:
            continue
        if len(items) == limit:
            more = True
            break
        items.append(document_out(view))
    return DocumentPage(items=items,
                        next_cursor=encode_cursor(items[-1].id) if more and items else None)


def per_item(uow: UnitOfWork, items: Sequence[T],
             one: Callable[[T], Mapping[str, Any]]) -> BatchResult:
    results: list[ItemResult] = []
    for index, item in enumerate(items):
        try:
            with uow.savepoint():
                view = one(item)
            results.append(ItemResult(index=index, ok=True, result=document_out(view)))
        except LedgerError as exc:
            results.append(ItemResult(index=index, ok=False,
                                      error=ErrorDetail(**exc.as_dict())))  # type: ignore[arg-type]
    return batch(results)


def batch(results: list[ItemResult]) -> BatchResult:
    ok = sum(1 for r in results if r.ok)
    return BatchResult(results=results, succeeded=ok, failed=len(results) - ok)


def from_service_batch(rows: list[dict[str, Any]]) -> BatchResult:
    """The service layer's batch answer (``{"index", "ok", "result"|"error"}``) as a model."""
    return batch([ItemResult(index=r["index"], ok=r["ok"],
                             result=document_out(r["result"]) if r["ok"] else None,
                             error=None if r["ok"] else ErrorDetail(**r["error"]))
                  for r in rows])
