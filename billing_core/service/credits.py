"""Credit pools: prepaid or granted credit an account holds, and its conversions to and from
credit memos.

Rules kept here
- A grant is money in the account's currency: ``purchased`` (prepaid credits) or ``granted``
  (one-time credits: referral rewards, goodwill), with an optional expiry (not in the past), a
  source and a reason. ``memo_return`` grants are made only by :func:`convert_memo_to_credits`,
  ``void_return`` grants only by ``documents.void_invoice`` (credit a voided invoice drew).
- ``remaining_minor`` never goes below zero: every decrement is a guarded UPDATE
  (``remaining >= x``) and writes a ``credit_draws`` row (usage at billing is the bill run's;
  ``conversion`` here), so remaining = amount − draws.
- Grant → memo: part or all of an unexpired grant's remaining balance becomes an *active*
  credit memo (origin ``credit_conversion``, ``origin_grant_id``), recorded as a ``conversion``
  draw naming the memo.
- Memo → credits (for a miscalculation): part or all of an active memo's unapplied balance goes
  back into the pool as a new ``memo_return`` grant (no expiry, ``origin_credit_memo_id``). The
  memo records it as *applied to the pool*: an ``applications`` row with target type
  ``credit_grant`` and the new grant's id, and ``applied_minor`` raised by the amount (status
  partially_applied / applied). So applied ≤ amount still holds, ``applied_minor`` still equals
  the sum of the memo's live applications, and the open balance (which counts a memo's
  unapplied part only) drops by exactly what left the memo. The move is final: ``unapply`` does
  not reverse it (convert the grant again instead).
- Pool credit is not part of the open balance: it is spent at billing, or turned into a memo.
  At billing a grant pays only for usage dated on or before its ``expires_on``, so a grant
  that expires inside a usage period still pays for that period's usage before its expiry
  (the draw rule is :mod:`billing_core.domain.invoicing`'s); ``expired`` here is as of a day.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import applications, credit_draws, credit_grants
from billing_core.domain.errors import (
    InsufficientBalance,
    InvalidState,
    NotFound,
    ValidationError,
)
from billing_core.domain.ids import as_id
from billing_core.domain.money import Money
from billing_core.domain.states import OPEN_CREDIT_MEMO
from billing_core.service import applications as apps
from billing_core.service import audit
from billing_core.service.accounts import get_account
from billing_core.service.documents import atomic, balance, find, inserted_id, parse_money
from billing_core.service.memos import credit_memo_view, issue_credit_memo

KINDS = ("purchased", "granted")


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, value, "is required")
    return value.strip()


@atomic
def grant_credits(uow: UnitOfWork, account_id: int, amount: object, *, kind: str = "purchased",
                  expires_on: date | None = None, source: str = "admin",
                  reason: str = "") -> int:
    """Add a grant of ``amount`` (as the user gives it) to the account's pool. Returns its id."""
    account = get_account(uow.conn, account_id)
    if kind not in KINDS:
        raise ValidationError("kind", kind, f"must be one of {', '.join(KINDS)}")
    minor = parse_money(amount, account["currency"], "amount")
    if expires_on is not None and (not isinstance(expires_on, date)
                                   or expires_on < uow.now().date()):
        raise ValidationError("expires_on", expires_on, "must be a date that has not passed")
    grant_id = inserted_id(uow.conn.execute(insert(credit_grants).values(
        account_id=account_id, currency=account["currency"], kind=kind, amount_minor=minor,
        remaining_minor=minor, expires_on=expires_on, source=_text(source, "source")[:128],
        reason=_text(reason, "reason")[:255], created_at=uow.now())))
    uow.touch(account_id)
    audit.record(uow, "granted", "credit_grant", grant_id, account_id=account_id,
                 after={"kind": kind, "amount_minor": minor, "expires_on": expires_on,
                        "source": source})
    return grant_id


def get_grant(conn: Connection, grant_id: object) -> dict[str, Any]:
    text = str(grant_id).strip()
    row = None
    if (found := as_id(text)) is not None:
        row = conn.execute(select(credit_grants).where(
            credit_grants.c.id == found)).mappings().first()
    if row is None:
        raise NotFound("grant", grant_id)
    return dict(row)


def list_grants(conn: Connection, account_id: int, *, on_date: date | None = None,
                usable_only: bool = False) -> list[dict[str, Any]]:
    """The account's grants, earliest expiry first (no expiry last), then oldest; each with
    ``expired`` (as of ``on_date``, default today)."""
    on_date = on_date or date.today()
    stmt = select(credit_grants).where(credit_grants.c.account_id == account_id)
    if usable_only:
        stmt = stmt.where(credit_grants.c.remaining_minor > 0, or_(
            credit_grants.c.expires_on.is_(None), credit_grants.c.expires_on >= on_date))
    rows = [dict(r, expired=r["expires_on"] is not None and r["expires_on"] < on_date)
            for r in conn.execute(stmt).mappings()]
    return sorted(rows, key=lambda g: (g["expires_on"] is None, g["expires_on"] or date.max,
                                       g["id"]))


