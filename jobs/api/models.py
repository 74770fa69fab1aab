"""Request and response models of the HTTP API (pydantic), with the examples the OpenAPI
document shows.

Rules kept here
- Money is a decimal *string* (``"125.00"``) beside its ISO 4217 ``currency``, never a float;
  the service layer checks the decimals against the currency (USD 2, JPY 0, BHD 3).
- Every string has a length bound and refuses NUL characters; every id is a positive 64-bit
  integer: what the schema admits, both databases store.
- An id or a count (days, months) is a JSON integer and a flag a JSON boolean
  (:data:`Int`, :data:`Bool`, :data:`DocId`): pydantic's lax mode would read ``true`` as the
  id 1 and ``"yes"`` as true. Dates stay lax (JSON has no date: they come as strings).
- Batch requests take 1..100 items and answer one result per item, in order.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

# The API's version (the OpenAPI document's and ``/status``'s).
API_VERSION = "1.0.0"
MAX_ID = 2**63 - 1
MAX_BATCH = 100

Amount = Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,4})?$", examples=["125.00"],
                              description="A decimal amount as a string, e.g. \"125.00\".")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["USD"],
                                description="ISO 4217 code; must be the account's currency.")]
# A ledger id is at most 18 digits (it must fit a 64-bit column on both databases); anything
# else names a document by number or reference (at least one non-digit), or a typed target.
NAME_PATTERN = r"^([0-9]{1,18}|[A-Za-z0-9_.\-]*[A-Za-z_.\-][A-Za-z0-9_.\-]*)$"
REF_PATTERN = (r"^([0-9]{1,18}|(invoice|debit_memo):[0-9]{1,18}"
               r"|[A-Za-z0-9_.\-]*[A-Za-z_.\-][A-Za-z0-9_.\-]*)$")
Ref = Annotated[str, Field(min_length=1, max_length=40, pattern=REF_PATTERN,
                           examples=["CM-000001"],
                           description="A ledger id (\"42\") or a document number.")]
NO_NUL = r"^[^\x00]*$"
NoNul = Annotated[str, Field(pattern=NO_NUL)]
# A JSON integer (not ``true``, ``1.0`` or ``"1"``) and a JSON boolean (not ``1`` or ``"yes"``).
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
DocId = Annotated[int, Strict(), Field(ge=1, le=MAX_ID, examples=[1])]
Text = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_NUL)]
ShortText = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]


def _fits_an_id(ref: str) -> str:
    text = ref.strip()
    if text.isascii() and text.isdigit() and (len(text) > 19 or int(text) > MAX_ID):
        raise ValueError(f"is not a ledger id: an id is a positive 64-bit integer (at most "
                         f"{MAX_ID})")
    return ref


# A ledger row named by id or by a name (sku, CRM id): digits alone must fit a 64-bit id.
LedgerRef = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_NUL),
                      AfterValidator(_fits_an_id)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors -----------------------------------------------------------------------------------

class ErrorDetail(BaseModel):
    code: str = Field(examples=["insufficient_balance"])
    field: str | None = Field(examples=["applications[0].amount"])
    value: str | int | bool | None = Field(examples=["500.00"])
    message: str = Field(examples=[("applications[0].amount='500.00': exceeds the unapplied "
                                   "balance 10000 of the credit_memo")])


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- documents --------------------------------------------------------------------------------

class ApplicationOut(BaseModel):
    id: int
    source_type: str = Field(examples=["credit_memo"])
    source_id: int
    target_type: str = Field(examples=["invoice"])
    target_id: int
    amount: str = Field(examples=["40.00"])
    applied_at: datetime


_MEMO_EXAMPLE: dict[str, Any] = {
    "id": 1, "type": "credit_memo", "number": "CM-000001", "account_id": 1, "currency": "USD",
    "status": "partially_applied", "amount": "100.00", "applied": "40.00", "balance": "60.00",
    "reason": "Goodwill", "origin": "manual", "reference": None, "method": None,
    "issue_date": None, "due_date": None, "received_on": None, "period_start": None,
    "period_end": None, "created_at": "2026-03-02T09:00:00Z",
    "activated_at": "2026-03-02T09:00:00Z", "cancelled_at": None, "posted_at": None,
    "voided_at": None, "applications": [
        {"id": 1, "source_type": "credit_memo", "source_id": 1, "target_type": "invoice",
         "target_id": 1, "amount": "40.00", "applied_at": "2026-03-02T09:05:00Z"}]}


class DocumentOut(BaseModel):
    """A credit memo, debit memo, invoice or payment, with its open balance."""
    model_config = ConfigDict(json_schema_extra={"examples": [_MEMO_EXAMPLE]})

    id: int
    type: Literal["credit_memo", "debit_memo", "invoice", "payment"]
    number: str | None = Field(None, examples=["CM-000001"])
    account_id: int
    currency: str = Field(examples=["USD"])
    status: str = Field(examples=["active"])
    amount: str = Field(examples=["100.00"])
    applied: str = Field(examples=["0.00"])
    balance: str = Field(examples=["100.00"])
    reason: str | None = None
    origin: str | None = None
    reference: str | None = None
    method: str | None = None
    issue_date: date | None = None
    due_date: date | None = None
    received_on: date | None = None
    period_start: date | None = None
    period_end: date | None = None
    created_at: datetime | None = None
    activated_at: datetime | None = None
    cancelled_at: datetime | None = None
    posted_at: datetime | None = None
    voided_at: datetime | None = None
    applications: list[ApplicationOut] | None = None


class InvoiceLineOut(BaseModel):
    line_no: int
    kind: str = Field(examples=["recurring"])
    description: str = Field(examples=["Seat x 5, 2026-03-01 to 2026-03-31"])
    product_id: int | None = None
    subscription_id: int | None = None
    quantity: str | None = Field(None, examples=["5"])
    unit_price: str | None = Field(None, examples=["20.00"])
    period_start: date | None = None
    period_end: date | None = None
    amount: str = Field(examples=["100.00"])
    tax_rate: str | None = Field(None, examples=["0.0825"])
    tax: str = Field(examples=["8.25"])


class InvoiceTaxOut(BaseModel):
    """One rate's tax: the taxable base after credits and the tax on it, rounded once."""
    rate: str = Field(examples=["0.0825"])
    base: str = Field(examples=["390.00"])
    tax: str = Field(examples=["32.18"])


