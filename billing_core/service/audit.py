"""The audit trail: who changed what in the ledger, when, and the fields before and after.

Design
- One table, ``audit_log`` (id, at, actor, action, entity_type, entity_id, entity_ref,
  account_id, changes, run_id), indexed on (account_id, at) and (at). ``changes`` is JSON text
  of the fields that changed, each as ``[before, after]`` (``{"payment_terms_days": [30, 45]}``);
  a creation lists the new values against ``null``, a state move its status.
- Append-only: this module only inserts and reads; nothing in the code updates or deletes a
  row, and the migration adds a trigger on both databases that refuses UPDATE and DELETE.
- Same transaction: :func:`record` writes with ``uow.conn``, inside the unit of work of the
  change, so a rolled-back change leaves no audit row and a committed one always has it.
- Who: ``uow.actor``, set by the entry point that opened the unit of work: ``cli:<OS user>``
  (the CLI's AppContext), ``api:<token name>`` (the API's token dependency),
  ``sync:<connection>`` (the CRM cycle's pages and hand-off), ``system`` (the default: bill
  run, dunning, scheduled jobs). Billing receives only this string; ``uow.run_id`` optionally
  ties rows to a request or run.
- Service functions call :func:`record` (one row) or :func:`record_many` (one multi-row insert:
  the bill run's invoices, a sync page's accounts), never the CLI or the API, so every path is
  covered by the same code.

Actions by entity type
- ``invoice``: created, posted, voided; ``credit_memo`` / ``debit_memo``: created, posted
  (activated), cancelled, applied, unapplied; ``application``: applied, unapplied (source and
  target named in ``changes``); ``payment``: recorded, applied, unapplied;
- ``hold``: placed, lifted (besides ``hold_history``, which stays as it was);
- ``subscription``: quantity_changed, ended; ``order``: placed, amended, cancelled;
- ``account``: created, updated (terms, bill cycle day, tax exemption, limit, billing email,
  account class);
- ``product``: terms_updated; ``tax_rate``: set, imported; ``api_token``: created, revoked;
- ``price``: set (new, or its unit price / tiers changed; the same price again writes nothing);
  ``one_time_charge``: created (per charge of a placed order);
- ``email``: sent, dead, failed, skipped (a sender finished the row), retried, cancelled (by
  hand), queued (a dunning reminder); ``dunning``: run.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select

from billing_core.adapters.bulk import BulkInsert
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import audit_log
from billing_core.domain.errors import ValidationError

# Rows per INSERT in :func:`record_many` (well under SQLite's 32,766 bound parameters: 9 each).
CHUNK = 1000


_AS_IS = frozenset({type(None), bool, int, str})


def _plain(value: Any) -> Any:
    """A JSON-able form: Decimal as its shortest exact text, dates ISO, the rest as is."""
    if type(value) in _AS_IS:
        return value
    if isinstance(value, float):
        value = Decimal(str(value))
    if isinstance(value, Decimal):
        # one spelling per number (PostgreSQL's NUMERIC gives 2.0000000000 for 2)
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields whose value differs, as ``{field: [before, after]}``; a field present on one
    side only counts as ``None`` on the other."""
    b, a = before or {}, after or {}
    out: dict[str, Any] = {}
    for key in list(b) + [k for k in a if k not in b]:
        old, new = _plain(b.get(key)), _plain(a.get(key))
        if old != new:
            out[key] = [old, new]
    return out


def _default(value: Any) -> Any:
    plain = _plain(value)
    if plain is value:
        raise TypeError(f"{type(value).__name__} is not JSON-able")
    return plain


def creation(values: Mapping[str, Any]) -> str:
    """``diff(None, values)`` as JSON text, fast: the new row's set fields as
    ``[null, value]``, plain values encoded as they are (a sync page of new accounts). Text,
    whole numbers and true/false are written field by field (12 -> 4 us an account on the
    sync's first pull), the exact text of :func:`_creation_text`, which any other value type
    takes."""
    parts = []
    for key, value in sorted(values.items()):
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            text = _quote(value)
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is int:
            text = int.__repr__(value)
        else:
            return _creation_text(values)
        head = _HEADS.get(key)
        if head is None:
            head = _HEADS[key] = _quote(key) + ": [null, "
        parts.append(head + text)
    return "{" + "], ".join(parts) + "]}" if parts else "{}"


