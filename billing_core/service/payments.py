"""Payments: money received from an account, and its application to what the account owes.

Rules kept here
- A payment has an amount > 0 in the account's currency (another currency is a
  ``CurrencyMismatch``), the date it was received, a method and a reference that is unique per
  account (a second one is ``Duplicate`` naming the reference: payment systems retry).
- Applying names documents with amounts, or goes oldest-first: open invoices and debit memos
  by due date, then number, each taking what it still owes until the payment is used up.
- What is not applied stays on the payment as the account's credit (it lowers the open
  balance) and can be applied later.
- Every function completes or changes nothing and touches the account.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import payments
from billing_core.domain.errors import (
    CurrencyMismatch,
    Duplicate,
    InvalidState,
    NotFound,
    ValidationError,
)
from billing_core.domain.money import check_currency
from billing_core.domain.periods import parse_date
from billing_core.service import applications as apps
from billing_core.service import audit
from billing_core.service.accounts import get_account
from billing_core.service.documents import (
    OPEN_TARGET,
    atomic,
    balance,
    find,
    inserted_id,
    parse_money,
    resolve_target,
    to_view,
)
from billing_core.service.receivables import open_debts


@atomic
def record_payment(uow: UnitOfWork, account_id: int, amount: object, *, reference: str,
                   received_on: date | str | None = None, currency: str | None = None,
                   method: str | None = None, auto_apply: bool = False) -> int:
    """Record a payment (``amount`` as the user gives it, e.g. ``"100.00"``); with
    ``auto_apply`` apply it oldest-first at once. Returns its id."""
    account = get_account(uow.conn, account_id)
    code = account["currency"] if currency is None else check_currency(currency)
    if code != account["currency"]:
        raise CurrencyMismatch("currency", code, str(account["currency"]))
    minor = parse_money(amount, code, "amount")
    if not isinstance(reference, str) or not reference.strip():
        raise ValidationError("reference", reference, "is required")
    reference = reference.strip()
    if len(reference) > 128:
        raise ValidationError("reference", reference, "is longer than 128 characters")
    received = uow.now().date() if received_on is None else parse_date(received_on, "received_on")
    if uow.conn.execute(select(payments.c.id).where(
            payments.c.account_id == account_id, payments.c.reference == reference)).first():
        raise Duplicate("reference", reference)
    try:
        with uow.savepoint():
            payment_id = inserted_id(uow.conn.execute(insert(payments).values(
                account_id=account_id, currency=code, amount_minor=minor, applied_minor=0,
                received_on=received, reference=reference, method=method,
                created_at=uow.now())))
    except IntegrityError:   # a racing twin with the same reference committed first
        raise Duplicate("reference", reference) from None
    uow.touch(account_id)
    audit.record(uow, "recorded", "payment", payment_id, entity_ref=reference,
                 account_id=account_id, after={"amount_minor": minor, "currency": code,
                                               "received_on": received, "reference": reference,
                                               "method": method})
    if auto_apply:
        apply_payment(uow, payment_id)
    return payment_id


def find_payment(conn: Connection, ref: object, *, account_id: int | None = None) -> RowMapping:
    """A payment by id, or by reference (within ``account_id`` when given)."""
    text = str(ref).strip() if ref is not None else ""
    if text.isdigit():
        return find(conn, "payment", text)
    stmt = select(payments).where(payments.c.reference == text)
    if account_id is not None:
        stmt = stmt.where(payments.c.account_id == account_id)
    rows = conn.execute(stmt.limit(2)).mappings().all()
    if not rows:
        raise NotFound("payment", ref)
    if len(rows) > 1:
        raise ValidationError("payment", ref, "reference is used by several accounts: give the id")
    return rows[0]


@atomic
def apply_payment(uow: UnitOfWork, payment: object,
                  targets: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Apply a payment to ``targets`` (``[{"target": "INV-000001", "amount": "10.00"}]``), or,
    without targets, oldest-first to the account's open documents. Returns the payment's state;
    an unapplied remainder stays as the account's credit."""
    payment_id = find_payment(uow.conn, payment)["id"]
    if targets:
        apps.apply_many(uow, "payment", payment_id, targets)
        return payment_view(uow.conn, payment_id)
    source = find(uow.conn, "payment", payment_id)
    debts = sorted((d for d in open_debts(uow.conn, source["account_id"])
                    if d["currency"] == source["currency"]),
                   key=lambda d: (d["due_date"], d["number"] or "", d["id"]))
    for debt in debts:
        left = balance(source, "payment")
        if left <= 0:
            break
        # Locked, in the same oldest-first order by every payment: a payment of the same
        # account applying at the same time takes its turn, and this one then reads what the
        # other left open (paid meanwhile: nothing to take) instead of failing as "changed".
        target = find(uow.conn, debt["type"], debt["id"], lock=True)
        take = min(left, balance(target, debt["type"]))
        if take <= 0 or target["status"] not in OPEN_TARGET[debt["type"]]:
            continue
        apps.apply(uow, "payment", source, debt["type"], target, take)
        source = find(uow.conn, "payment", payment_id)
    return payment_view(uow.conn, payment_id)


@atomic
def unapply_payment(uow: UnitOfWork, payment: object, *, target: object = None) -> dict[str, Any]:
    """Reverse the payment's live applications (all, or those to ``target``)."""
    row = find_payment(uow.conn, payment)
    live = apps.live_applications(uow.conn, source_type="payment", source_id=row["id"])
    if target is not None:
        target_type, target_row = resolve_target(uow.conn, target)
        live = [a for a in live if (a["target_type"], a["target_id"])
                == (target_type, target_row["id"])]
    if not live:
        raise InvalidState("payment", payment, "has nothing applied to unapply")
    for application in live:
        apps.unapply(uow, application["id"])
    return payment_view(uow.conn, row["id"])


def payment_view(conn: Connection, payment: object) -> dict[str, Any]:
    row = find_payment(conn, payment)
    view = to_view(row, "payment")
    view["applications"] = [dict(a) for a in apps.live_applications(
        conn, source_type="payment", source_id=row["id"])]
    return view


def list_payments(conn: Connection, account_id: int | None = None, *, after_id: int = 0,
                  limit: int | None = None) -> list[dict[str, Any]]:
    """Payments in id order; a keyset page with ``after_id`` / ``limit``, read in SQL."""
    stmt = select(payments).where(payments.c.id > after_id).order_by(payments.c.id).limit(limit)
    if account_id is not None:
        stmt = stmt.where(payments.c.account_id == account_id)
    return [to_view(r, "payment") for r in conn.execute(stmt).mappings()]
