"""Applications: a credit memo or a payment (the source) settling an invoice or a debit memo
(the target). The one place where ``applied_minor`` of sources and targets moves.

Rules kept here
- Source and target belong to the same account and have the same currency.
- Targets: invoices posted/partially_paid, debit memos active/partially_paid (never a void,
  draft, cancelled or paid one). Sources: credit memos active/partially_applied, payments.
- An application never exceeds the source's unapplied balance nor the target's open balance.
  Both are enforced by *guarded* UPDATEs (``applied + x <= amount``, status still open) whose
  row count is checked, so two applications racing on PostgreSQL cannot over-apply: the second
  UPDATE waits for the first's row lock, re-reads the row and no longer matches.
- Status follows the new applied amount in the same UPDATE (``documents.settled_status``).
- ``unapply`` sets ``reversed_at`` (rows are never deleted) and gives the amount back to both
  sides, recomputing their statuses. Unapplying part of an application reverses it and records
  its remainder as a new live application of the same source and target (an application's
  amount never changes), so both sides lose exactly the part. A credit memo's return to the
  credit pool (target type ``credit_grant``, see ``credits``) is final and is not reversed here.
- Every change touches the account (credit control re-evaluates its holds at commit).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import applications
from billing_core.domain.errors import (
    CurrencyMismatch,
    InsufficientBalance,
    InvalidState,
    NotFound,
    RuleViolation,
    ValidationError,
)
from billing_core.domain.money import Money
from billing_core.service import audit
from billing_core.service.documents import (
    OPEN_SOURCE,
    OPEN_TARGET,
    SETTLED,
    TABLES,
    amount_col,
    atomic,
    balance,
    find,
    inserted_id,
    parse_money,
    resolve_target,
    settled_status,
)

POOL_TARGET = "credit_grant"


def _fmt(minor: int, doc: RowMapping) -> str:
    return str(Money.of_minor(minor, doc["currency"]))


def check_pair(source_type: str, source: RowMapping, target_type: str, target: RowMapping,
               amount_minor: int, *, field: str = "amount", value: object = None) -> None:
    """Raise the first rule the application ``source → target`` of ``amount_minor`` breaks;
    ``value`` is the amount as the user gave it (errors name it)."""
    shown = amount_minor if value is None else value
    label = target["number"] or f"{target_type}:{target['id']}"
    if target["account_id"] != source["account_id"]:
        raise RuleViolation("target", label, f"belongs to another account than {source_type} "
                                             f"{source.get('number') or source['id']}")
    if target["currency"] != source["currency"]:
        raise CurrencyMismatch("target", f"{label} ({target['currency']})", source["currency"])
    if target["status"] not in OPEN_TARGET[target_type]:
        raise InvalidState("target", label, f"is {target['status']}: only "
                                            f"{'/'.join(OPEN_TARGET[target_type])} can be settled")
    if source_type in OPEN_SOURCE and source["status"] not in OPEN_SOURCE[source_type]:
        raise InvalidState(source_type, source["number"] or source["id"],
                           f"is {source['status']}: only active memos can be applied")
    if amount_minor > balance(source, source_type):
        raise InsufficientBalance(field, shown, f"exceeds the unapplied balance "
                                               f"{_fmt(balance(source, source_type), source)} "
                                               f"of the {source_type}")
    if amount_minor > balance(target, target_type):
        raise InsufficientBalance(field, shown, f"exceeds the open balance "
                                               f"{_fmt(balance(target, target_type), target)} "
                                               f"of {label}")


def move_applied(uow: UnitOfWork, doc_type: str, doc_id: int, delta: int, *,
                 open_only: bool) -> bool:
    """Add ``delta`` to a document's applied amount if it stays within 0..amount (guarded)."""
    table = TABLES[doc_type]
    new_applied = table.c.applied_minor + delta
    values: dict[str, Any] = {"applied_minor": new_applied}
    if doc_type in SETTLED:
        values["status"] = settled_status(doc_type, new_applied, amount_col(table))
    stmt = update(table).where(table.c.id == doc_id, new_applied >= 0,
                               new_applied <= amount_col(table))
    if open_only and doc_type in OPEN_TARGET:
        stmt = stmt.where(table.c.status.in_(OPEN_TARGET[doc_type]))
    if open_only and doc_type in OPEN_SOURCE:
        stmt = stmt.where(table.c.status.in_(OPEN_SOURCE[doc_type]))
    return uow.conn.execute(stmt.values(**values)).rowcount == 1


@atomic
def apply(uow: UnitOfWork, source_type: str, source: RowMapping, target_type: str,
          target: RowMapping, amount_minor: int, *, field: str = "amount",
          value: object = None) -> int:
    """Apply ``amount_minor`` of ``source`` to ``target`` (rows as read); returns the
    application id. Raises (and writes nothing) when a rule is broken."""
    check_pair(source_type, source, target_type, target, amount_minor, field=field, value=value)
    shown = amount_minor if value is None else value
    if not move_applied(uow, source_type, source["id"], amount_minor, open_only=True):
        raise InsufficientBalance(field, shown, f"the {source_type} changed meanwhile "
                                                       "and no longer covers it")
    if not move_applied(uow, target_type, target["id"], amount_minor, open_only=True):
        raise InsufficientBalance(field, shown, f"the {target_type} "
                                                       f"{target['number'] or target['id']} "
                                                       "changed meanwhile and no longer takes it")
    app_id = inserted_id(uow.conn.execute(insert(applications).values(
        account_id=source["account_id"], source_type=source_type, source_id=source["id"],
        target_type=target_type, target_id=target["id"], amount_minor=amount_minor,
        applied_at=uow.now())))
    uow.touch(int(source["account_id"]))
    audit.record(uow, "applied", source_type, source["id"],
                 entity_ref=source.get("number") or source.get("reference"),
                 account_id=int(source["account_id"]), changes={
                     "applied_minor": [int(source["applied_minor"]),
                                       int(source["applied_minor"]) + amount_minor],
                     "application_id": [None, int(app_id)],
                     "target": [None, target["number"] or f"{target_type}:{target['id']}"],
                     "amount_minor": [None, amount_minor]})
    return int(app_id)


