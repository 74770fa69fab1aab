"""Reconcile one page of CRM changes into billing, inside the caller's unit of work.

Rules kept here:
- The caller owns the transaction: the page's billing upserts, its ``sync_records`` and
  ``quarantine`` rows and the cursor (saved by the engine) commit together or not at all.
- The object's handler (``sync.handlers.HANDLERS``) maps, validates, reconciles and hands on
  each record; this module keeps what every object shares: the content hash decides (same
  hash and not deleted → nothing is written, not even ``sync_records``), one SELECT per page
  loads the known rows, a record that fails anywhere (the boundary, billing, the database)
  is quarantined alone and the page goes on, and the page's bookkeeping is written in bulk
  at its end (``sync.bookkeeping``). A record the CRM returns twice in one page is applied
  once, as last returned.
- Billing is only reached through ``billing_core.service``, by the handlers.
- Every id of a page (its records' id fields, its deletions) is put in its one form first
  (``sync.boundary.one_form``, ``same_id``), before anything looks a record up, keys, stores
  or quarantines it: a record named by its 15-character Salesforce id is the record the CRM
  reads back as 18.
- A deletion (or a record a full read no longer returns) marks its row deleted after the
  handler has told billing (an account becomes ``crm_deleted``) or the hand-off (a quote).
- A deletion closes the record's open quarantine entry, also of a record that never got a
  row (refused from its first read): nothing is left to fix, and a quote that waited for a
  refused line is handed off with its remaining lines.
- Records quarantined only because a record they name was not known (a line's or a price's
  product: the handler's ``waited_on_by``) are applied again from their stored record, in the
  page that keeps the record they name (its transaction), like ``quarantine retry`` does by
  hand; their quotes are handed on with the page's. One query finds them for the page.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from sqlalchemy import update

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import LedgerError
from connectors.base import Deletion
from sync.bookkeeping import PageBook, PageResult, known_rows, waiting_on
from sync.boundary import one_form, same_id, usable_id
from sync.handlers import HANDLERS
from sync.handlers.base import RECORD_FAILURES, failed
from sync.mapping import revive
from sync.runs import current_run
from sync.tables import sync_records

log = logging.getLogger(__name__)


def stamp_sync(uow: UnitOfWork, connection: str) -> None:
    """The audit trail's actor of the CRM cycle's changes: ``sync:<connection>`` (when the
    unit of work has the default actor), and the run's id (``sync_run:<id>``) when known."""
    if uow.actor == "system":
        uow.actor = f"sync:{connection}"
    run = current_run.get()
    if uow.run_id is None and run is not None:
        uow.run_id = f"sync_run:{run}"


def apply_page(uow: UnitOfWork, connection: str, obj: str,
               records: Sequence[Mapping[str, Any]],
               deletions: Sequence[Deletion] = ()) -> PageResult:
    """Apply one page; the caller saves the cursor and commits. Unless the caller named
    another actor (a retry by hand), the page's changes are recorded in the audit trail as
    ``sync:<connection>``, with the sync run's id."""
    stamp_sync(uow, connection)
    read = len(records) + len(deletions)
    records = _last_of_each([one_form(r) for r in records])
    deletions = [d if same_id(d.crm_id) == d.crm_id else replace(d, crm_id=same_id(d.crm_id))
                 for d in deletions]
    book = PageBook(uow, connection, obj)
    handler = HANDLERS[obj](book, records)
    res = book.result
    res.read = read
    known = known_rows(uow.conn, connection, obj,
                       [r["crm_id"] for r in records if usable_id(r.get("crm_id"))]
                       + [d.crm_id for d in deletions])
    for record in records:
        try:
            rec = handler.map(record)
        except LedgerError as problem:
            book.refuse(record, problem)
            continue
        except RECORD_FAILURES as failure:  # a mapping bug must not fail the page either
            book.refuse(record, failed(failure))
            continue
        data, digest = handler.fingerprint(record, rec)
        existing = known.get(rec.crm_id)
        if existing is not None and existing["content_hash"] == digest \
                and existing["deleted_at"] is None:
            res.unchanged += 1
            continue
        handler.take(record, rec, data, digest, existing)
    handler.finish()
    book.flush()
    for gone in deletions:
        row = known.get(gone.crm_id)
        if row is None or row["deleted_at"] is not None:
            continue
        handler.gone(row)
        uow.conn.execute(update(sync_records).where(sync_records.c.id == row["id"])
                         .values(deleted_at=uow.now(), updated_at=uow.now()))
        res.deleted += 1
        if gone.reason == "missing":
            res.disappeared.append(gone.crm_id)
        log.info("deleted in CRM connection=%s object=%s crm_id=%s reason=%s",
                 connection, obj, gone.crm_id, gone.reason)
    for record in book.let_go([d.crm_id for d in deletions]):
        handler.let_go(record)
    if handler.waited_on_by and book.cleared:
        _apply_waiting(uow, connection, obj, handler.waited_on_by, book.cleared, res)
    return res


def _apply_waiting(uow: UnitOfWork, connection: str, obj: str,
                   waiters: Sequence[tuple[str, str]], kept: Sequence[str],
                   res: PageResult) -> None:
    """Apply again, as a page of their own object in this transaction, the records quarantined
    only because one of the page's kept records was not known (their stored record: they did
    not change in the CRM, so no read returns them); the quotes they touch are the page's."""
    waiting = waiting_on(uow.conn, connection, waiters, kept)
    for other, _ in waiters:
        if other not in waiting:
            continue
        again = apply_page(uow, connection, other, [
            revive(json.loads(text, parse_float=Decimal)) for text in waiting[other]])
        res.quotes_touched |= again.quotes_touched
        log.info("applied again connection=%s object=%s records=%s applied=%s refused=%s "
                 "waiting on %s", connection, other, len(waiting[other]), again.upserted,
                 again.quarantined, obj)


def _last_of_each(records: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """The page with a record the CRM returned twice kept once, as it was last returned: its
    bookkeeping row is written once (a second insert of one key would fail the page)."""
    seen: dict[object, int] = {}
    for i, record in enumerate(records):
        key = record.get("crm_id")
        seen[key if isinstance(key, str | int) else ("#", i)] = i
    if len(seen) == len(records):
        return records
    keep = set(seen.values())
    return [r for i, r in enumerate(records) if i in keep]
