"""Accounts: the billed parties.

Rules: the external reference (source, object, id) is unique; currency is ISO 4217 and never
changes once documents exist; bill cycle day 1..31; a credit limit is a non-negative amount in
the account's currency or empty (no limit); history is never deleted (``crm_deleted``).
A change to the limit or the CRM hold flag touches the account (credit control re-evaluates).
Finance's own terms (bill cycle day, payment terms, tax exemption) are not the CRM's: an
``AccountIn`` that leaves them ``None`` (the sync's) keeps what the account has (1 and 30 days
for a new one), so a CRM update never resets them; :func:`update_terms` changes them. The
billing email and the account class are the CRM's when it maps them and finance's otherwise:
``None`` from the CRM (not mapped, or empty) keeps what the account has. Finance's
credit limit override lives beside the CRM's limit (which every CRM update writes) and wins
over it while set.
:func:`upsert_accounts` keeps the same rules for a whole chunk of accounts (the sync's pages):
one lookup by external keys, one multi-row insert, one multi-row update of the rows that change;
an item billing refuses is reported in its result and writes nothing.
"""
from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, func, insert, or_, select, union, update

from billing_core.adapters.bulk import BulkInsert, id_in, reserve_ids, text_in
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    applications,
    credit_memos,
    debit_memos,
    hold_history,
    invoices,
    orders,
    payments,
    provisioning_requests,
)
from billing_core.domain.contacts import normalize_emails
from billing_core.domain.dunning import FIELD as CLASS_FIELD
from billing_core.domain.dunning import normalize_class
from billing_core.domain.errors import (
    Duplicate,
    InvalidState,
    LedgerError,
    NotFound,
    ValidationError,
)
from billing_core.domain.ids import as_id
from billing_core.domain.money import check_currency, parse_amount
from billing_core.domain.records import quick_init
from billing_core.service import audit


@quick_init
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
    bill_cycle_day: int | None = None       # None: keep (new account: 1)
    payment_terms_days: int | None = None   # None: keep (new account: 30)
    credit_limit: Decimal | str | int | None = None
    crm_hold: bool = False
    tax_exempt: bool | None = None          # None: keep (new account: taxable)
    billing_email: str | None = None        # None: keep (addresses split by ; or ,)
    account_class: str | None = None        # None: keep (a class name, lower-cased)


def validate_account(data: AccountIn) -> dict[str, Any]:
    """The row values for ``data``, or a ``ValidationError`` naming the field."""
    if not data.ext_id or not str(data.ext_id).strip():
        raise ValidationError("ext_id", data.ext_id, "is required")
    if not data.name or not data.name.strip():
        raise ValidationError("name", data.name, "is required")
    for key, value, most in (("ext_id", str(data.ext_id), 64), ("name", data.name.strip(), 255),
                             ("number", data.number, 64), ("region", data.region, 64)):
        if value is not None and len(value) > most:
            raise ValidationError(key, value, f"is longer than {most} characters")
    currency = check_currency(data.currency)
    _check_terms(data.bill_cycle_day, data.payment_terms_days)
    if data.country is not None and (len(data.country) != 2 or not data.country.isalpha()):
        raise ValidationError("country", data.country, "must be an ISO 3166 alpha-2 code")
    if data.tax_exempt is not None and not isinstance(data.tax_exempt, bool):
        raise ValidationError("tax_exempt", data.tax_exempt, "must be true or false")
    limit: int | None = None
    if data.credit_limit is not None and data.credit_limit != "":
        limit = parse_amount(data.credit_limit, currency, "credit_limit", allow_zero=True)
    return {
        "ext_source": data.ext_source, "ext_object": data.ext_object, "ext_id": str(data.ext_id),
        "name": data.name.strip(), "number": data.number, "currency": currency,
        "country": data.country.upper() if data.country else None, "region": data.region,
        "bill_cycle_day": data.bill_cycle_day, "payment_terms_days": data.payment_terms_days,
        "credit_limit_minor": limit, "crm_hold": bool(data.crm_hold),
        "tax_exempt": data.tax_exempt,
        "billing_email": normalize_emails(data.billing_email),
        "account_class": normalize_class(data.account_class),
    }


