"""Billing documents for payment systems: credit memos, debit memos and invoices.

A thin layer over ``billing_core.service.memos`` / ``documents``: create, show, list
(filtered by account and status, keyset-paginated with a cursor) and the batch operations of
the payment-system API (``:activate``, ``:apply``, ``:unapply``, ``:cancel``, ``:void``), each
answering per item.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request, status

from billing_core.service import documents, invoices, memos
from jobs.api import documents as api_documents
from jobs.api.deps import Reader, Uow, Writer, router
from jobs.api.models import (
    MAX_ID,
    NAME_PATTERN,
    ApplyCreditMemos,
    BatchResult,
    CreateDebitMemo,
    CreateMemo,
    CreditMemoRefs,
    DebitMemoRefs,
    DocumentOut,
    DocumentPage,
    InvoiceOut,
    InvoiceRefs,
    UnapplyCreditMemos,
)
from jobs.api.views import (
    decode_cursor,
    document_out,
    from_service_batch,
    invoice_out,
    page,
    per_item,
)

routes = router("billing documents")

AccountFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this account.")]
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_\-]*$")]
Limit = Annotated[int, Query(ge=1, le=500)]
PathRef = Annotated[str, Path(min_length=1, max_length=40, pattern=NAME_PATTERN,
                              description="Ledger id or document number.")]
MemoStatus = Annotated[str | None, Query(pattern=r"^(draft|active|partially_applied|applied|"
                                               r"cancelled|partially_paid|paid)$")]


# --- credit memos -----------------------------------------------------------------------------

@routes.post("/billing/credit-memos", status_code=status.HTTP_201_CREATED)
def create_credit_memo(body: CreateMemo, uow: Uow, _: Writer) -> DocumentOut:
    """Create a credit memo (a draft, or active at once with ``activate``)."""
    memo_id = memos.create_credit_memo(uow, body.account_id, body.amount, body.reason,
                                       currency=body.currency, activate=body.activate)
    return document_out(memos.credit_memo_view(uow.conn, memo_id))


@routes.get("/billing/credit-memos")
def list_credit_memos(uow: Uow, _: Reader, account_id: AccountFilter = None,
                      status: MemoStatus = None, cursor: Cursor = None,
                      limit: Limit = 100) -> DocumentPage:
    return page(memos.list_credit_memos(uow.conn, account_id, status,
                                        after_id=decode_cursor(cursor), limit=limit + 1),
                cursor, limit)


@routes.get("/billing/credit-memos/{ref}")
def show_credit_memo(ref: PathRef, uow: Uow, _: Reader) -> DocumentOut:
    return document_out(memos.credit_memo_view(uow.conn, ref))


@routes.post("/billing/credit-memos:activate")
def activate_credit_memos(body: CreditMemoRefs, uow: Uow, _: Writer) -> BatchResult:
    """Activate draft credit memos (each gets its number). Answers per item."""
    return from_service_batch(memos.activate_credit_memos(uow, body.credit_memos))


@routes.post("/billing/credit-memos:apply")
def apply_credit_memos(body: ApplyCreditMemos, uow: Uow, _: Writer) -> BatchResult:
    """Apply credit memos to invoices or debit memos. Each item applies all of its
    applications or none of them; the answer is per item."""
    items = [item.model_dump() for item in body.items]
    return from_service_batch(memos.apply_credit_memos(uow, items))


@routes.post("/billing/credit-memos:unapply")
def unapply_credit_memos(body: UnapplyCreditMemos, uow: Uow, _: Writer) -> BatchResult:
    """Reverse credit memo applications (all of a memo's, or those to one target), or only
    ``amount`` of them, the newest first (a partly reversed application's remainder stays
    applied as a new application)."""
    items: list[dict[str, Any]] = [item.model_dump() for item in body.items]
    return from_service_batch(memos.unapply_credit_memos(uow, items))


@routes.post("/billing/credit-memos:cancel")
def cancel_credit_memos(body: CreditMemoRefs, uow: Uow, _: Writer) -> BatchResult:
    """Cancel credit memos with nothing applied. Answers per item."""
    return from_service_batch(memos.cancel_credit_memos(uow, body.credit_memos))


# --- debit memos ------------------------------------------------------------------------------

@routes.post("/billing/debit-memos", status_code=status.HTTP_201_CREATED)
def create_debit_memo(body: CreateDebitMemo, uow: Uow, _: Writer) -> DocumentOut:
    """Create a debit memo (a draft, or active and owed at once with ``activate``), issued on
    ``issue_date`` (today or earlier) or on the day it is activated."""
    memo_id = memos.create_debit_memo(uow, body.account_id, body.amount, body.reason,
                                      currency=body.currency, issue_date=body.issue_date)
    if body.activate:
        memos.activate_debit_memo(uow, memo_id)
    return document_out(memos.debit_memo_view(uow.conn, memo_id))


@routes.get("/billing/debit-memos")
def list_debit_memos(uow: Uow, _: Reader, account_id: AccountFilter = None,
                     status: MemoStatus = None, cursor: Cursor = None,
                     limit: Limit = 100) -> DocumentPage:
    return page(memos.list_debit_memos(uow.conn, account_id, status,
                                       after_id=decode_cursor(cursor), limit=limit + 1),
                cursor, limit)


@routes.get("/billing/debit-memos/{ref}")
def show_debit_memo(ref: PathRef, uow: Uow, _: Reader) -> DocumentOut:
    return document_out(memos.debit_memo_view(uow.conn, ref))


@routes.post("/billing/debit-memos:activate")
def activate_debit_memos(body: DebitMemoRefs, uow: Uow, _: Writer) -> BatchResult:
    return from_service_batch(memos.activate_debit_memos(uow, body.debit_memos))


@routes.post("/billing/debit-memos:cancel")
def cancel_debit_memos(body: DebitMemoRefs, uow: Uow, _: Writer) -> BatchResult:
    return from_service_batch(memos.cancel_debit_memos(uow, body.debit_memos))


# --- invoices ---------------------------------------------------------------------------------

InvoiceStatus = Annotated[str | None, Query(pattern=r"^(draft|posted|partially_paid|paid|void)$")]


@routes.get("/billing/invoices")
def list_invoices(uow: Uow, _: Reader, account_id: AccountFilter = None,
                  status: InvoiceStatus = None, cursor: Cursor = None,
                  limit: Limit = 100) -> DocumentPage:
    rows = invoices.list_invoices(uow.conn, account_id=account_id, status=status,
                                  after_id=decode_cursor(cursor), limit=limit + 1)
    return page(({**r, "type": "invoice", "balance_minor": r["total_minor"] - r["applied_minor"]}
                 for r in rows), cursor, limit)


@routes.get("/billing/invoices/{ref}", response_model=InvoiceOut,
            responses=api_documents.RENDERED_RESPONSES)
def show_invoice(ref: PathRef, uow: Uow, _: Reader, request: Request) -> Any:
    """An invoice with its lines, tax per rate with its base, the prepaid credits it drew and
    the applications settling it; with ``Accept: application/pdf`` or ``text/html`` the
    rendered invoice (docs/DOCUMENTS.md)."""
    fmt = api_documents.negotiate(request.headers.get("accept"))
    if fmt != "json":
        return api_documents.rendered(request, uow, "invoice", ref, fmt)
    return invoice_out(invoices.invoice_view(uow.conn, ref))


@routes.post("/billing/invoices:void")
def void_invoices(body: InvoiceRefs, uow: Uow, _: Writer) -> BatchResult:
    """Void invoices that have nothing applied. Answers per item."""
    return per_item(uow, body.invoices, lambda ref: documents.to_view(
        documents.void_invoice(uow, ref), "invoice"))
