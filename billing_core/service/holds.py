"""Hold reasons and their history: who placed what, when and why.

Rules kept here
- An account is on hold while it has at least one row in ``hold_reasons``; the reasons are
  ``crm`` (the CRM's hold flag), ``credit_limit`` (exposure above the limit), ``overdue`` (a
  document unpaid past due + grace) and ``manual`` (an admin, with a note).
- Each reason records its source (``crm:<connection>``, ``billing``, ``admin:<name>``), the
  moment it was placed and its details (JSON: exposure and limit, documents, note).
- Every place and every lift writes one row to the append-only ``hold_history`` in the same
  transaction, with the actor and the figures; nothing in ``hold_history`` is updated or deleted.
  It also writes one ``audit_log`` row (``hold`` placed / lifted, by the unit of work's actor,
  with the reason, its source and the hold's own actor), so the audit trail has every change.
- Provenance: billing places and lifts only ``credit_limit`` and ``overdue``; ``crm`` follows
  the CRM's flag (only the CRM clears it); ``manual`` is lifted only by an admin's explicit
  release (:func:`release_manual_hold`). A release of a reason billing does not own is refused
  with an error that names it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from billing_core.adapters.bulk import id_in
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import hold_history, hold_reasons
from billing_core.domain.credit import HoldReason
from billing_core.domain.errors import InvalidState, RuleViolation, ValidationError
from billing_core.service import audit
from billing_core.service.accounts import get_account

REASONS: tuple[str, ...] = tuple(r.value for r in HoldReason)   # as the CLI offers them

_WHO_CLEARS: dict[str, str] = {
    HoldReason.CRM: "only the CRM clears it (finance unsets the credit-hold flag)",
    HoldReason.CREDIT_LIMIT: "billing lifts it by itself once exposure is within the limit",
    HoldReason.OVERDUE: "billing lifts it by itself once no document is overdue",
}


@dataclass(frozen=True)
class PlacedReason:
    """A row of ``hold_reasons``: a reason the account carries."""

    account_id: int
    reason: str
    source: str
    placed_at: datetime
    details: dict[str, Any]


def parse_reason(value: object) -> HoldReason:
    """A reason's name as given (CLI, API, a caller), or a ``ValidationError`` naming it."""
    if isinstance(value, str) and value in REASONS:
        return HoldReason(value)
    raise ValidationError("reason", value, f"must be one of {', '.join(REASONS)}")


def _reason(row: Any) -> PlacedReason:
    return PlacedReason(account_id=row["account_id"], reason=row["reason"], source=row["source"],
                        placed_at=row["placed_at"], details=json.loads(row["details"] or "{}"))


def current_reasons(conn: Connection, account_id: int) -> dict[str, PlacedReason]:
    rows = conn.execute(select(hold_reasons).where(hold_reasons.c.account_id == account_id)
                        .order_by(hold_reasons.c.id)).mappings()
    return {r["reason"]: _reason(r) for r in rows}


def current_reasons_many(conn: Connection, account_ids: list[int]
                         ) -> dict[int, dict[str, PlacedReason]]:
    """:func:`current_reasons` for many accounts in one query (accounts without any are left
    out)."""
    out: dict[int, dict[str, PlacedReason]] = {}
    if not account_ids:
        return out
    rows = conn.execute(select(hold_reasons).where(id_in(conn, hold_reasons.c.account_id,
                                                         account_ids))
                        .order_by(hold_reasons.c.account_id, hold_reasons.c.id)).mappings()
    for r in rows:
        out.setdefault(r["account_id"], {})[r["reason"]] = _reason(r)
    return out


def is_on_hold(conn: Connection, account_id: int) -> bool:
    return conn.execute(select(hold_reasons.c.id).where(
        hold_reasons.c.account_id == account_id).limit(1)).first() is not None


def place_reason(uow: UnitOfWork, account_id: int, reason: str, *, source: str, actor: str,
                 details: dict[str, Any]) -> None:
    """Insert a reason and its ``placed`` history row. The caller checks it is absent."""
    place_reasons(uow, [NewReason(account_id, reason, source, actor, details)])


@dataclass(frozen=True)
class NewReason:
    account_id: int
    reason: str
    source: str
    actor: str
    details: dict[str, Any]


def place_reasons(uow: UnitOfWork, items: list[NewReason]) -> None:
    """:func:`place_reason` for many: one statement per table."""
    for item in items:
        parse_reason(item.reason)
    if not items:
        return
    now = uow.now()
    bodies = [json.dumps(i.details, sort_keys=True, default=str) for i in items]
    uow.conn.execute(insert(hold_reasons), [
        {"account_id": i.account_id, "reason": i.reason, "source": i.source, "placed_at": now,
         "details": body} for i, body in zip(items, bodies, strict=True)])
    uow.conn.execute(insert(hold_history), [
        {"account_id": i.account_id, "reason": i.reason, "action": "placed", "actor": i.actor,
         "at": now, "details": body} for i, body in zip(items, bodies, strict=True)])
    audit.record_many(uow, [audit.Entry(
        "placed", "hold", f"{i.account_id}:{i.reason}", i.reason, i.account_id,
        {"reason": [None, i.reason], "source": [None, i.source], "hold_actor": [None, i.actor],
         "details": [None, i.details]}) for i in items])