#: The longest payment terms (as the API's ``le``): a due date stays a date the ledger can store.
MAX_TERMS_DAYS = 3650


def _check_terms(bill_cycle_day: int | None, payment_terms_days: int | None) -> None:
    if bill_cycle_day is not None and (
            type(bill_cycle_day) is not int or not 1 <= bill_cycle_day <= 31):
        raise ValidationError("bill_cycle_day", bill_cycle_day, "must be 1..31")
    if payment_terms_days is not None and (
            type(payment_terms_days) is not int or not 0 <= payment_terms_days <= MAX_TERMS_DAYS):
        raise ValidationError("payment_terms_days", payment_terms_days,
                              f"must be a whole number of days from 0 to {MAX_TERMS_DAYS}")


_FINANCE_DEFAULTS: dict[str, Any] = {"bill_cycle_day": 1, "payment_terms_days": 30,
                                     "tax_exempt": False, "billing_email": None,
                                     "account_class": None}


def _keep_finance(values: dict[str, Any], base: Any) -> dict[str, Any]:
    """``values`` with finance's terms left ``None`` taken from ``base`` (the current row, or
    the defaults for a new account)."""
    return {k: base[k] if k in _FINANCE_DEFAULTS and v is None else v for k, v in values.items()}


def create_account(uow: UnitOfWork, data: AccountIn) -> int:
    values = _keep_finance(validate_account(data), _FINANCE_DEFAULTS)
    conn = uow.conn
    exists = conn.execute(select(accounts.c.id).where(
        accounts.c.ext_source == values["ext_source"],
        accounts.c.ext_object == values["ext_object"],
        accounts.c.ext_id == values["ext_id"])).first()
    if exists:
        raise Duplicate("ext_id", values["ext_id"])
    now = uow.now()
    key = conn.execute(insert(accounts).values(
        **values, status="active", created_at=now, updated_at=now)).inserted_primary_key
    if key is None:
        raise RuntimeError("the INSERT returned no primary key")
    account_id = int(key[0])
    uow.created(account_id)
    audit.record(uow, "created", "account", account_id, entity_ref=values["ext_id"],
                 account_id=account_id, after=values)
    return account_id


def get_account(conn: Connection, account_id: int) -> RowMapping:
    """The account of ``account_id``; ``NotFound`` for an id no table can hold (not a driver
    error)."""
    if as_id(account_id) is None:
        raise NotFound("account", account_id)
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
    if row is None:
        raise NotFound("account", account_id)
    return row


def currencies_of(conn: Connection, account_ids: Sequence[int]) -> dict[int, str]:
    """Each account's currency, in one query (accounts that do not exist are left out)."""
    if not account_ids:
        return {}
    return {int(a): c for a, c in conn.execute(select(accounts.c.id, accounts.c.currency).where(
        id_in(conn, accounts.c.id, sorted(set(account_ids)))))}


def resolve_account(conn: Connection, ref: str | int) -> RowMapping:
    """Find an account by ledger id or by CRM id (``ext_id``); the CLI accepts either."""
    text = str(ref).strip()
    cond = accounts.c.ext_id == text
    account_id = as_id(text)        # digits beyond an id can still be a CRM id
    if account_id is not None:
        cond = or_(accounts.c.id == account_id, cond)
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
    current = get_account(uow.conn, account_id)
    values = _keep_finance(validate_account(data), current)
    changes = {k: v for k, v in values.items() if current[k] != v}
    if not changes and current["status"] == "active":
        return False
    if "currency" in changes:
        has_docs = uow.conn.execute(select(invoices.c.id).where(
            invoices.c.account_id == account_id).limit(1)).first()
        if has_docs:
            raise _currency_fixed(values["currency"], current["currency"])
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        **changes, status="active", updated_at=uow.now()))
    if {"credit_limit_minor", "crm_hold"} & changes.keys():
        uow.touch(account_id)
    audit.record(uow, "updated", "account", account_id, entity_ref=current["ext_id"],
                 account_id=account_id,
                 before={"status": current["status"], **{k: current[k] for k in changes}},
                 after={"status": "active", **changes})
    return True


_KEEP: Any = object()