_quote = json.encoder.encode_basestring_ascii      # what json.dumps uses (ensure_ascii)
_HEADS: dict[str, str] = {}                         # a field's name as the text's key


def _creation_text(values: Mapping[str, Any]) -> str:
    """:func:`creation` through the generic encoder."""
    return json.dumps({k: [None, v] for k, v in values.items() if v is not None},
                      sort_keys=True, default=_default)


@dataclass(frozen=True)
class Entry:
    """One audit row to write (see :func:`record_many`). ``changes`` is a mapping of
    ``{field: [before, after]}``, or that mapping already as JSON text (plain values, keys
    sorted: the bill run builds it so, skipping the conversion of each value)."""

    action: str
    entity_type: str
    entity_id: object = None
    entity_ref: object = None
    account_id: int | None = None
    changes: Mapping[str, Any] | str | None = None


def _values(at: datetime, actor: str, run_id: str | None, e: Entry) -> tuple[Any, ...]:
    """The row of ``e`` in the order of :data:`_COLS`."""
    return (at, actor, e.action, e.entity_type,
            None if e.entity_id is None else str(e.entity_id),
            None if e.entity_ref is None else str(e.entity_ref)[:255],
            e.account_id,
            e.changes if isinstance(e.changes, str)
            else json.dumps(dict(e.changes or {}), sort_keys=True, default=_default),
            run_id)


def record(uow: UnitOfWork, action: str, entity_type: str, entity_id: object = None, *,
           entity_ref: object = None, account_id: int | None = None,
           before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
           changes: Mapping[str, Any] | None = None) -> None:
    """Write one audit row in ``uow``'s transaction: ``changes`` as given, else the fields that
    differ between ``before`` and ``after``."""
    record_many(uow, [Entry(action, entity_type, entity_id, entity_ref, account_id,
                            changes if changes is not None else diff(before, after))])


_COLS = ("at", "actor", "action", "entity_type", "entity_id", "entity_ref", "account_id",
         "changes", "run_id")
_BULK = BulkInsert(audit_log, _COLS)


def record_many(uow: UnitOfWork, entries: Sequence[Entry]) -> None:
    """Many audit rows in one bulk statement per :data:`CHUNK` (SQLite: one executemany;
    PostgreSQL: one COPY): the bill run's invoices, a sync page's accounts."""
    if not entries:
        return
    at, actor, run_id = uow.now(), uow.actor or "system", uow.run_id
    if len(entries) == 1:
        uow.conn.execute(insert(audit_log).values(
            dict(zip(_COLS, _values(at, actor, run_id, entries[0]), strict=True))))
        return
    for start in range(0, len(entries), CHUNK):
        _BULK.run(uow.conn, [_values(at, actor, run_id, e)
                             for e in entries[start:start + CHUNK]])


def _parse_since(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        parsed = (datetime.fromisoformat(value) if isinstance(value, str) else None)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValidationError("since", value, "must be a date or time (YYYY-MM-DD[THH:MM])")
    return parsed


def list_entries(conn: Connection, *, account_id: int | None = None, since: object = None,
                 entity_type: str | None = None, actor: str | None = None,
                 after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Audit rows in id order after ``after_id`` (keyset paging: rows never change, so an id is
    a cursor), filtered by account, time (``since`` inclusive), entity type and actor (exact,
    or a prefix ending in ``:`` or ``*``: ``api:`` or ``cli:*``)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise ValidationError("limit", limit, "must be a whole number from 1 to 10000")
    start = _parse_since(since)
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    q = select(audit_log).where(audit_log.c.id > after_id)
    if account_id is not None:
        q = q.where(audit_log.c.account_id == account_id)
    if start is not None:
        q = q.where(audit_log.c.at >= start)
    if entity_type:
        q = q.where(audit_log.c.entity_type == entity_type)
    if actor:
        if actor.endswith("*") or actor.endswith(":"):
            q = q.where(audit_log.c.actor.startswith(actor.rstrip("*"), autoescape=True))
        else:
            q = q.where(audit_log.c.actor == actor)
    rows = conn.execute(q.order_by(audit_log.c.id).limit(limit)).mappings()
    return [{"id": r["id"], "at": r["at"], "actor": r["actor"], "action": r["action"],
             "entity_type": r["entity_type"], "entity_id": r["entity_id"],
             "entity_ref": r["entity_ref"], "account_id": r["account_id"],
             "changes": json.loads(r["changes"] or "{}"), "run_id": r["run_id"]} for r in rows]