class CreditDrawOut(BaseModel):
    """Prepaid credit drawn by the invoice (its ``credit_draw`` line), per grant."""
    grant_id: int
    amount: str = Field(examples=["155.00"])


class InvoiceOut(DocumentOut):
    """An invoice with its lines, its tax per rate with the base, the prepaid credits it drew
    and the applications settling it (credit memos, payments)."""
    subtotal: str = Field(examples=["390.00"])
    tax: str = Field(examples=["32.18"])
    lines: list[InvoiceLineOut]
    taxes: list[InvoiceTaxOut]
    credit_draws: list[CreditDrawOut]


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page.")


class ItemResult(BaseModel):
    """One item of a batch: ``ok`` with the document's new state, or that item's error."""
    index: int
    ok: bool
    result: DocumentOut | None = None
    error: ErrorDetail | None = None


class BatchResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "results": [
            {"index": 0, "ok": True, "result": _MEMO_EXAMPLE, "error": None},
            {"index": 1, "ok": False, "result": None, "error": {
                "code": "insufficient_balance", "field": "applications[0].amount",
                "value": "500.00", "message": "applications[0].amount='500.00': exceeds the "
                                             "unapplied balance 6000 of the credit_memo"}}],
        "succeeded": 1, "failed": 1}]})

    results: list[ItemResult]
    succeeded: int
    failed: int


# --- memos ------------------------------------------------------------------------------------

class CreateMemo(Model):
    account_id: DocId
    amount: Amount
    currency: Currency | None = None
    reason: Text
    activate: Bool = Field(False, description="Number and activate it at once.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"account_id": 1, "amount": "25.00", "currency": "USD", "reason": "Goodwill",
         "activate": True}]})