def update_terms(uow: UnitOfWork, account_id: int, *, region: str | None = _KEEP,
                 payment_terms_days: int | None = None, tax_exempt: bool | None = None,
                 bill_cycle_day: int | None = None,
                 credit_limit_override: Decimal | str | int | None = _KEEP,
                 billing_email: str | None = _KEEP, account_class: str | None = _KEEP,
                 known_classes: Collection[str] | None = None) -> dict[str, Any]:
    """Finance's update of an account: its region (``""`` or None clears it; the CRM's next
    change to the account sets it again), payment terms (days, for invoices issued from now
    on), tax exemption and bill cycle day (the next bill run on or after the new day bills
    what was billed up to the old day's next period and the new day as a prorated line, by the
    ordinary proration rule) and the credit limit override (an amount in the account's
    currency, used instead of the CRM's limit; ``""`` or None removes it). Arguments left out
    keep their value. ``billing_email``: the addresses documents are emailed to, separated by
    ``;`` or ``,`` (``""`` or None clears them). ``account_class``: the class choosing the
    dunning schedule (``""`` or None clears it); with ``known_classes`` (the configured ones)
    another class is refused naming the field and value. Returns what changed (field: new value);
    nothing changed writes nothing; a changed override touches the account (credit control re-evaluates)."""
    current = get_account(uow.conn, account_id)
    _check_terms(bill_cycle_day, payment_terms_days)
    values: dict[str, Any] = {}
    if bill_cycle_day is not None:
        values["bill_cycle_day"] = bill_cycle_day
    if region is not _KEEP:
        text = (region or "").strip() or None
        if text is not None and len(text) > 64:
            raise ValidationError("region", region, "is longer than 64 characters")
        values["region"] = text
    if payment_terms_days is not None:
        values["payment_terms_days"] = payment_terms_days
    if tax_exempt is not None:
        if not isinstance(tax_exempt, bool):
            raise ValidationError("tax_exempt", tax_exempt, "must be true or false")
        values["tax_exempt"] = tax_exempt
    if credit_limit_override is not _KEEP:
        values["credit_limit_override_minor"] = None if credit_limit_override in (None, "") \
            else parse_amount(credit_limit_override, current["currency"],
                              "credit_limit_override", allow_zero=True)
    if billing_email is not _KEEP:
        values["billing_email"] = normalize_emails(billing_email)
    if account_class is not _KEEP:
        values["account_class"] = normalize_class(account_class)
        if (known_classes is not None and values["account_class"] is not None
                and values["account_class"] not in known_classes):
            raise ValidationError(CLASS_FIELD, account_class, "is not a class in "
                                  "[dunning.classes] (known: "
                                  f"{', '.join(sorted(known_classes)) or 'none configured'})")
    changes = {k: v for k, v in values.items() if current[k] != v}
    if changes:
        uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            **changes, updated_at=uow.now()))
        audit.record(uow, "updated", "account", account_id, entity_ref=current["ext_id"],
                     account_id=account_id, before={k: current[k] for k in changes},
                     after=changes)
    if "credit_limit_override_minor" in changes:
        uow.touch(account_id)
    return changes


def mark_crm_deleted(uow: UnitOfWork, account_id: int) -> None:
    current = get_account(uow.conn, account_id)
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        status="crm_deleted", updated_at=uow.now()))
    audit.record(uow, "updated", "account", account_id, entity_ref=current["ext_id"],
                 account_id=account_id, before={"status": current["status"]},
                 after={"status": "crm_deleted"})


def set_credit_limit(uow: UnitOfWork, account_id: int, limit: str | Decimal | None) -> None:
    account = get_account(uow.conn, account_id)
    minor = None if limit in (None, "") else parse_amount(
        limit, account["currency"], "credit_limit", allow_zero=True)
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        credit_limit_minor=minor, updated_at=uow.now()))
    uow.touch(account_id)
    audit.record(uow, "updated", "account", account_id, entity_ref=account["ext_id"],
                 account_id=account_id, before={"credit_limit_minor": account["credit_limit_minor"]},
                 after={"credit_limit_minor": minor})


