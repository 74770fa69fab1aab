"""Reconcile one page of CRM changes into billing, inside the caller's unit of work.

Rules kept here:
- The caller owns the transaction: the page's billing upserts, its ``sync_records`` and
  ``quarantine`` rows and the cursor (saved by the engine) commit together or not at all.
- Records are keyed by ``(connection, object, crm_id)``; the content hash decides: same hash →
  nothing is written (not even ``sync_records``). One SELECT per page loads the known rows.
- Billing is only reached through ``billing_core.service``. A page's changed accounts go to
  billing in one bulk upsert (``accounts.upsert_accounts``: a refused account is reported and
  writes nothing); the other objects' writes run in a savepoint per record. Either way a record
  billing refuses (``LedgerError``) is quarantined alone.
- A record that maps and applies clears its open quarantine entry ("retried when it changes").
- A quote line for a product billing does not know is quarantined; a quote is stored here
  (billing has no quotes) and its account is checked at hand-off time, where it waits.
- A deleted CRM account becomes ``crm_deleted`` in billing; nothing of its history goes.
- The CRM hold flag read back while billing's last acknowledged push set it (opt-in policy)
  is billing's own echo, not finance's hold: it is taken as "not set by finance".
- Prices: the first price seen applies from ``FIRST_PRICE_DATE``; a changed price applies from
  today (history of earlier invoices stays priced as it was).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import Duplicate, LedgerError
from billing_core.service import accounts as accounts_service
from billing_core.service import pricing
from billing_core.adapters.bulk import BulkInsert, executemany, text_in
from connectors.base import Deletion
from sync import mapping
from sync.mapping import Invalid
from sync.runs import current_run
from sync.tables import quarantine, sync_records

log = logging.getLogger(__name__)
FIRST_PRICE_DATE = date(2000, 1, 1)


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
               crm_ids: Iterable[str]) -> dict[str, Any]:
    ids = list(dict.fromkeys(crm_ids))
    if not ids:
        return {}
    rows = conn.execute(select(*_KNOWN).where(
        sync_records.c.connection == connection, sync_records.c.object == obj,
        text_in(conn, sync_records.c.crm_id, ids))).mappings()
    return {r["crm_id"]: r for r in rows}


def ledger_id_of(conn: Connection, connection: str, obj: str, crm_id: str) -> int | None:
    return conn.execute(select(sync_records.c.ledger_id).where(
        sync_records.c.connection == connection, sync_records.c.object == obj,
        sync_records.c.crm_id == crm_id, sync_records.c.deleted_at.is_(None))).scalar()


# A page's new and changed bookkeeping rows, compiled once (bulk: COPY on PostgreSQL; each
# column's bind processor applied once per distinct value), not per row by SQLAlchemy.
_ROW = ("ledger_id", "parent_crm_id", "content_hash", "modstamp", "data", "updated_at",
        "deleted_at")
_INSERT = BulkInsert(sync_records, ("connection", "object", "crm_id", *_ROW))
_UPDATE = update(sync_records).where(
    sync_records.c.id == bindparam("k_id", type_=sync_records.c.id.type)).values(
    {c: bindparam(f"v_{c}", type_=sync_records.c[c].type) for c in _ROW})
_UPDATE_NAMES = ("k_id", *(f"v_{c}" for c in _ROW))


class _Page:
    """Accumulates one page's bookkeeping rows, written in bulk at the end."""

    def __init__(self, uow: UnitOfWork, connection: str, obj: str) -> None:
        self.uow, self.connection, self.obj = uow, connection, obj
        self.inserts: list[tuple[Any, ...]] = []
        self.updates: list[tuple[Any, ...]] = []
        self.cleared: list[str] = []
        self.result = PageResult()
        self.now = uow.now()                    # one time stamp for the page's rows

    def keep(self, existing: Any, crm_id: str, digest: str, ledger_id: int | None,
             parent: str | None, data: str | None, modstamp: Any) -> None:
        row = (ledger_id, parent, digest, modstamp if isinstance(modstamp, datetime) else None,
               data, self.now, None)
        if existing is None:
            self.inserts.append((self.connection, self.obj, crm_id, *row))
        else:
            self.updates.append((existing["id"], *row))
        self.cleared.append(crm_id)
        self.result.upserted += 1

    def flush(self) -> None:
        conn = self.uow.conn
        _INSERT.run(conn, self.inserts)
        executemany(conn, _UPDATE, _UPDATE_NAMES, self.updates)
        if self.cleared and self._any_open():
            self._resolve(self.cleared)

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
                      problem: Invalid) -> None:
    conn, now = uow.conn, uow.now()
    crm_id = str(record.get("crm_id") or "(missing)")
    values = {"field": problem.field, "value": None if problem.value is None
              else str(problem.value)[:2000], "reason": problem.reason,
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
                current_run.get(), connection, obj, crm_id, problem.field, problem.reason)