class CreateDebitMemo(CreateMemo):
    issue_date: date | None = Field(None, description="Today (UTC) or earlier; default: the "
                                                      "day it is activated.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"account_id": 1, "amount": "25.00", "currency": "USD", "reason": "Late fee",
         "activate": True, "issue_date": "2026-03-01"}]})


class CreditMemoRefs(Model):
    credit_memos: list[Ref] = Field(min_length=1, max_length=MAX_BATCH,
                                    examples=[["CM-000001", "7"]])


class DebitMemoRefs(Model):
    debit_memos: list[Ref] = Field(min_length=1, max_length=MAX_BATCH,
                                   examples=[["DM-000001"]])


class TargetAmount(Model):
    target: Ref = Field(description="INV-…/DM-… number, or invoice:<id> / debit_memo:<id>.",
                        examples=["INV-000001"])
    amount: Amount


class ApplyItem(Model):
    credit_memo: Ref
    applications: list[TargetAmount] = Field(min_length=1, max_length=MAX_BATCH)


class ApplyCreditMemos(Model):
    items: list[ApplyItem] = Field(min_length=1, max_length=MAX_BATCH, examples=[[
        {"credit_memo": "CM-000001",
         "applications": [{"target": "INV-000001", "amount": "40.00"}]}]])


class UnapplyItem(Model):
    credit_memo: Ref
    target: Ref | None = Field(None, description="Only the applications to this document.")
    amount: Amount | None = Field(None, description="Only this much, taken back from the "
                                                    "newest applications first.")


class UnapplyCreditMemos(Model):
    items: list[UnapplyItem] = Field(min_length=1, max_length=MAX_BATCH,
                                     examples=[[{"credit_memo": "CM-000001"}]])


class InvoiceRefs(Model):
    invoices: list[Ref] = Field(min_length=1, max_length=MAX_BATCH, examples=[["INV-000001"]])


# --- payments and credits ---------------------------------------------------------------------

class RecordPayment(Model):
    account_id: DocId
    amount: Amount
    currency: Currency | None = None
    reference: ShortText = Field(description="Unique per account: the payment system's id.",
                                 examples=["pi_3Nx"])
    received_on: date | None = None
    method: Annotated[str, Field(max_length=32, pattern=NO_NUL)] | None = None
    auto_apply: Bool = Field(False, description="Apply it oldest-first at once.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"account_id": 1, "amount": "100.00", "currency": "USD", "reference": "pi_3Nx",
         "method": "card", "auto_apply": True}]})


class PaymentApplyItem(Model):
    payment: Ref = Field(description="Payment id or reference.")
    applications: list[TargetAmount] | None = Field(
        None, max_length=MAX_BATCH, description="Omit to apply oldest-first.")


class ApplyPayments(Model):
    items: list[PaymentApplyItem] = Field(min_length=1, max_length=MAX_BATCH,
                                          examples=[[{"payment": "12"}]])


class GrantCredits(Model):
    account_id: DocId
    amount: Amount
    kind: Literal["purchased", "granted"] = "granted"
    expires_on: date | None = None
    reason: Text
    source: ShortText = "api"


class ConvertCredits(Model):
    """Exactly one of ``grant_id`` (grant → credit memo) or ``credit_memo`` (memo → credits)."""
    grant_id: DocId | None = None
    credit_memo: Ref | None = None
    amount: Amount | None = Field(None, description="Default: everything that is left.")
    reason: Text | None = None


class GrantOut(BaseModel):
    id: int
    account_id: int
    currency: str
    kind: str
    amount: str
    remaining: str
    expires_on: date | None = None
    source: str
    reason: str
    origin_credit_memo_id: int | None = None
    created_at: datetime | None = None


class ConvertResult(BaseModel):
    credit_memo: DocumentOut | None = None
    grant: GrantOut | None = None


class CreditPool(BaseModel):
    account_id: int
    currency: str
    balance: str
    grants: list[GrantOut]


JsonObject = dict[str, Any]
