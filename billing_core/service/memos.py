"""Credit memos and debit memos: their lifecycles.

Credit memo: draft → active (numbered ``CM-xxxxxx`` from the gapless series at activation) →
partially_applied / applied as it is applied to invoices or debit memos, back on unapply;
cancelled only while nothing is applied (draft or active). Amount > 0 in the account's currency,
a reason is required. A memo that came from the credit pool (origin ``credit_conversion``) is not
cancelled: it goes back to the pool with ``credits.convert_memo_to_credits``.

Debit memo: draft → active (numbered ``DM-xxxxxx``, issue date, due after the account's payment
terms: from then on the account owes it) → partially_paid → paid; cancelled only while unpaid.
Its issue date is the activation day unless finance dates it (today or earlier, never later).

Unapplying part of a credit memo (``amount``) takes the amount back from its live applications
(to ``target`` if given), the newest first; an application partly taken back is reversed and
its remainder applied again as a new application (rows are never changed in amount).

Every function here completes or changes nothing (a savepoint), names the field and value of any
error, and touches the account when its balance moves (activation, application, unapply).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import credit_memos, debit_memos
from billing_core.domain.errors import (
    CurrencyMismatch,
    InsufficientBalance,
    InvalidState,
    LedgerError,
    ValidationError,
)
from billing_core.domain.money import Money, check_currency
from billing_core.domain.states import (
    CANCELLABLE_CREDIT_MEMO,
    CANCELLABLE_DEBIT_MEMO,
    CreditMemoStatus,
    DebitMemoStatus,
)
from billing_core.service import applications as apps
from billing_core.service import audit
from billing_core.service.accounts import get_account
from billing_core.service.documents import (
    atomic,
    find,
    inserted_id,
    list_documents,
    parse_money,
    resolve_target,
    to_view,
)
from billing_core.service.numbering import take_number

ORIGINS = ("manual", "invoice_overflow", "credit_conversion")


#: The longest reason a memo stores (its column; the API's ``max_length``).
MAX_REASON = 255


def _reason(reason: object) -> str:
    """A memo's reason, stripped: required, and refused when longer than the column holds
    (never cut short without a word)."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError("reason", reason, "is required")
    text = reason.strip()
    if len(text) > MAX_REASON:
        raise ValidationError("reason", text[:40] + "...",
                              f"is {len(text)} characters long: at most {MAX_REASON}")
    return text


def _currency(account: RowMapping, currency: object) -> str:
    if currency is None:
        return str(account["currency"])
    code = check_currency(currency)
    if code != account["currency"]:
        raise CurrencyMismatch("currency", code, str(account["currency"]))
    return code


# --- credit memos -----------------------------------------------------------------------------

@atomic
def issue_credit_memo(uow: UnitOfWork, account_id: int, amount_minor: int, reason: str, *,
                      origin: str = "manual", origin_invoice_id: int | None = None,
                      origin_grant_id: int | None = None, activate: bool = False) -> int:
    """Create a credit memo of ``amount_minor`` (already in minor units) in the account's
    currency; with ``activate`` it is numbered and usable at once. Returns its id."""
    account = get_account(uow.conn, account_id)
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ValidationError("amount_minor", amount_minor, "must be a whole number > 0")
    if origin not in ORIGINS:
        raise ValidationError("origin", origin, f"must be one of {', '.join(ORIGINS)}")
    memo_id = inserted_id(uow.conn.execute(insert(credit_memos).values(
        account_id=account_id, currency=account["currency"], status=CreditMemoStatus.DRAFT,
        amount_minor=amount_minor, applied_minor=0, reason=_reason(reason), origin=origin,
        origin_invoice_id=origin_invoice_id, origin_grant_id=origin_grant_id,
        created_at=uow.now())))
    audit.record(uow, "created", "credit_memo", memo_id, account_id=account_id,
                 after={"status": CreditMemoStatus.DRAFT.value, "amount_minor": amount_minor,
                        "origin": origin, "origin_invoice_id": origin_invoice_id})
    if activate:
        activate_credit_memo(uow, memo_id)
    return memo_id