def apply_page(uow: UnitOfWork, connection: str, obj: str,
               records: Sequence[Mapping[str, Any]],
               deletions: Sequence[Deletion] = ()) -> PageResult:
    """Apply one page; the caller saves the cursor and commits."""
    page = _Page(uow, connection, obj)
    res = page.result
    res.read = len(records) + len(deletions)
    known = known_rows(uow.conn, connection, obj,
                       [str(r.get("crm_id")) for r in records if r.get("crm_id")]
                       + [d.crm_id for d in deletions])
    echoes = _billing_set_flags(uow.conn, connection, records) if obj == "account" else set()
    products: dict[str, int | None] = {}
    if obj in ("price", "quote_line"):
        wanted = {str(r.get("product_crm_id")) for r in records if r.get("product_crm_id")}
        products = {k: (None if v["deleted_at"] is not None else v["ledger_id"])
                    for k, v in known_rows(uow.conn, connection, "product", wanted).items()}
    accounts_in: list[tuple[Mapping[str, Any], Any, str, Any]] = []
    for record in records:
        try:
            rec = mapping.MAPPERS[obj](record)
        except Invalid as problem:
            quarantine_record(uow, connection, obj, record, problem)
            res.quarantined += 1
            continue
        if echoes and rec.crm_id in echoes:
            rec = replace(rec, credit_hold=False)
        if obj in ("quote", "quote_line"):    # stored as JSON until hand-off: hash that text
            text = mapping.rec_to_json(rec)
            data: str | None = text
            digest = mapping.text_hash(text)
        else:
            data, digest = None, mapping.content_hash(record)
        existing = known.get(rec.crm_id)
        if existing is not None and existing["content_hash"] == digest \
                and existing["deleted_at"] is None:
            res.unchanged += 1
            continue
        if obj == "account":
            accounts_in.append((record, rec, digest, existing))
            continue
        try:
            if obj in ("quote", "quote_line"):     # nothing written to billing: no savepoint
                ledger_id, parent = _apply(uow, connection, obj, rec, existing, products)
            else:
                with uow.savepoint():
                    ledger_id, parent = _apply(uow, connection, obj, rec, existing, products)
        except Invalid as problem:
            quarantine_record(uow, connection, obj, record, problem)
            res.quarantined += 1
            continue
        except LedgerError as exc:
            quarantine_record(uow, connection, obj, record,
                              Invalid(exc.field, exc.value, exc.problem))
            res.quarantined += 1
            continue
        page.keep(existing, rec.crm_id, digest, ledger_id, parent, data, record.get("modstamp"))
        if obj == "quote":
            res.quotes_touched.add(rec.crm_id)
        elif obj == "quote_line":
            res.quotes_touched.add(rec.quote_crm_id)
    if accounts_in:
        _apply_accounts(uow, page, connection, accounts_in)
    page.flush()
    for gone in deletions:
        row = known.get(gone.crm_id)
        if row is None or row["deleted_at"] is not None:
            continue
        if obj == "account" and row["ledger_id"] is not None:
            accounts_service.mark_crm_deleted(uow, int(row["ledger_id"]))
        uow.conn.execute(update(sync_records).where(sync_records.c.id == row["id"])
                         .values(deleted_at=uow.now(), updated_at=uow.now()))
        res.deleted += 1
        if gone.reason == "missing":
            res.disappeared.append(gone.crm_id)
        if obj == "quote":
            res.deleted_quotes.add(gone.crm_id)
        elif obj == "quote_line" and row["parent_crm_id"]:
            res.quotes_touched.add(row["parent_crm_id"])
        log.info("deleted in CRM connection=%s object=%s crm_id=%s reason=%s",
                 connection, obj, gone.crm_id, gone.reason)
    return res