def lift_reason(uow: UnitOfWork, account_id: int, reason: str, *, actor: str,
                details: dict[str, Any]) -> None:
    """Delete a reason and write its ``lifted`` history row. The caller checks ownership."""
    now = uow.now()
    uow.conn.execute(delete(hold_reasons).where(hold_reasons.c.account_id == account_id,
                                                hold_reasons.c.reason == reason))
    uow.conn.execute(insert(hold_history).values(
        account_id=account_id, reason=reason, action="lifted", actor=actor, at=now,
        details=json.dumps(details, sort_keys=True, default=str)))
    audit.record(uow, "lifted", "hold", f"{account_id}:{reason}", entity_ref=reason,
                 account_id=account_id, changes={"reason": [reason, None],
                                                 "hold_actor": [None, actor],
                                                 "details": [None, details]})


def place_manual_hold(uow: UnitOfWork, account_id: int, note: str, *, admin: str) -> None:
    """An admin puts the account on hold in billing. Only :func:`release_manual_hold` lifts it."""
    get_account(uow.conn, account_id)
    if not note or not note.strip():
        raise ValidationError("note", note, "is required: say why the account is held")
    if not admin or not admin.strip():
        raise ValidationError("admin", admin, "is required")
    if HoldReason.MANUAL in current_reasons(uow.conn, account_id):
        raise InvalidState("account", account_id, "already has a manual hold")
    place_reason(uow, account_id, HoldReason.MANUAL, source=f"admin:{admin}", actor=f"admin:{admin}",
                 details={"note": note.strip()})
    uow.touch(account_id)


def release_manual_hold(uow: UnitOfWork, account_id: int, *, admin: str,
                        reason: str = HoldReason.MANUAL) -> list[str]:
    """Lift the manual reason; returns the reasons that remain (the account stays on hold while
    any does). Releasing any other reason is refused with the rule that clears it."""
    get_account(uow.conn, account_id)
    reasons = current_reasons(uow.conn, account_id)
    if parse_reason(reason) != HoldReason.MANUAL:
        raise RuleViolation("reason", reason, f"is not released by hand: {_WHO_CLEARS[reason]}")
    if HoldReason.MANUAL not in reasons:
        others = describe_reasons(reasons)
        raise InvalidState("account", account_id, "has no manual hold to release" + (
            f"; it is on hold for: {others}" if others else " and is not on hold"))
    lift_reason(uow, account_id, HoldReason.MANUAL, actor=f"admin:{admin}",
                details={"note": reasons[HoldReason.MANUAL].details.get("note")})
    uow.touch(account_id)
    return [r for r in reasons if r != HoldReason.MANUAL]


def describe_reasons(reasons: dict[str, PlacedReason] | list[str]) -> str:
    """``crm (only the CRM clears it ...), credit_limit (...)`` for error lines and the CLI."""
    names = list(reasons)
    return ", ".join(f"{n} ({_WHO_CLEARS[n]})" if n in _WHO_CLEARS else n for n in names)


def history(conn: Connection, account_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute(select(hold_history).where(hold_history.c.account_id == account_id)
                        .order_by(hold_history.c.id.desc()).limit(limit)).mappings()
    return [{"id": r["id"], "reason": r["reason"], "action": r["action"], "actor": r["actor"],
             "at": r["at"], "details": json.loads(r["details"] or "{}")} for r in rows][::-1]


def history_after(conn: Connection, after_id: int = 0, *, limit: int = 500
                  ) -> list[dict[str, Any]]:
    """Hold history of every account in id order after ``after_id`` (keyset paging): what the
    sync pushes to the CRM and the API lists. Rows never change, so a saved id is a cursor."""
    rows = conn.execute(select(hold_history).where(hold_history.c.id > after_id)
                        .order_by(hold_history.c.id).limit(limit)).mappings()
    return [{"id": r["id"], "account_id": r["account_id"], "reason": r["reason"],
             "action": r["action"], "actor": r["actor"], "at": r["at"],
             "details": json.loads(r["details"] or "{}")} for r in rows]


def list_holds(conn: Connection, *, reason: str | None = None, after_id: int = 0,
               limit: int = 500) -> list[dict[str, Any]]:
    """Accounts on hold (optionally with a given reason), each with all its reasons."""
    if reason is not None:
        parse_reason(reason)
    ids = select(hold_reasons.c.account_id).where(hold_reasons.c.account_id > after_id)
    if reason is not None:
        ids = ids.where(hold_reasons.c.reason == reason)
    ids = ids.group_by(hold_reasons.c.account_id).order_by(hold_reasons.c.account_id).limit(limit)
    account_ids = [r[0] for r in conn.execute(ids)]
    if not account_ids:
        return []
    rows = conn.execute(select(hold_reasons).where(id_in(conn, hold_reasons.c.account_id,
                                                         account_ids))
                        .order_by(hold_reasons.c.account_id, hold_reasons.c.id)).mappings()
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(r["account_id"], {"account_id": r["account_id"], "reasons": [],
                                                 "since": r["placed_at"]})
        entry["reasons"].append(r["reason"])
        entry["since"] = min(entry["since"], r["placed_at"])
    return [out[i] for i in account_ids]


def count_on_hold(conn: Connection) -> int:
    return int(conn.execute(select(func.count(func.distinct(hold_reasons.c.account_id))))
               .scalar_one())
