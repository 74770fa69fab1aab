"""Usage events: import, exactly once.

Rules kept here
- An event is (event_id, account, product, quantity, occurred_at). ``event_id`` is unique for
  ever: an event id seen before (in the ledger or earlier in the same batch) is ignored and
  counted as a duplicate, never billed twice (``INSERT ... ON CONFLICT DO NOTHING`` also covers a
  concurrent import of the same id).
- The account is named by ledger id or CRM id (``ext_id``); the product by sku or id, and must be
  a ``usage`` product. The quantity is an exact decimal >= 0 (no floats) that metered event
  values also are (:func:`billing_core.domain.metering.parse_value`: at most 6 decimals,
  below 10^12), so a bill run can always rate it. ``occurred_at`` is an ISO 8601 timestamp
  *with* a time zone (a naive one is refused: whose midnight would it be?) that stays a
  datetime once in UTC; it is stored in UTC and billed by its UTC day.
- A bad row is reported with its row number, field and value; the others are imported.
- CSV columns: ``event_id,account,product,quantity,occurred_at`` (header required).
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import Connection, Select, select
from sqlalchemy.dialects import postgresql, sqlite

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts, products, usage_events
from billing_core.domain.errors import LedgerError, ValidationError
from billing_core.domain.ids import as_id
from billing_core.domain.metering import parse_value

IN_SLICE = 5000
CSV_COLUMNS = ("event_id", "account", "product", "quantity", "occurred_at")


@dataclass
class ImportResult:
    imported: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def parse_timestamp(value: object, field_name: str = "occurred_at") -> datetime:
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, str) and value.strip():
        try:
            ts = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValidationError(field_name, value, "is not an ISO 8601 timestamp") from None
    else:
        raise ValidationError(field_name, value, "is not an ISO 8601 timestamp")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValidationError(field_name, value, "has no time zone (give Z or +hh:mm)")
    try:
        return ts.astimezone(UTC)
    except OverflowError:      # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00
        raise ValidationError(field_name, value, "is out of range once in UTC") from None


def read_usage_csv(stream: IO[str]) -> list[dict[str, Any]]:
    """Rows of a usage CSV as dicts with their line number (``row``); checks the header."""
    reader = csv.DictReader(stream)
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValidationError("columns", ",".join(reader.fieldnames or []),
                              f"missing {', '.join(missing)} (need {','.join(CSV_COLUMNS)})")
    return [{**row, "row": n} for n, row in enumerate(reader, start=2)]


def _in_slices(conn: Connection, query: Select[Any], column: Any,
               values: set[Any]) -> list[Any]:
    """``query WHERE column IN values`` in slices under every database's parameter limit."""
    items: list[Any] = list(values)
    out: list[Any] = []
    for i in range(0, len(items), IN_SLICE):
        out.extend(conn.execute(query.where(column.in_(items[i:i + IN_SLICE]))).all())
    return out


def import_usage(uow: UnitOfWork, events: Iterable[Mapping[str, Any]]) -> ImportResult:
    """Import usage events; duplicates counted and skipped, bad rows reported with field+value."""
    rows = list(events)
    result = ImportResult()
    conn = uow.conn
    refs = {str(r.get("account", "")).strip() for r in rows}
    acct_by_ext = dict(_in_slices(conn, select(accounts.c.ext_id, accounts.c.id),
                                  accounts.c.ext_id, refs))
    ids = {i for i in map(as_id, refs) if i is not None}
    acct_ids = {r[0] for r in _in_slices(conn, select(accounts.c.id), accounts.c.id, ids)}
    prods = {}
    for p in conn.execute(select(products.c.id, products.c.sku, products.c.kind)):
        prods[p.sku] = p
        prods[str(p.id)] = p
    event_ids = {str(r.get("event_id", "")).strip() for r in rows}
    seen = {r[0] for r in _in_slices(conn, select(usage_events.c.event_id),
                                     usage_events.c.event_id, event_ids)}
    now = uow.now()
    good: list[dict[str, Any]] = []
    for n, raw in enumerate(rows, start=1):
        row_no = raw.get("row", n)
        event_id = str(raw.get("event_id") or "").strip()
        try:
            if not event_id or len(event_id) > 128:
                raise ValidationError("event_id", raw.get("event_id"), "is required (<= 128 chars)")
            if event_id in seen:
                result.duplicates += 1
                continue
            ref = str(raw.get("account") or "").strip()
            account_id = acct_by_ext.get(ref)
            if account_id is None and as_id(ref) in acct_ids:
                account_id = as_id(ref)
            if account_id is None:
                raise ValidationError("account", raw.get("account"), "is not a known account")
            product = prods.get(str(raw.get("product") or "").strip())
            if product is None:
                raise ValidationError("product", raw.get("product"), "is not a known product")
            if product.kind != "usage":
                raise ValidationError("product", raw.get("product"),
                                      f"is a {product.kind} product, not usage")
            quantity = parse_value(raw.get("quantity"), "quantity")
            if quantity < 0:
                raise ValidationError("quantity", raw.get("quantity"), "must not be negative")
            occurred = parse_timestamp(raw.get("occurred_at"))
        except LedgerError as exc:
            result.errors.append({"row": row_no, "event_id": event_id, **exc.as_dict()})
            continue
        seen.add(event_id)
        good.append({"event_id": event_id, "account_id": account_id, "product_id": product.id,
                     "quantity": quantity, "occurred_at": occurred, "created_at": now})
    if good:
        dialect = postgresql if uow.dialect == "postgresql" else sqlite
        stmt = dialect.insert(usage_events).on_conflict_do_nothing(index_elements=["event_id"])
        inserted = conn.execute(stmt.returning(usage_events.c.id), good).all() \
            if uow.dialect in ("postgresql", "sqlite") else []
        result.imported = len(inserted)
        result.duplicates += len(good) - len(inserted)
    return result
