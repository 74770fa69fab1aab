"""What every receivables document shares: finding one, its balance, its status, voiding.

Rules kept here
- A document is named by its ledger id or its number (``INV-000001``, ``CM-000001``,
  ``DM-000001``); an unknown one is ``NotFound`` naming the field and the value.
- A document's status follows from its amount and what is applied, in one place
  (:func:`settled_status`): invoices posted → partially_paid → paid, debit memos
  active → partially_paid → paid, credit memos active → partially_applied → applied; going back
  on unapply.
- Every mutating service function runs in a savepoint (:func:`atomic`): an error anywhere inside
  leaves the ledger as it was, even when the caller goes on using the unit of work.
- An invoice can be voided only while nothing is applied and it is not void already; the
  UPDATE is guarded (``applied_minor = 0``), so a racing application cannot slip in between.
  Prepaid credit the invoice drew from the pool comes back: one ``void_return`` grant per draw
  (same amount and expiry as the grant it came from), so each grant keeps remaining = amount −
  draws. What the invoice billed (usage, charges, periods) becomes billable again, so the next
  bill run reissues it (``voiding``: only the account's latest live invoice can be voided).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    CursorResult,
    RowMapping,
    Table,
    case,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    credit_draws,
    credit_grants,
    credit_memos,
    debit_memos,
    invoices,
    payments,
)
from billing_core.domain.errors import InvalidState, NotFound, ValidationError
from billing_core.domain.ids import as_id
from billing_core.domain.money import Money, parse_amount
from billing_core.domain.states import (
    OPEN_CREDIT_MEMO,
    OPEN_DEBIT_MEMO,
    OPEN_INVOICE,
    CreditMemoStatus,
    DebitMemoStatus,
    InvoiceStatus,
)
from billing_core.service import audit, voiding

P = ParamSpec("P")
R = TypeVar("R")

TABLES: dict[str, Table] = {
    "invoice": invoices, "debit_memo": debit_memos, "credit_memo": credit_memos,
    "payment": payments,
}
# Statuses in which a target can take an application and a source can give one.
OPEN_TARGET: dict[str, tuple[str, ...]] = {"invoice": OPEN_INVOICE, "debit_memo": OPEN_DEBIT_MEMO}
OPEN_SOURCE: dict[str, tuple[str, ...]] = {"credit_memo": OPEN_CREDIT_MEMO}
# (nothing applied, part applied, all applied) per document type.
SETTLED: dict[str, tuple[str, str, str]] = {
    "invoice": (InvoiceStatus.POSTED, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAID),
    "debit_memo": (DebitMemoStatus.ACTIVE, DebitMemoStatus.PARTIALLY_PAID, DebitMemoStatus.PAID),
    "credit_memo": (CreditMemoStatus.ACTIVE, CreditMemoStatus.PARTIALLY_APPLIED,
                    CreditMemoStatus.APPLIED),
}


def atomic(fn: Callable[Concatenate[UnitOfWork, P], R]) -> Callable[Concatenate[UnitOfWork, P], R]:
    """Run ``fn(uow, ...)`` in a savepoint: it completes or changes nothing."""
    @functools.wraps(fn)
    def wrapper(uow: UnitOfWork, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with uow.savepoint():
            return fn(uow, *args, **kwargs)
    return wrapper


def parse_money(value: object, currency: str, field: str = "amount") -> int:
    """A document's amount: ``parse_amount`` with its defaults (> 0, no more decimals than the
    currency, at most ``money.MAX_MINOR``), refused as an ``InvalidAmount`` naming the field,
    never a database error."""
    return parse_amount(value, currency, field)


def amount_col(table: Table) -> ColumnElement[Any]:
    return table.c.total_minor if table is invoices else table.c.amount_minor


def settled_status(doc_type: str, new_applied: ColumnElement[Any] | int,
                   amount: ColumnElement[Any] | int) -> Any:
    """SQL expression (or value) of the status a document has with ``new_applied`` applied."""
    none, part, full = SETTLED[doc_type]
    if isinstance(new_applied, int) and isinstance(amount, int):
        return none if new_applied == 0 else full if new_applied == amount else part
    applied_col = literal(new_applied) if isinstance(new_applied, int) else new_applied
    return case((applied_col == 0, none), (applied_col == amount, full), else_=part)


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just made."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the INSERT returned no primary key")
    return int(key[0])


def find(conn: Connection, doc_type: str, ref: object, *, field: str | None = None,
         lock: bool = False) -> RowMapping:
    """The document of ``doc_type`` with id or number ``ref``; ``lock`` takes a row lock."""
    table = TABLES[doc_type]
    field = field or doc_type
    text = str(ref).strip() if ref is not None else ""
    if isinstance(ref, bool) or not text:
        raise ValidationError(field, ref, "is required: give an id or a number")
    if text.isdigit():              # an id: one a table cannot hold names no document
        doc_id = as_id(text)
        if doc_id is None:
            raise NotFound(field, ref)
        cond = table.c.id == doc_id
    elif "number" in table.c:
        cond = table.c.number == text.upper()
    else:
        raise NotFound(field, ref)
    stmt = select(table).where(cond)
    if lock:
        stmt = stmt.with_for_update()
    row = get_mapping(conn, stmt)
    if row is None:
        raise NotFound(field, ref)
    return row


def get_mapping(conn: Connection, stmt: Any) -> RowMapping | None:
    return conn.execute(stmt).mappings().first()


def resolve_target(conn: Connection, ref: object, *, field: str = "target",
                   target_type: str | None = None) -> tuple[str, RowMapping]:
    """An invoice or debit memo named by its number, by ``type:id`` or, with ``target_type``
    given, by a bare id."""
    text = str(ref).strip() if ref is not None else ""
    if ":" in text:
        target_type, text = (part.strip() for part in text.split(":", 1))
    elif text and not text.isdigit() and target_type is None:
        for doc_type in OPEN_TARGET:
            table = TABLES[doc_type]
            row = get_mapping(conn, select(table).where(table.c.number == text.upper()))
            if row is not None:
                return doc_type, row
        raise NotFound(field, ref)
    if target_type not in OPEN_TARGET:
        raise ValidationError(field, ref, "must be an invoice or debit memo number, "
                                          "or invoice:<id> / debit_memo:<id>")
    return target_type, find(conn, target_type, text, field=field)


def balance(doc: RowMapping, doc_type: str) -> int:
    amount = doc["total_minor"] if doc_type == "invoice" else doc["amount_minor"]
    return int(amount) - int(doc["applied_minor"])


@atomic
def void_invoice(uow: UnitOfWork, invoice: object) -> RowMapping:
    """Void an invoice (id or number) that has nothing applied. Returns the voided row."""
    row = find(uow.conn, "invoice", invoice, lock=True)
    if row["status"] == InvoiceStatus.VOID:
        raise InvalidState("invoice", invoice, "is already void")
    if row["applied_minor"] != 0:
        applied = Money.of_minor(row["applied_minor"], row["currency"])
        raise InvalidState("invoice", invoice, f"has {applied} applied: unapply first")
    voiding.check_voidable(uow, row)
    done = uow.conn.execute(update(invoices).where(
        invoices.c.id == row["id"], invoices.c.applied_minor == 0,
        invoices.c.status != InvoiceStatus.VOID,
    ).values(status=InvoiceStatus.VOID, voided_at=uow.now())).rowcount
    if done != 1:
        raise InvalidState("invoice", invoice, "changed while voiding it: try again")
    voiding.release_billed(uow, row)
    label = row["number"] or f"invoice:{row['id']}"
    for draw in uow.conn.execute(select(credit_draws, credit_grants.c.expires_on).join(
            credit_grants, credit_grants.c.id == credit_draws.c.grant_id).where(
            credit_draws.c.invoice_id == row["id"]).order_by(credit_draws.c.id)).mappings():
        uow.conn.execute(insert(credit_grants).values(
            account_id=row["account_id"], currency=row["currency"], kind="void_return",
            amount_minor=draw["amount_minor"], remaining_minor=draw["amount_minor"],
            expires_on=draw["expires_on"], source=f"void:{label}"[:128],
            reason=f"credit drawn by {label} (grant {draw['grant_id']}) returned: invoice void",
            created_at=uow.now()))
    uow.touch(int(row["account_id"]))
    audit.record(uow, "voided", "invoice", row["id"], entity_ref=row["number"],
                 account_id=int(row["account_id"]), before={"status": row["status"]},
                 after={"status": InvoiceStatus.VOID.value})
    return find(uow.conn, "invoice", row["id"])


def list_documents(conn: Connection, doc_type: str, *, account_id: int | None = None,
                   status: str | None = None, after_id: int = 0,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """Documents of ``doc_type`` in id order, optionally of one account and in one status;
    a keyset page with ``after_id`` / ``limit`` (read in SQL, not sliced in memory)."""
    table = TABLES[doc_type]
    stmt = select(table).where(table.c.id > after_id).order_by(table.c.id).limit(limit)
    if account_id is not None:
        stmt = stmt.where(table.c.account_id == account_id)
    if status is not None:
        stmt = stmt.where(table.c.status == status)
    return [to_view(r, doc_type) for r in conn.execute(stmt).mappings()]


def to_view(doc: RowMapping, doc_type: str) -> dict[str, Any]:
    """A document as plain data (the CLI's and the API's answer), with its open balance."""
    data = dict(doc)
    data["type"] = doc_type
    data["balance_minor"] = balance(doc, doc_type)
    return data