def set_crm_hold(uow: UnitOfWork, account_id: int, on_hold: bool) -> None:
    account = get_account(uow.conn, account_id)
    uow.conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        crm_hold=bool(on_hold), updated_at=uow.now()))
    uow.touch(account_id)
    audit.record(uow, "updated", "account", account_id, entity_ref=account["ext_id"],
                 account_id=account_id, before={"crm_hold": account["crm_hold"]},
                 after={"crm_hold": bool(on_hold)})


def count_accounts(conn: Connection) -> int:
    """How many accounts there are: the bill run looks at every one (its progress total)."""
    return int(conn.execute(select(func.count()).select_from(accounts)).scalar_one())


def list_accounts(conn: Connection, *, after_id: int = 0, limit: int = 100) -> list[RowMapping]:
    return list(conn.execute(select(accounts).where(accounts.c.id > after_id)
                             .order_by(accounts.c.id).limit(limit)).mappings())


def touched_since(conn: Connection, since: datetime) -> list[int]:
    return [r[0] for r in conn.execute(select(accounts.c.id).where(accounts.c.updated_at >= since))]


def changed_since(conn: Connection, since: datetime) -> set[int]:
    """Accounts whose billing figures or holds may have moved since ``since``: the account row,
    a posted or voided invoice, a payment, an application or its reversal, a memo activated or
    cancelled, a hold change, an order placed or activated, a provisioning request updated."""
    parts = [
        select(accounts.c.id.label("a")).where(accounts.c.updated_at >= since),
        select(invoices.c.account_id).where(or_(invoices.c.posted_at >= since,
                                                invoices.c.voided_at >= since)),
        select(payments.c.account_id).where(payments.c.created_at >= since),
        select(applications.c.account_id).where(or_(applications.c.applied_at >= since,
                                                    applications.c.reversed_at >= since)),
        select(credit_memos.c.account_id).where(or_(credit_memos.c.activated_at >= since,
                                                    credit_memos.c.cancelled_at >= since)),
        select(debit_memos.c.account_id).where(or_(debit_memos.c.activated_at >= since,
                                                   debit_memos.c.cancelled_at >= since)),
        select(hold_history.c.account_id).where(hold_history.c.at >= since),
        select(orders.c.account_id).where(or_(orders.c.created_at >= since,
                                              orders.c.activated_at >= since)),
        select(provisioning_requests.c.account_id).where(
            provisioning_requests.c.updated_at >= since),
    ]
    return {int(r[0]) for r in conn.execute(union(*parts))}


@quick_init
@dataclass(frozen=True)
class UpsertResult:
    """One item's outcome: its account (None when refused), whether it was created or changed,
    and the error billing refused it with (field and value named)."""

    account_id: int | None
    created: bool = False
    changed: bool = False
    error: LedgerError | None = None


UPSERT_CHUNK = 500      # accounts per lookup / insert / update statement
_KEY = ("ext_source", "ext_object", "ext_id")


def upsert_accounts(uow: UnitOfWork, items: Sequence[AccountIn]) -> list[UpsertResult]:
    """Create or update each item by its external key, as :func:`create_account` and
    :func:`update_account` would one by one, in the order given (an item repeating an earlier
    key updates what the earlier one wrote). A refused item (validation, currency change of an
    account with invoices) gets its error in its result and writes nothing; the others go on."""
    results: list[UpsertResult | None] = [None] * len(items)
    todo: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(items):
        try:
            todo.append((i, validate_account(item)))
        except LedgerError as exc:
            results[i] = UpsertResult(None, error=exc)
    while todo:
        # Rounds of distinct keys, so a repeated key sees what its predecessor wrote.
        seen: set[tuple[str, str, str]] = set()
        now_round: list[tuple[int, dict[str, Any]]] = []
        later: list[tuple[int, dict[str, Any]]] = []
        for i, values in todo:
            key = _ext_key(values)
            (later if key in seen else now_round).append((i, values))
            seen.add(key)
        for start in range(0, len(now_round), UPSERT_CHUNK):
            for i, result in _upsert_chunk(uow, now_round[start:start + UPSERT_CHUNK]):
                results[i] = result
        todo = later
    return [r for r in results if r is not None]


def _ext_key(values: dict[str, Any]) -> tuple[str, str, str]:
    return values["ext_source"], values["ext_object"], values["ext_id"]