@atomic
def create_credit_memo(uow: UnitOfWork, account_id: int, amount: object, reason: str, *,
                       currency: str | None = None, activate: bool = False) -> int:
    """A draft credit memo of a user-given ``amount`` (e.g. ``"12.50"``). Returns its id."""
    account = get_account(uow.conn, account_id)
    minor = parse_money(amount, _currency(account, currency), "amount")
    return issue_credit_memo(uow, account_id, minor, reason, activate=activate)


@atomic
def activate_credit_memo(uow: UnitOfWork, memo: object) -> dict[str, Any]:
    row = find(uow.conn, "credit_memo", memo, lock=True)
    if row["status"] != CreditMemoStatus.DRAFT:
        raise InvalidState("credit_memo", memo, f"is {row['status']}: only a draft is activated")
    done = uow.conn.execute(update(credit_memos).where(
        credit_memos.c.id == row["id"], credit_memos.c.status == CreditMemoStatus.DRAFT,
    ).values(status=CreditMemoStatus.ACTIVE, number=take_number(uow.conn, "CM"),
             activated_at=uow.now())).rowcount
    if done != 1:
        raise InvalidState("credit_memo", memo, "changed while activating it: try again")
    uow.touch(int(row["account_id"]))
    view = credit_memo_view(uow.conn, row["id"])
    _audit_state(uow, "posted", "credit_memo", row, view)
    return view


