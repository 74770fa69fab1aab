"""Accounts: the billed parties.

Rules: the external reference (source, object, id) is unique; currency is ISO 4217 and never
changes once documents exist; bill cycle day 1..31; a credit limit is a non-negative amount in
the account's currency or empty (no limit); history is never deleted (``crm_deleted``).
A change to the limit or the CRM hold flag touches the account (credit control re-evaluates).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, or_, select, update

from billing_core.adapters.tables import accounts, invoices
from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import Duplicate, InvalidState, NotFound, ValidationError
from billing_core.domain.money import check_currency, parse_amount


@dataclass(frozen=True)
class AccountIn:
    name: str
    currency: str
    ext_id: str
    ext_source: str = "local"
    ext_object: str = "account"
    number: str | None = None
    country: str | None = None
    region: str | None = None
    bill_cycle_day: int = 1
    payment_terms_days: int = 30
    credit_limit: Decimal | str | int | None = None
    crm_hold: bool = False


def validate_account(data: AccountIn) -> dict[str, Any]:
    """The row values for ``data``, or a ``ValidationError`` naming the field."""
    if not data.ext_id or not str(data.ext_id).strip():
        raise ValidationError("ext_id", data.ext_id, "is required")
    if not data.name or not data.name.strip():
        raise ValidationError("name", data.name, "is required")
    currency = check_currency(data.currency)
    if not isinstance(data.bill_cycle_day, int) or not 1 <= data.bill_cycle_day <= 31:
        raise ValidationError("bill_cycle_day", data.bill_cycle_day, "must be 1..31")
    if not isinstance(data.payment_terms_days, int) or data.payment_terms_days < 0:
        raise ValidationError("payment_terms_days", data.payment_terms_days,
                              "must be a whole number of days >= 0")
    if data.country is not None and (len(data.country) != 2 or not data.country.isalpha()):
        raise ValidationError("country", data.country, "must be an ISO 3166 alpha-2 code")
    limit = None
    if data.credit_limit is not None and data.credit_limit != "":
        limit = parse_amount(data.credit_limit, currency, "credit_limit", allow_zero=True)
    return {
        "ext_source": data.ext_source, "ext_object": data.ext_object, "ext_id": str(data.ext_id),
        "name": data.name.strip()[:255], "number": data.number, "currency": currency,
        "country": data.country.upper() if data.country else None, "region": data.region,
        "bill_cycle_day": data.bill_cycle_day, "payment_terms_days": data.payment_terms_days,
        "credit_limit_minor": limit, "crm_hold": bool(data.crm_hold),
    }


def create_account(uow: UnitOfWork, data: AccountIn) -> int:
    values = validate_account(data)
    conn = uow.conn
    exists = conn.execute(select(accounts.c.id).where(
        accounts.c.ext_source == values["ext_source"], accounts.c.ext_object == values["ext_object"],
        accounts.c.ext_id == values["ext_id"])).first()
    if exists:
        raise Duplicate("ext_id", values["ext_id"])
    now = uow.now()
    account_id = conn.execute(insert(accounts).values(
        **values, status="active", created_at=now, updated_at=now)).inserted_primary_key[0]
    uow.touch(account_id)
    return int(account_id)


def get_account(conn: Connection, account_id: int) -> RowMapping:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
    if row is None:
        raise NotFound("account", account_id)
    return row


def resolve_account(conn: Connection, ref: str | int) -> RowMapping:
    """Find an account by ledger id or by CRM id (``ext_id``); the CLI accepts either."""
    text = str(ref).strip()
    cond = accounts.c.ext_id == text
    if text.isdigit():
        cond = or_(accounts.c.id == int(text), cond)
    rows = conn.execute(select(accounts).where(cond).limit(2)).mappings().all()
    if not rows:
        raise NotFound("account", ref)
    if len(rows) > 1:
        exact = [r for r in rows if str(r["id"]) == text]
        if len(exact) == 1:
            return exact[0]
        raise ValidationError("account", ref, "is ambiguous: give the ledger id")
    return rows[0]


def update_account(uow: UnitOfWork, account_id: int, data: AccountIn) -> bool:
    """Apply new CRM values. Returns True when something changed. Currency is fixed once the
    account has documents (amounts of different currencies never mix)."""
    values = validate_account(data)
    current = get_account(uow.conn, account_id)
    changes = {k: v for k, v in values.items() if current[k] != v}
    if not changes and current["status"] == "active":
        return False
    if "currency" in changes:
        has_docs = uow.conn.execute(select(invoices.c.id).where(
            invoices.c.account_id == account_id).limit(1)).first()
        if has_docs:
            raise InvalidState("currency", values["currency"],
                               f"cannot change from {current['currency']}: the account has invoices")
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        **changes, status="active", updated_at=uow.now()))
    if {"credit_limit_minor", "crm_hold"} & changes.keys():
        uow.touch(account_id)
    return True


def mark_crm_deleted(uow: UnitOfWork, account_id: int) -> None:
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        status="crm_deleted", updated_at=uow.now()))


def set_credit_limit(uow: UnitOfWork, account_id: int, limit: str | Decimal | None) -> None:
    account = get_account(uow.conn, account_id)
    minor = None if limit in (None, "") else parse_amount(
        limit, account["currency"], "credit_limit", allow_zero=True)
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        credit_limit_minor=minor, updated_at=uow.now()))
    uow.touch(account_id)


def set_crm_hold(uow: UnitOfWork, account_id: int, on_hold: bool) -> None:
    get_account(uow.conn, account_id)
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        crm_hold=bool(on_hold), updated_at=uow.now()))
    uow.touch(account_id)


def list_accounts(conn: Connection, *, after_id: int = 0, limit: int = 100) -> list[RowMapping]:
    return list(conn.execute(select(accounts).where(accounts.c.id > after_id)
                             .order_by(accounts.c.id).limit(limit)).mappings())


def touched_since(conn: Connection, since: datetime) -> list[int]:
    return [r[0] for r in conn.execute(select(accounts.c.id).where(accounts.c.updated_at >= since))]