def _billing_set_flags(conn: Connection, connection: str,
                       records: Sequence[Mapping[str, Any]]) -> set[str]:
    """Accounts whose CRM hold flag is set and was last set by billing's own push."""
    from sync.tables import outbox
    flagged = [str(r.get("crm_id")) for r in records if r.get("credit_hold") is True]
    out: set[str] = set()
    for start in range(0, len(flagged), 900):
        for crm_id, acked in conn.execute(select(outbox.c.crm_id, outbox.c.acked_payload).where(
                outbox.c.connection == connection, outbox.c.object == "account",
                outbox.c.crm_id.in_(flagged[start:start + 900]))):
            if acked and json.loads(acked).get("credit_hold") is True:
                out.add(crm_id)
    return out


def _apply(uow: UnitOfWork, connection: str, obj: str, rec: Any, existing: Any,
           products: Mapping[str, int | None]) -> tuple[int | None, str | None]:
    """Write one changed record to billing; returns (ledger_id, parent_crm_id)."""
    ledger_id = existing["ledger_id"] if existing is not None else None
    if obj == "product":
        return _apply_product(uow, connection, rec, ledger_id), None
    if obj == "price":
        product_id = products.get(rec.product_crm_id)
        if product_id is None:
            raise Invalid("product_crm_id", rec.product_crm_id, "unknown product")
        effective = FIRST_PRICE_DATE if existing is None else uow.now().date()
        price_id = pricing.set_price(uow, int(product_id), rec.currency, effective,
                                     rec.unit_price)
        return price_id, rec.product_crm_id
    if obj == "quote":
        return None, rec.account_crm_id
    if obj == "quote_line":
        if products.get(rec.product_crm_id) is None:
            raise Invalid("product_crm_id", rec.product_crm_id, "unknown product")
        return None, rec.quote_crm_id
    raise Invalid("object", obj, "is not a synchronised object")


def _account_in(connection: str, rec: mapping.AccountRec) -> accounts_service.AccountIn:
    return accounts_service.AccountIn(
        name=rec.name, currency=rec.currency, ext_id=rec.crm_id, ext_source=connection,
        ext_object="account", number=rec.number, country=rec.country, region=rec.region,
        credit_limit=rec.credit_limit, crm_hold=rec.credit_hold)


def _apply_accounts(uow: UnitOfWork, page: _Page, connection: str,
                    changed: list[tuple[Mapping[str, Any], Any, str, Any]]) -> None:
    """The page's changed accounts in one bulk upsert (by external key); an account billing
    refuses is quarantined alone, the others are kept."""
    results = accounts_service.upsert_accounts(
        uow, [_account_in(connection, rec) for _, rec, _, _ in changed])
    for (record, rec, digest, existing), result in zip(changed, results, strict=True):
        if result.error is not None:
            exc = result.error
            quarantine_record(uow, connection, "account", record,
                              Invalid(exc.field, exc.value, exc.problem))
            page.result.quarantined += 1
            continue
        data = json.dumps({"etag": record["_etag"]}) if record.get("_etag") else None
        page.keep(existing, rec.crm_id, digest, result.account_id, None, data,
                  record.get("modstamp"))


def _apply_product(uow: UnitOfWork, connection: str, rec: mapping.ProductRec,
                   ledger_id: int | None) -> int:
    if ledger_id is not None:
        updater = getattr(pricing, "update_product", None)
        if updater is not None:
            updater(uow, int(ledger_id), _product_in(connection, rec))
        return int(ledger_id)
    try:
        return pricing.add_product(uow, _product_in(connection, rec))
    except Duplicate:
        # The catalog is shared by SKU: a second CRM naming the same SKU links to it.
        return int(pricing.get_product(uow.conn, rec.sku)["id"])


def _product_in(connection: str, rec: mapping.ProductRec) -> pricing.ProductIn:
    return pricing.ProductIn(sku=rec.sku, name=rec.name, kind=rec.kind,
                             billing_period=rec.billing_period,
                             needs_provisioning=rec.needs_provisioning, active=rec.active,
                             ext_source=connection, ext_id=rec.crm_id)


def load_json(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}