@atomic
def apply_credit_memo(uow: UnitOfWork, memo: object,
                      targets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply a memo to ``targets``: ``[{"target": "INV-000001" | "debit_memo:7",
    "amount": "10.00"}, ...]``. All of them or none. Returns the memo's new state."""
    memo_id = find(uow.conn, "credit_memo", memo)["id"]
    apps.apply_many(uow, "credit_memo", memo_id, targets)
    return credit_memo_view(uow.conn, memo_id)


@atomic
def unapply_credit_memo(uow: UnitOfWork, memo: object, *, target: object = None,
                        amount: object = None) -> dict[str, Any]:
    """Reverse the memo's live applications (all of them, or those to ``target``), or only
    ``amount`` of them (see the module rules)."""
    row = find(uow.conn, "credit_memo", memo)
    live = [a for a in apps.live_applications(uow.conn, source_type="credit_memo",
                                              source_id=row["id"])
            if a["target_type"] in ("invoice", "debit_memo")]
    if target is not None:
        target_type, target_row = resolve_target(uow.conn, target)
        live = [a for a in live if (a["target_type"], a["target_id"])
                == (target_type, target_row["id"])]
    if not live:
        raise InvalidState("credit_memo" if target is None else "target",
                           memo if target is None else target, "has nothing applied to unapply")
    if amount is None:
        for application in live:
            apps.unapply(uow, application["id"])
        return credit_memo_view(uow.conn, row["id"])
    left = parse_money(amount, row["currency"], "amount")
    applied = sum(int(a["amount_minor"]) for a in live)
    if left > applied:
        where = "" if target is None else f" to {target}"
        raise InsufficientBalance("amount", amount, f"exceeds the "
                                  f"{Money.of_minor(applied, row['currency'])} applied{where}")
    for application in sorted(live, key=lambda a: a["id"], reverse=True):
        take = min(left, int(application["amount_minor"]))
        apps.unapply(uow, application["id"], amount_minor=take)
        left -= take
        if not left:
            break
    return credit_memo_view(uow.conn, row["id"])


@atomic
def cancel_credit_memo(uow: UnitOfWork, memo: object) -> dict[str, Any]:
    return _cancel(uow, "credit_memo", memo, credit_memos, CANCELLABLE_CREDIT_MEMO,
                   CreditMemoStatus.CANCELLED, "applied: only an unapplied memo is cancelled",
                   credit_memo_view, also=_not_from_the_pool)


def _not_from_the_pool(row: Any, memo: object) -> None:
    if row["origin"] == "credit_conversion":
        raise InvalidState("credit_memo", memo, "came from the credit pool: convert it back to "
                                                "credits instead of cancelling it")


def _cancel(uow: UnitOfWork, doc_type: str, memo: object, table: Any, cancellable: Any,
            cancelled: str, refusal: str,
            view_of: Callable[[Connection, object], dict[str, Any]],
            also: Callable[[Any, object], None] | None = None) -> dict[str, Any]:
    """Cancel a memo nothing is applied to (``also`` may refuse it further): only while it is
    still cancellable and unapplied as the update runs; its account touched, the move
    audited."""
    row = find(uow.conn, doc_type, memo, lock=True)
    if row["status"] not in cancellable or row["applied_minor"] != 0:
        raise InvalidState(doc_type, memo, f"is {row['status']} with "
                                           f"{Money.of_minor(row['applied_minor'], row['currency'])} "
                                           f"{refusal}")
    if also is not None:
        also(row, memo)
    done = uow.conn.execute(update(table).where(
        table.c.id == row["id"], table.c.applied_minor == 0, table.c.status.in_(cancellable),
    ).values(status=cancelled, cancelled_at=uow.now())).rowcount
    if done != 1:
        raise InvalidState(doc_type, memo, "changed while cancelling it: try again")
    uow.touch(int(row["account_id"]))
    view = view_of(uow.conn, row["id"])
    _audit_state(uow, "cancelled", doc_type, row, view)
    return view


def credit_memo_view(conn: Connection, memo: object) -> dict[str, Any]:
    row = find(conn, "credit_memo", memo)
    view = to_view(row, "credit_memo")
    view["applications"] = [dict(a) for a in apps.live_applications(
        conn, source_type="credit_memo", source_id=row["id"])]
    return view


def list_credit_memos(conn: Connection, account_id: int | None = None,
                      status: str | None = None, *, after_id: int = 0,
                      limit: int | None = None) -> list[dict[str, Any]]:
    return list_documents(conn, "credit_memo", account_id=account_id, status=status,
                          after_id=after_id, limit=limit)


# --- debit memos ------------------------------------------------------------------------------

def _audit_state(uow: UnitOfWork, action: str, doc_type: str, before: Any,
                 after: Mapping[str, Any]) -> None:
    """The audit row of a memo's state move (status, number, dates that changed)."""
    fields = ("status", "number", "issue_date", "due_date")
    audit.record(uow, action, doc_type, before["id"], entity_ref=after.get("number"),
                 account_id=int(before["account_id"]),
                 before={k: before[k] for k in fields if k in before},
                 after={k: after.get(k) for k in fields if k in before})


def _issue_date(uow: UnitOfWork, value: object) -> date | None:
    """A debit memo's issue date as given: a date, today (UTC) or earlier."""
    if value is None:
        return None
    if not isinstance(value, date) or isinstance(value, datetime):
        raise ValidationError("issue_date", value, "must be a date (YYYY-MM-DD)")
    if value > uow.now().date():
        raise ValidationError("issue_date", value.isoformat(), "is after today (UTC): a debit "
                              "memo is owed from its issue date, which cannot be in the future")
    return value


@atomic
def create_debit_memo(uow: UnitOfWork, account_id: int, amount: object, reason: str, *,
                      currency: str | None = None, issue_date: date | None = None) -> int:
    """A draft debit memo (what the account will owe once it is activated). Returns its id.
    ``issue_date`` (today or earlier) is kept for its activation; without it, the activation
    day is its issue date."""
    account = get_account(uow.conn, account_id)
    minor = parse_money(amount, _currency(account, currency), "amount")
    issued = _issue_date(uow, issue_date)
    memo_id = inserted_id(uow.conn.execute(insert(debit_memos).values(
        account_id=account_id, currency=account["currency"], status=DebitMemoStatus.DRAFT,
        amount_minor=minor, applied_minor=0, reason=_reason(reason), issue_date=issued,
        created_at=uow.now())))
    audit.record(uow, "created", "debit_memo", memo_id, account_id=account_id,
                 after={"status": DebitMemoStatus.DRAFT.value, "amount_minor": minor,
                        "issue_date": issued})
    return memo_id


@atomic
def activate_debit_memo(uow: UnitOfWork, memo: object, *,
                        issue_date: date | None = None) -> dict[str, Any]:
    """Number and activate a draft: it is owed from its issue date (``issue_date``, else the
    one given at creation, else today) and due after the account's payment terms."""
    row = find(uow.conn, "debit_memo", memo, lock=True)
    if row["status"] != DebitMemoStatus.DRAFT:
        raise InvalidState("debit_memo", memo, f"is {row['status']}: only a draft is activated")
    account = get_account(uow.conn, row["account_id"])
    issued = _issue_date(uow, issue_date) or row["issue_date"] or uow.now().date()
    done = uow.conn.execute(update(debit_memos).where(
        debit_memos.c.id == row["id"], debit_memos.c.status == DebitMemoStatus.DRAFT,
    ).values(status=DebitMemoStatus.ACTIVE, number=take_number(uow.conn, "DM"), issue_date=issued,
             due_date=issued + timedelta(days=int(account["payment_terms_days"])),
             activated_at=uow.now())).rowcount
    if done != 1:
        raise InvalidState("debit_memo", memo, "changed while activating it: try again")
    uow.touch(int(row["account_id"]))
    view = debit_memo_view(uow.conn, row["id"])
    _audit_state(uow, "posted", "debit_memo", row, view)
    return view


@atomic
def cancel_debit_memo(uow: UnitOfWork, memo: object) -> dict[str, Any]:
    return _cancel(uow, "debit_memo", memo, debit_memos, CANCELLABLE_DEBIT_MEMO,
                   DebitMemoStatus.CANCELLED, "paid: only an unpaid memo is cancelled",
                   debit_memo_view)


def debit_memo_view(conn: Connection, memo: object) -> dict[str, Any]:
    row = find(conn, "debit_memo", memo)
    view = to_view(row, "debit_memo")
    view["applications"] = [dict(a) for a in apps.live_applications(
        conn, target_type="debit_memo", target_id=row["id"])]
    return view


def list_debit_memos(conn: Connection, account_id: int | None = None,
                     status: str | None = None, *, after_id: int = 0,
                     limit: int | None = None) -> list[dict[str, Any]]:
    return list_documents(conn, "debit_memo", account_id=account_id, status=status,
                          after_id=after_id, limit=limit)


# --- batch forms (the API's ``:apply`` / ``:unapply`` / ``:activate`` / ``:cancel``) -----------

def _batch(uow: UnitOfWork, items: Sequence[Any],
           one: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``one`` per item, each in its own savepoint: an item completes or changes nothing,
    and a bad item answers with its error without stopping the others."""
    results: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            with uow.savepoint():
                results.append({"index": index, "ok": True, "result": one(item)})
        except LedgerError as exc:
            results.append({"index": index, "ok": False, "error": exc.as_dict()})
    return results


def _field(item: Any, key: str) -> Any:
    if isinstance(item, Mapping):
        if key not in item:
            raise ValidationError(key, None, "is required")
        return item[key]
    return item


def apply_credit_memos(uow: UnitOfWork, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{"credit_memo": "CM-000001", "applications": [{"target": ..., "amount": ...}]}]``"""
    return _batch(uow, items, lambda item: apply_credit_memo(
        uow, _field(item, "credit_memo"), _field(item, "applications")))


def unapply_credit_memos(uow: UnitOfWork, items: Sequence[Any]) -> list[dict[str, Any]]:
    """Items are memo refs or ``{"credit_memo": ..., "target": optional ref, "amount":
    optional part}``."""
    return _batch(uow, items, lambda item: unapply_credit_memo(
        uow, _field(item, "credit_memo"),
        target=item.get("target") if isinstance(item, Mapping) else None,
        amount=item.get("amount") if isinstance(item, Mapping) else None))


def activate_credit_memos(uow: UnitOfWork, items: Sequence[Any]) -> list[dict[str, Any]]:
    return _batch(uow, items, lambda item: activate_credit_memo(uow, _field(item, "credit_memo")))


def cancel_credit_memos(uow: UnitOfWork, items: Sequence[Any]) -> list[dict[str, Any]]:
    return _batch(uow, items, lambda item: cancel_credit_memo(uow, _field(item, "credit_memo")))


def activate_debit_memos(uow: UnitOfWork, items: Sequence[Any]) -> list[dict[str, Any]]:
    return _batch(uow, items, lambda item: activate_debit_memo(uow, _field(item, "debit_memo")))


def cancel_debit_memos(uow: UnitOfWork, items: Sequence[Any]) -> list[dict[str, Any]]:
    return _batch(uow, items, lambda item: cancel_debit_memo(uow, _field(item, "debit_memo")))
