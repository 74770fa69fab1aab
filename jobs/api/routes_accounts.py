"""Accounts over HTTP: finance reads an account and updates its own terms.

A thin layer over :mod:`billing_core.service.accounts` (``get_account``, ``update_terms``), the
functions the CLI's ``accounts show`` / ``accounts update`` call. Reads need ``billing:read``,
the update ``billing:write`` and runs in the request's unit of work (replayed, not repeated,
under the same ``Idempotency-Key``). A bad value is a 422 naming the field, an unknown account
a 404. The CRM owns name, currency, country, region and credit limit: a region set here holds
until the CRM's next change to the account; the credit limit override is finance's and wins
over the CRM's limit while set.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from pydantic import BaseModel, ConfigDict, Field

from billing_core.service.accounts import get_account, resolve_account, update_terms
from jobs.api.deps import Reader, Uow, Writer, router
from jobs.api.models import NAME_PATTERN, NO_NUL, Amount, Bool, Int, Model
from jobs.api.views import money

routes = router("accounts")

AccountRef = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_PATTERN,
                                 description="Ledger id or CRM account id.")]


class AccountOut(BaseModel):
    id: int
    ext_source: str
    ext_id: str
    name: str
    currency: str = Field(examples=["USD"])
    country: str | None = Field(None, examples=["US"])
    region: str | None = Field(None, examples=["CA"])
    bill_cycle_day: int
    payment_terms_days: int = Field(examples=[30])
    credit_limit: str | None = Field(None, examples=["10000.00"], description="The CRM's.")
    credit_limit_override: str | None = Field(None, examples=["25000.00"], description=(
        "Finance's, used instead of the CRM's while set."))
    tax_exempt: bool
    billing_email: str | None = Field(None, examples=["ap@example.com, cfo@example.com"],
                                      description="Where documents are emailed.")
    account_class: str | None = Field(None, examples=["enterprise"], description=(
        "The account's class: its dunning schedule ([dunning.classes])."))
    crm_hold: bool
    status: str


class UpdateAccount(Model):
    """Only the fields given change; ``region: ""`` or null clears it."""
    region: str | None = Field(None, max_length=64, pattern=NO_NUL)
    payment_terms_days: Int | None = Field(None, ge=0, le=3650,
                                           description="For invoices issued from now on.")
    tax_exempt: Bool | None = Field(None, description="Billed without tax, whatever the "
                                                      "country's rate.")
    credit_limit_override: Amount | None = Field(None, description=(
        "Used instead of the CRM's limit; null removes it."))
    bill_cycle_day: Int | None = Field(None, ge=1, le=31, description=(
        "The days from what was billed to the new day go, prorated, on the first invoice "
        "whose period starts on or after them."))
    billing_email: str | None = Field(None, max_length=512, pattern=NO_NUL, description=(
        "Where documents are emailed: addresses separated by ; or , (\"\" or null clears)."))
    account_class: str | None = Field(None, max_length=64, pattern=NO_NUL, description=(
        "The account's class, one of [dunning.classes] (its dunning schedule); \"\" or null "
        "clears it."))
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"payment_terms_days": 45, "tax_exempt": False, "bill_cycle_day": 15}]})


def _out(row: Any) -> AccountOut:
    return AccountOut(**{k: row[k] for k in (
        "id", "ext_source", "ext_id", "name", "currency", "country", "region",
        "bill_cycle_day", "payment_terms_days", "tax_exempt", "billing_email", "account_class", "crm_hold",
        "status")},
        credit_limit=money(row["credit_limit_minor"], row["currency"]),
        credit_limit_override=money(row["credit_limit_override_minor"], row["currency"]))


@routes.get("/billing/accounts/{account}")
def show_account(account: AccountRef, uow: Uow, _: Reader) -> AccountOut:
    """One account (ledger id or CRM id) with finance's terms."""
    return _out(resolve_account(uow.conn, account))


@routes.post("/billing/accounts/{account}:update")
def update_account_terms(account: AccountRef, body: UpdateAccount, uow: Uow,
                         _: Writer, request: Request) -> AccountOut:
    """Update finance's terms of an account: region, payment terms, tax exemption, bill
    cycle day, credit limit override (credit control re-evaluates its holds at once), billing
    email, class (one of ``[dunning.classes]``, else 422 naming ``account_class``)."""
    account_id = int(resolve_account(uow.conn, account)["id"])
    given = body.model_fields_set
    kwargs: dict[str, Any] = {"payment_terms_days": body.payment_terms_days,
                              "tax_exempt": body.tax_exempt,
                              "bill_cycle_day": body.bill_cycle_day}
    if "region" in given:
        kwargs["region"] = body.region
    if "credit_limit_override" in given:
        kwargs["credit_limit_override"] = body.credit_limit_override
    if "billing_email" in given:
        kwargs["billing_email"] = body.billing_email
    if "account_class" in given:
        kwargs["account_class"] = body.account_class
        kwargs["known_classes"] = set(request.app.state.api.settings.dunning.classes or {})
    update_terms(uow, account_id, **kwargs)
    return _out(get_account(uow.conn, account_id))
