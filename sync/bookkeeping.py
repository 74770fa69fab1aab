"""What the sync writes of its own for a page: ``sync_records`` and ``quarantine``.

Rules kept here:
- Records are keyed by ``(connection, object, crm_id)``; one SELECT per page loads the known
  rows (:func:`known_rows`, without their stored ``data``).
- A page's new and changed rows are written in bulk when the page ends (:meth:`PageBook.flush`:
  COPY on PostgreSQL, compiled executemany otherwise), with one time stamp for the page.
- A record that is kept clears its open quarantine entry ("retried when it changes"); one
  indexed probe first, because usually nothing of the object is in quarantine.
- A record deleted in (or missing from) the CRM closes its open quarantine entry too
  (:meth:`PageBook.let_go`: ``resolved``, the reason saying so), whether or not it was ever
  kept: nothing is left to fix, and a quote waiting for that line goes on without it.
- A refused record is quarantined alone with the field, value and problem of its
  ``LedgerError`` (mapping's ``Invalid`` is one); a repeat counts an attempt.
- The records waiting on kept ones (:func:`waiting_on`: quarantined naming, in a field, a
  record that was not known) are found by the entry's field and value, one query for the
  page's kept records, without reading any stored JSON in SQL.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    bindparam,
    insert,
    literal,
    or_,
    select,
    update,
)

from billing_core.adapters.bulk import BulkInsert, executemany, text_in
from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import LedgerError
from sync import boundary, mapping
from sync.runs import current_run
from sync.tables import quarantine, sync_records

log = logging.getLogger(__name__)

#: Put before the reason of an entry closed because its record left the CRM.
GONE_FROM_CRM = "deleted in the CRM; it was refused: "


@dataclass
class PageResult:
    read: int = 0
    upserted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    deleted: int = 0
    quotes_touched: set[str] = field(default_factory=set)
    deleted_quotes: set[str] = field(default_factory=set)
    disappeared: list[str] = field(default_factory=list)


#: What reconciling needs of a known record (not its stored ``data``).
_KNOWN = (sync_records.c.id, sync_records.c.crm_id, sync_records.c.ledger_id,
          sync_records.c.parent_crm_id, sync_records.c.content_hash, sync_records.c.deleted_at)


def known_rows(conn: Connection, connection: str, obj: str,
               crm_ids: Iterable[str]) -> dict[str, RowMapping]:
    ids = list(dict.fromkeys(crm_ids))
    if not ids:
        return {}
    rows = conn.execute(select(*_KNOWN).where(
        sync_records.c.connection == connection, sync_records.c.object == obj,
        text_in(conn, sync_records.c.crm_id, ids))).mappings()
    return {r["crm_id"]: r for r in rows}


def ledger_id_of(conn: Connection, connection: str, obj: str, crm_id: str) -> int | None:
    found = conn.execute(select(sync_records.c.ledger_id).where(
        sync_records.c.connection == connection, sync_records.c.object == obj,
        sync_records.c.crm_id == crm_id, sync_records.c.deleted_at.is_(None))).scalar()
    return None if found is None else int(found)


# A page's new and changed bookkeeping rows, compiled once (bulk: COPY on PostgreSQL; each
# column's bind processor applied once per distinct value), not per row by SQLAlchemy.
_ROW = ("ledger_id", "parent_crm_id", "content_hash", "modstamp", "data", "updated_at",
        "deleted_at")
_INSERT = BulkInsert(sync_records, ("connection", "object", "crm_id", *_ROW))
_UPDATE = update(sync_records).where(
    sync_records.c.id == bindparam("k_id", type_=sync_records.c.id.type)).values(
    {c: bindparam(f"v_{c}", type_=sync_records.c[c].type) for c in _ROW})
_UPDATE_NAMES = ("k_id", *(f"v_{c}" for c in _ROW))


class PageBook:
    """One page's bookkeeping: counts, the rows to keep (written in bulk by :meth:`flush`)
    and the records refused (quarantined at once)."""

    def __init__(self, uow: UnitOfWork, connection: str, obj: str) -> None:
        self.uow, self.connection, self.obj = uow, connection, obj
        self.inserts: list[tuple[Any, ...]] = []
        self.updates: list[tuple[Any, ...]] = []
        self.cleared: list[str] = []
        self.result = PageResult()
        self.now = uow.now()                    # one time stamp for the page's rows

    def keep(self, existing: RowMapping | None, crm_id: str, digest: str,
             ledger_id: int | None, parent: str | None, data: str | None,
             modstamp: Any) -> None:
        row = (ledger_id, parent, digest, modstamp if isinstance(modstamp, datetime) else None,
               data, self.now, None)
        if existing is None:
            self.inserts.append((self.connection, self.obj, crm_id, *row))
        else:
            self.updates.append((existing["id"], *row))
        self.cleared.append(crm_id)
        self.result.upserted += 1

    def refuse(self, record: Mapping[str, Any], problem: LedgerError) -> None:
        quarantine_record(self.uow, self.connection, self.obj, record, problem)
        self.result.quarantined += 1

    def flush(self) -> None:
        conn = self.uow.conn
        _INSERT.run(conn, self.inserts)
        executemany(conn, _UPDATE, _UPDATE_NAMES, self.updates)
        if self.cleared and self._any_open():
            self._resolve(self.cleared)

    def let_go(self, crm_ids: list[str]) -> list[Mapping[str, Any]]:
        """Close the open quarantine entries of these records, deleted in (or missing from)
        the CRM; returns the records those entries kept, as stored."""
        if not crm_ids or not self._any_open():
            return []
        conn = self.uow.conn
        where = (quarantine.c.connection == self.connection, quarantine.c.object == self.obj,
                 text_in(conn, quarantine.c.crm_id, crm_ids), quarantine.c.status == "open")
        entries = conn.execute(select(quarantine.c.crm_id, quarantine.c.record).where(*where)
                               .order_by(quarantine.c.crm_id)).all()
        if not entries:
            return []
        conn.execute(update(quarantine).where(*where).values(
            status="resolved", last_seen=self.now,
            reason=literal(GONE_FROM_CRM) + quarantine.c.reason))
        for crm_id, _ in entries:
            log.info("quarantine closed, deleted in CRM run=%s connection=%s object=%s "
                     "crm_id=%s", current_run.get(), self.connection, self.obj, crm_id)
        return [json.loads(record) for _, record in entries]

    def _any_open(self) -> bool:
        """One indexed probe instead of an IN list per 900 records when (as usual) nothing of
        this object is in quarantine."""
        return self.uow.conn.execute(select(quarantine.c.id).where(
            quarantine.c.status == "open", quarantine.c.connection == self.connection,
            quarantine.c.object == self.obj).limit(1)).first() is not None

    def _resolve(self, crm_ids: list[str]) -> None:
        conn = self.uow.conn
        conn.execute(update(quarantine).where(
            quarantine.c.connection == self.connection, quarantine.c.object == self.obj,
            text_in(conn, quarantine.c.crm_id, crm_ids),
            quarantine.c.status == "open").values(status="resolved", last_seen=self.now))


def quarantine_record(uow: UnitOfWork, connection: str, obj: str, record: Mapping[str, Any],
                      problem: LedgerError) -> None:
    """Open (or count again) the record's quarantine entry. Every stored value is made safe
    first (``boundary.shown``: escaped, cut to fit), so quarantining never fails on what the
    record holds."""
    conn, now = uow.conn, uow.now()
    crm_id = quarantine_key(record)
    values = {"field": boundary.shown(problem.field)[:64],
              "value": None if problem.value is None else boundary.shown(problem.value),
              "reason": boundary.shown(problem.problem),
              "record": mapping.record_json(record), "last_seen": now, "status": "open"}
    row = conn.execute(select(quarantine.c.id, quarantine.c.attempts).where(
        quarantine.c.connection == connection, quarantine.c.object == obj,
        quarantine.c.crm_id == crm_id)).first()
    if row is None:
        conn.execute(insert(quarantine).values(connection=connection, object=obj, crm_id=crm_id,
                                               first_seen=now, attempts=1, **values))
    else:
        conn.execute(update(quarantine).where(quarantine.c.id == row[0])
                     .values(attempts=row[1] + 1, **values))
    log.warning("quarantined run=%s connection=%s object=%s crm_id=%s field=%s reason=%s",
                current_run.get(), connection, obj, crm_id, values["field"], values["reason"])


def waiting_on(conn: Connection, connection: str, waiters: Sequence[tuple[str, str]],
               crm_ids: Sequence[str]) -> dict[str, list[str]]:
    """The stored records (JSON) of the open quarantine entries of the ``waiters`` ((object,
    field)) refused naming one of ``crm_ids`` in that field, by object, oldest entry first
    (one query). A usable id is its entry's value as it is (``boundary.shown``)."""
    found: dict[str, list[str]] = {}
    if not waiters or not crm_ids:
        return found
    for obj, record in conn.execute(select(quarantine.c.object, quarantine.c.record).where(
            quarantine.c.status == "open", quarantine.c.connection == connection,
            or_(*(and_(quarantine.c.object == obj, quarantine.c.field == name)
                  for obj, name in waiters)),
            text_in(conn, quarantine.c.value, sorted(set(crm_ids))))
            .order_by(quarantine.c.id)):
        found.setdefault(obj, []).append(record)
    return found


#: What ``quarantine list`` and ``GET /sync/quarantine`` show of an entry.
QUARANTINE_FIELDS = ("id", "connection", "object", "crm_id", "field", "value", "reason",
                     "attempts", "first_seen", "last_seen", "status")


def quarantine_entries(conn: Connection, *, include_closed: bool = False,
                       limit: int = 1000) -> list[dict[str, Any]]:
    """The quarantine's entries, oldest first: the open ones (records, and quotes the
    hand-off could not take), or every entry with ``include_closed``."""
    stmt = select(*(quarantine.c[name] for name in QUARANTINE_FIELDS)).order_by(
        quarantine.c.id).limit(limit)
    if not include_closed:
        stmt = stmt.where(quarantine.c.status == "open")
    return [dict(r) for r in conn.execute(stmt).mappings()]


def quarantine_key(record: Mapping[str, Any]) -> str:
    """The record's id as the quarantine keys it: as it is when it is a usable id, otherwise
    shown safely and cut to the column (an id with a NUL, or 10,000 characters, still gets
    its entry)."""
    value = record.get("crm_id")
    if value is None or value == "":
        return "(missing)"
    if isinstance(value, str) and value == boundary.shown(value) and len(value) <= 64:
        return value
    return boundary.shown(value)[:64]
