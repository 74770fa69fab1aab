"""Payments and credits for payment systems: record and apply payments; grant credits and
convert them to a credit memo and back. A thin layer over ``service.payments`` / ``credits``."""
from __future__ import annotations

from typing import Annotated

from fastapi import Query, status

from billing_core.domain.errors import ValidationError
from billing_core.service import credits, payments
from billing_core.service.accounts import get_account
from jobs.api.deps import Reader, Uow, Writer, router
from jobs.api.models import (
    MAX_ID,
    ApplyPayments,
    BatchResult,
    ConvertCredits,
    ConvertResult,
    CreditPool,
    DocumentOut,
    DocumentPage,
    GrantCredits,
    GrantOut,
    PaymentApplyItem,
    RecordPayment,
)
from jobs.api.routes_billing import AccountFilter, Cursor, Limit, PathRef
from jobs.api.views import decode_cursor, document_out, grant_out, money, page, per_item

routes = router("payments and credits")


@routes.post("/billing/payments", status_code=status.HTTP_201_CREATED)
def record_payment(body: RecordPayment, uow: Uow, _: Writer) -> DocumentOut:
    """Record a payment (its reference is unique per account); with ``auto_apply`` it settles
    the oldest open documents at once. What is not applied stays as the account's credit."""
    payment_id = payments.record_payment(
        uow, body.account_id, body.amount, reference=body.reference,
        received_on=body.received_on, currency=body.currency, method=body.method,
        auto_apply=body.auto_apply)
    return document_out(payments.payment_view(uow.conn, payment_id))


@routes.get("/billing/payments")
def list_payments(uow: Uow, _: Reader, account_id: AccountFilter = None,
                  cursor: Cursor = None, limit: Limit = 100) -> DocumentPage:
    return page(payments.list_payments(uow.conn, account_id, after_id=decode_cursor(cursor),
                                       limit=limit + 1), cursor, limit)


@routes.get("/billing/payments/{ref}")
def show_payment(ref: PathRef, uow: Uow, _: Reader) -> DocumentOut:
    return document_out(payments.payment_view(uow.conn, ref))


@routes.post("/billing/payments:apply")
def apply_payments(body: ApplyPayments, uow: Uow, _: Writer) -> BatchResult:
    """Apply payments to named documents, or oldest-first without ``applications``."""
    def one(item: PaymentApplyItem) -> dict[str, object]:
        targets = None if item.applications is None else [
            a.model_dump() for a in item.applications]
        return payments.apply_payment(uow, item.payment, targets)

    return per_item(uow, body.items, one)


@routes.post("/billing/credits:grant", status_code=status.HTTP_201_CREATED)
def grant_credits(body: GrantCredits, uow: Uow, _: Writer) -> GrantOut:
    """Add prepaid or one-time credit to the account's pool."""
    grant_id = credits.grant_credits(uow, body.account_id, body.amount, kind=body.kind,
                                     expires_on=body.expires_on, source=body.source,
                                     reason=body.reason)
    return grant_out(credits.get_grant(uow.conn, grant_id))


@routes.post("/billing/credits:convert")
def convert_credits(body: ConvertCredits, uow: Uow, _: Writer) -> ConvertResult:
    """``grant_id``: turn (part of) a grant into an active credit memo. ``credit_memo``: move
    (part of) a memo's unapplied balance back into the pool as a new grant."""
    if (body.grant_id is None) == (body.credit_memo is None):
        raise ValidationError("grant_id", body.grant_id,
                              "give exactly one of grant_id (to a memo) or credit_memo "
                              "(back to credits)")
    if body.grant_id is not None:
        memo = credits.convert_grant_to_memo(uow, body.grant_id, body.amount)
        return ConvertResult(credit_memo=document_out(memo))
    grant = credits.convert_memo_to_credits(uow, body.credit_memo, body.amount,
                                            reason=body.reason)
    return ConvertResult(grant=grant_out(grant))


@routes.get("/billing/credits")
def credit_pool(uow: Uow, _: Reader,
                account_id: Annotated[int, Query(ge=1, le=MAX_ID)]) -> CreditPool:
    """The account's credit pool: usable balance and every grant."""
    account = get_account(uow.conn, account_id)
    today = uow.now().date()
    return CreditPool(account_id=account_id, currency=account["currency"],
                      balance=money(credits.pool_balance_minor(uow.conn, account_id, today),
                                    account["currency"]) or "0",
                      grants=[grant_out(g) for g in credits.list_grants(
                          uow.conn, account_id, on_date=today)])