def pool_balance_minor(conn: Connection, account_id: int, on_date: date) -> int:
    return sum(g["remaining_minor"] for g in list_grants(conn, account_id, on_date=on_date,
                                                         usable_only=True))


@atomic
def convert_grant_to_memo(uow: UnitOfWork, grant_id: object,
                          amount: object = None) -> dict[str, Any]:
    """Turn ``amount`` (default: all that remains) of a grant into an active credit memo.
    Returns the memo's state."""
    grant = get_grant(uow.conn, grant_id)
    if grant["expires_on"] is not None and grant["expires_on"] < uow.now().date():
        raise InvalidState("grant", grant_id, f"expired on {grant['expires_on']}")
    remaining = int(grant["remaining_minor"])
    minor = remaining if amount is None else parse_money(amount, grant["currency"], "amount")
    if minor <= 0:
        raise InsufficientBalance("grant", grant_id, "has nothing left to convert")
    if minor > remaining:
        raise InsufficientBalance("amount", amount, f"exceeds the grant's remaining {remaining}")
    done = uow.conn.execute(update(credit_grants).where(
        credit_grants.c.id == grant["id"], credit_grants.c.remaining_minor >= minor,
    ).values(remaining_minor=credit_grants.c.remaining_minor - minor)).rowcount
    if done != 1:
        raise InsufficientBalance("amount", amount, "the grant changed meanwhile: try again")
    memo_id = issue_credit_memo(uow, grant["account_id"], minor,
                                f"converted from credit grant {grant['id']}",
                                origin="credit_conversion", origin_grant_id=grant["id"],
                                activate=True)
    uow.conn.execute(insert(credit_draws).values(
        grant_id=grant["id"], kind="conversion", amount_minor=minor, credit_memo_id=memo_id,
        created_at=uow.now()))
    uow.touch(int(grant["account_id"]))
    audit.record(uow, "converted", "credit_grant", grant["id"],
                 account_id=int(grant["account_id"]), changes={
                     "remaining_minor": [remaining, remaining - minor],
                     "credit_memo_id": [None, memo_id]})
    return credit_memo_view(uow.conn, memo_id)


@atomic
def convert_memo_to_credits(uow: UnitOfWork, memo: object, amount: object = None, *,
                            reason: str | None = None) -> dict[str, Any]:
    """Move ``amount`` (default: all of it) of a memo's unapplied balance back into the pool as
    a ``memo_return`` grant. Returns the new grant."""
    row = find(uow.conn, "credit_memo", memo)
    if row["status"] not in OPEN_CREDIT_MEMO:
        raise InvalidState("credit_memo", memo, f"is {row['status']}: only an active memo's "
                                                "unapplied balance goes back to credits")
    unapplied = balance(row, "credit_memo")
    minor = unapplied if amount is None else parse_money(amount, row["currency"], "amount")
    if minor <= 0:
        raise InsufficientBalance("credit_memo", memo, "has no unapplied balance")
    if minor > unapplied:
        raise InsufficientBalance("amount", amount, f"exceeds the memo's unapplied "
                                                  f"{Money.of_minor(unapplied, row['currency'])}")
    if not apps.move_applied(uow, "credit_memo", row["id"], minor, open_only=True):
        raise InsufficientBalance("amount", amount, "the memo changed meanwhile: try again")
    label = row["number"] or f"credit_memo:{row['id']}"
    grant_id = inserted_id(uow.conn.execute(insert(credit_grants).values(
        account_id=row["account_id"], currency=row["currency"], kind="memo_return",
        amount_minor=minor, remaining_minor=minor, expires_on=None, source=label,
        reason=(reason or f"returned from {label}")[:255], origin_credit_memo_id=row["id"],
        created_at=uow.now())))
    uow.conn.execute(insert(applications).values(
        account_id=row["account_id"], source_type="credit_memo", source_id=row["id"],
        target_type=apps.POOL_TARGET, target_id=grant_id, amount_minor=minor,
        applied_at=uow.now()))
    uow.touch(int(row["account_id"]))
    audit.record(uow, "returned_to_credits", "credit_memo", row["id"], entity_ref=row["number"],
                 account_id=int(row["account_id"]), changes={
                     "applied_minor": [int(row["applied_minor"]),
                                       int(row["applied_minor"]) + minor],
                     "credit_grant_id": [None, grant_id]})
    return get_grant(uow.conn, grant_id)