@atomic
def apply_many(uow: UnitOfWork, source_type: str, source_id: int,
               targets: Sequence[Mapping[str, Any]]) -> list[int]:
    """Apply one source to ``targets`` (``[{"target": ref, "amount": "10.00"}]``): all or
    nothing; errors name ``applications[i].target`` / ``.amount``. Every target is resolved and
    every amount parsed first; then the rows are updated in (type, id) order, so two
    transactions applying to the same documents lock them in the same order (no deadlock)."""
    if not targets:
        raise ValidationError("applications", [], "give at least one target and amount")
    currency = find(uow.conn, source_type, source_id)["currency"]
    plan = []
    for i, item in enumerate(targets):
        if not isinstance(item, Mapping):
            raise ValidationError(f"applications[{i}]", item, "must be {target, amount}")
        target_type, target = resolve_target(uow.conn, item.get("target"),
                                             field=f"applications[{i}].target",
                                             target_type=item.get("target_type"))
        minor = parse_money(item.get("amount"), currency, f"applications[{i}].amount")
        plan.append((target_type, int(target["id"]), i, minor, item.get("amount")))
    ids = []
    for target_type, target_id, i, minor, value in sorted(plan):
        ids.append(apply(uow, source_type, find(uow.conn, source_type, source_id), target_type,
                         find(uow.conn, target_type, target_id), minor,
                         field=f"applications[{i}].amount", value=value))
    return ids


@atomic
def unapply(uow: UnitOfWork, application_id: int, *,
            amount_minor: int | None = None) -> RowMapping:
    """Reverse one live application, or only ``amount_minor`` of it (see the module rules);
    returns it (with ``reversed_at`` set)."""
    row = uow.conn.execute(select(applications).where(
        applications.c.id == application_id)).mappings().first()
    if row is None:
        raise NotFound("application", application_id)
    whole = int(row["amount_minor"])
    if amount_minor is not None and not 0 < amount_minor <= whole:
        source = find(uow.conn, row["source_type"], row["source_id"])
        raise ValidationError("amount", str(Money.of_minor(amount_minor, source["currency"])),
                              f"must be more than 0 and at most the "
                              f"{_fmt(whole, source)} applied")
    if row["target_type"] not in OPEN_TARGET:
        raise InvalidState("application", application_id,
                           f"moved credit to the {row['target_type']}: that is final")
    done = uow.conn.execute(update(applications).where(
        applications.c.id == application_id, applications.c.reversed_at.is_(None),
    ).values(reversed_at=uow.now())).rowcount
    if done != 1:
        raise InvalidState("application", application_id, "is already reversed")
    amount = whole if amount_minor is None else amount_minor
    if amount < whole:
        uow.conn.execute(insert(applications).values(
            account_id=row["account_id"], source_type=row["source_type"],
            source_id=row["source_id"], target_type=row["target_type"],
            target_id=row["target_id"], amount_minor=whole - amount, applied_at=uow.now()))
    for doc_type, doc_id in ((row["source_type"], row["source_id"]),
                             (row["target_type"], row["target_id"])):
        if not move_applied(uow, doc_type, doc_id, -amount, open_only=False):
            raise InvalidState("application", application_id,
                               f"the {doc_type} {doc_id} does not hold {amount} applied")
    uow.touch(int(row["account_id"]))
    source = find(uow.conn, row["source_type"], row["source_id"])
    target = find(uow.conn, row["target_type"], row["target_id"])
    audit.record(uow, "unapplied", row["source_type"], row["source_id"],
                 entity_ref=source.get("number") or source.get("reference"),
                 account_id=int(row["account_id"]), changes={
                     "applied_minor": [int(source["applied_minor"]) + amount,
                                       int(source["applied_minor"])],
                     "application_id": [int(application_id), None],
                     "target": [target["number"] or f"{row['target_type']}:{row['target_id']}",
                                None],
                     "amount_minor": [amount, None]})
    return uow.conn.execute(select(applications).where(
        applications.c.id == application_id)).mappings().one()


def live_applications(conn: Connection, *, source_type: str | None = None,
                      source_id: int | None = None, target_type: str | None = None,
                      target_id: int | None = None,
                      account_id: int | None = None) -> list[RowMapping]:
    stmt = select(applications).where(applications.c.reversed_at.is_(None))
    for col, value in (("source_type", source_type), ("source_id", source_id),
                       ("target_type", target_type), ("target_id", target_id),
                       ("account_id", account_id)):
        if value is not None:
            stmt = stmt.where(applications.c[col] == value)
    return list(conn.execute(stmt.order_by(applications.c.id)).mappings())