def _find_by_keys(conn: Connection, keys: Sequence[tuple[str, str, str]]
                  ) -> dict[tuple[str, str, str], RowMapping]:
    groups: dict[tuple[str, str], list[str]] = {}
    for source, obj, ext_id in keys:
        groups.setdefault((source, obj), []).append(ext_id)
    found: dict[tuple[str, str, str], RowMapping] = {}
    for (source, obj), ext_ids in groups.items():
        for row in conn.execute(select(accounts).where(
                accounts.c.ext_source == source, accounts.c.ext_object == obj,
                text_in(conn, accounts.c.ext_id, ext_ids))).mappings():
            found[(row["ext_source"], row["ext_object"], row["ext_id"])] = row
    return found


def _currency_fixed(new: str, old: str) -> InvalidState:
    return InvalidState("currency", new, f"cannot change from {old}: the account has invoices")


@functools.cache
def _bulk_insert(columns: tuple[str, ...]) -> BulkInsert:
    """One compiled INSERT per column list (validate_account gives every item the same keys,
    in the same order)."""
    return BulkInsert(accounts, columns)


def _upsert_chunk(uow: UnitOfWork, chunk: list[tuple[int, dict[str, Any]]]
                  ) -> list[tuple[int, UpsertResult]]:
    conn, now = uow.conn, uow.now()
    found = _find_by_keys(conn, [_ext_key(v) for _, v in chunk])
    out: list[tuple[int, UpsertResult]] = []
    new = [(i, v) for i, v in chunk if _ext_key(v) not in found]
    changed: list[tuple[int, dict[str, Any], RowMapping, dict[str, Any]]] = []
    for i, values in chunk:
        current = found.get(_ext_key(values))
        if current is None:
            continue
        values = _keep_finance(values, current)
        changes = {k: v for k, v in values.items() if current[k] != v}
        if not changes and current["status"] == "active":
            out.append((i, UpsertResult(int(current["id"]))))
        else:
            changed.append((i, values, current, changes))
    recurrency = [int(c["id"]) for _, _, c, ch in changed if "currency" in ch]
    with_docs = {int(r[0]) for r in conn.execute(select(invoices.c.account_id).where(
        id_in(conn, invoices.c.account_id, recurrency)).distinct())} if recurrency else set()
    updates: list[dict[str, Any]] = []
    trail: list[audit.Entry] = []
    for i, values, current, changes in changed:
        account_id = int(current["id"])
        if account_id in with_docs and "currency" in changes:
            out.append((i, UpsertResult(None, error=_currency_fixed(values["currency"],
                                                                    current["currency"]))))
            continue
        updates.append({**{f"b_{k}": v for k, v in values.items() if k not in _KEY},
                        "b_id": account_id})
        if {"credit_limit_minor", "crm_hold"} & changes.keys():
            uow.touch(account_id)
        trail.append(audit.Entry("updated", "account", account_id, current["ext_id"], account_id,
                                 audit.diff({"status": current["status"],
                                             **{k: current[k] for k in changes}},
                                            {"status": "active", **changes})))
        out.append((i, UpsertResult(account_id, changed=True)))
    if updates:
        columns = [k for k in chunk[0][1] if k not in _KEY]
        conn.execute(update(accounts).where(accounts.c.id == bindparam("b_id")).values(
            {**{k: bindparam(f"b_{k}") for k in columns}, "status": "active",
             "updated_at": now}), updates)
    if new:
        new = [(i, _keep_finance(v, _FINANCE_DEFAULTS)) for i, v in new]
        keys = tuple(new[0][1])
        ids = reserve_ids(conn, accounts, len(new))
        _bulk_insert(("id", *keys, "status", "created_at", "updated_at")).run(
            conn, [(account_id, *(v[k] for k in keys), "active", now, now)
                   for account_id, (_, v) in zip(ids, new, strict=True)])
        for account_id, (i, v) in zip(ids, new, strict=True):
            uow.created(account_id)
            trail.append(audit.Entry("created", "account", account_id, v["ext_id"], account_id,
                                     audit.creation(v)))
            out.append((i, UpsertResult(account_id, created=True, changed=True)))
    audit.record_many(uow, trail)
    return out
