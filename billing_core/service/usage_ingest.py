"""Metered usage events: ingestion, idempotent per event, stored raw and append-only.

Table ``metered_events`` (one row per accepted event): ``event_id`` (the client's, unique for
ever), ``account_id``, ``metric_code``, ``occurred_at`` (UTC), ``value`` (exact decimal) and
``value_e6`` (the same x 10^6 as an integer, so SQL sums stay exact on SQLite), ``properties``
(JSON object), ``replaces`` (the event id this one corrects), ``received_at``, and
``invoice_id``, the bill run's mark (:mod:`billing_core.service.usage_rating`). The raw columns
are never updated or deleted.

Rules kept here
- A batch is 1..:data:`MAX_BATCH` events; each gets its own outcome, in order: ``accepted``,
  ``duplicate`` (its event id was accepted before, in an earlier batch or earlier in this one:
  nothing is stored again, whatever the rest of the event says), or ``rejected`` with the
  field, the value and the reason. A rejected event stores nothing; the rest of the batch goes
  on. A replay of an accepted event answers ``duplicate`` (the first outcome stands).
- Fields: ``event_id`` (1-128 characters), ``account`` (ledger id or CRM external id),
  ``metric`` (a defined metric code), ``timestamp`` (ISO 8601 with a zone; stored in UTC),
  ``value`` (exact decimal: a string or a JSON number read as decimal; never a float; at most
  6 decimals; may be negative: a correction), ``properties`` (optional object of scalars),
  ``replaces`` (optional: the id of an accepted event, or one earlier in the batch, of the
  same account and metric, not replaced before; the replaced event stops counting and this
  one counts instead).
- One transaction per batch (the caller's unit of work): the rows are inserted with ``ON
  CONFLICT (event_id) DO NOTHING``, so a concurrent batch with the same id stores it once and
  the loser answers ``duplicate``. One audit row per batch (``usage_batch``: ``ingested`` with
  the counts and the source), not one per event.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table, Text, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.bulk import BulkInsert
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts, metered_events, usage_metrics
from billing_core.adapters.types import ExactDecimal, Id, UTCDateTime
from billing_core.domain.errors import LedgerError, ValidationError
from billing_core.domain.ids import as_id
from billing_core.domain.metering import parse_value, plain_properties, read_json, to_e6
from billing_core.domain.text import printable, unstorable
from billing_core.service import audit
from billing_core.service.usage import IN_SLICE, parse_timestamp

MAX_BATCH = 10_000
CSV_COLUMNS = ("event_id", "account", "metric", "timestamp", "value")


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "rejected": self.rejected, "results": self.results}


def _lookup(conn: Connection, column: Any, wanted: Iterable[Any], *cols: Any) -> list[Any]:
    # Unstorable text matches nothing (``_text`` rejects it) and the database refuses it as a
    # parameter: it is left out of the lookup, not sent.
    items = [w for w in set(wanted) if not unstorable(w)]
    out: list[Any] = []
    for i in range(0, len(items), IN_SLICE):
        out.extend(conn.execute(select(*cols).where(column.in_(items[i:i + IN_SLICE]))).all())
    return out


def _text(raw: Mapping[str, Any], key: str, limit: int, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(key, value, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(key, value, "must be text")
    text = str(value).strip()
    if len(text) > limit:
        raise ValidationError(key, text[:40], f"is over {limit} characters")
    if unstorable(text):
        raise ValidationError(key, printable(text[:40]),
                              "contains a NUL or an unpaired surrogate character")
    return text


def ingest_events(uow: UnitOfWork, events: Sequence[Any], *,
                  source: str = "api") -> IngestResult:
    """Store a batch of events; one outcome per event (see the module rules)."""
    if not 1 <= len(events) <= MAX_BATCH:
        raise ValidationError("events", len(events), f"a batch holds 1 to {MAX_BATCH} events")
    conn = uow.conn
    raws = [e if isinstance(e, Mapping) else {} for e in events]
    ids = {str(r.get("event_id")).strip() for r in raws if r.get("event_id") is not None}
    refs = {str(r.get("account")).strip() for r in raws if r.get("account") is not None}
    seen = {r[0] for r in _lookup(conn, metered_events.c.event_id, ids,
                                  metered_events.c.event_id)}
    by_ext = dict(_lookup(conn, accounts.c.ext_id, refs, accounts.c.ext_id, accounts.c.id))
    by_id = {r[0] for r in _lookup(conn, accounts.c.id, {i for i in map(as_id, refs)
                                                         if i is not None}, accounts.c.id)}
    codes = set(conn.execute(select(usage_metrics.c.code).distinct()).scalars())
    replaced_refs = {str(r["replaces"]).strip() for r in raws if r.get("replaces")}
    targets = {r[0]: (r[1], r[2], r[3]) for r in _lookup(
        conn, metered_events.c.event_id, replaced_refs, metered_events.c.event_id,
        metered_events.c.account_id, metered_events.c.metric_code, metered_events.c.replaces)}
    already_replaced = {r[0] for r in _lookup(conn, metered_events.c.replaces, replaced_refs,
                                              metered_events.c.replaces)}
    now = uow.now()
    result = IngestResult()
    rows: list[tuple[Any, ...]] = []    # in the order of _COLS
    index_of: dict[str, int] = {}
    for i, (event, raw) in enumerate(zip(events, raws, strict=True)):
        try:
            if not isinstance(event, Mapping):
                raise ValidationError("event", type(event).__name__, "must be an object")
            if "_error" in raw:          # a JSON Lines line that did not parse
                raise ValidationError("line", raw.get("_line"), raw["_error"])
            event_id = _text(raw, "event_id", 128)
            eid = str(event_id)
            if eid in seen:
                result.results.append({"index": i, "event_id": eid,
                                       "status": "duplicate"})
                result.duplicates += 1
                continue
            ref = _text(raw, "account", 64)
            account_id = by_ext.get(ref)
            if account_id is None and ref is not None and as_id(ref) in by_id:
                account_id = as_id(ref)
            if account_id is None:
                raise ValidationError("account", raw.get("account"), "is not a known account")
            metric = _text(raw, "metric", 64)
            if metric not in codes:
                raise ValidationError("metric", raw.get("metric"), "is not a defined metric")
            occurred = parse_timestamp(raw.get("timestamp"), "timestamp")
            value = parse_value(raw.get("value"))
            props = plain_properties(raw.get("properties"))
            replaces = _text(raw, "replaces", 128, required=False)
            if replaces is not None:
                target = targets.get(replaces)
                if target is None:
                    raise ValidationError("replaces", replaces, "is not an accepted event id")
                if (target[0], target[1]) != (account_id, metric):
                    raise ValidationError("replaces", replaces,
                                          "is an event of another account or metric")
                if replaces in already_replaced or replaces == eid:
                    raise ValidationError("replaces", replaces, "is already replaced")
        except LedgerError as exc:
            result.results.append({"index": i, "event_id": raw.get("event_id"),
                                   "status": "rejected", **exc.as_dict()})
            result.rejected += 1
            continue
        seen.add(eid)
        if replaces is not None:
            already_replaced.add(replaces)
        targets[eid] = (account_id, metric, replaces)
        index_of[eid] = len(result.results)
        result.results.append({"index": i, "event_id": eid, "status": "accepted"})
        rows.append((eid, account_id, metric, occurred, value, to_e6(value),
                     None if props is None else json.dumps(props), replaces, now))
    if rows:
        stored = _insert(uow, rows)
        for row in rows:
            if row[0] not in stored:      # a concurrent batch stored it first
                result.results[index_of[row[0]]]["status"] = "duplicate"
                result.duplicates += 1
        result.accepted = len(stored)
    audit.record(uow, "ingested", "usage_batch", entity_ref=source[:255], changes={
        "events": len(events), "accepted": result.accepted, "duplicates": result.duplicates,
        "rejected": result.rejected,
        "first_event_id": rows[0][0] if rows else None})
    return result


# The same table with ``properties`` as the JSON text it is stored as, for the bulk path
# (COPY on PostgreSQL, one executemany on SQLite: no per-row parameter processing).
_RAW = Table("metered_events", MetaData(), Column("event_id", String(128)),
             Column("account_id", Id), Column("metric_code", String(64)),
             Column("occurred_at", UTCDateTime()), Column("value", ExactDecimal()),
             Column("value_e6", BigInteger), Column("properties", Text),
             Column("replaces", String(128)), Column("received_at", UTCDateTime()))
_COLS = ("event_id", "account_id", "metric_code", "occurred_at", "value", "value_e6",
         "properties", "replaces", "received_at")
_BULK = BulkInsert(_RAW, _COLS)


def _insert(uow: UnitOfWork, rows: list[tuple[Any, ...]]) -> set[str]:
    """Insert, skipping event ids stored meanwhile; returns the ids this call stored. The ids
    were checked in this transaction, so the bulk insert is tried first; only when a
    concurrent batch stored one of them since (a unique violation) are the rows inserted
    again with ``ON CONFLICT DO NOTHING``, which reports what it stored."""
    try:
        with uow.savepoint():
            _BULK.run(uow.conn, rows)
        return {r[0] for r in rows}
    except IntegrityError:
        pass
    dialect = postgresql if uow.dialect == "postgresql" else sqlite
    stmt = dialect.insert(metered_events).on_conflict_do_nothing(index_elements=["event_id"])
    dicts = [dict(zip(_COLS, r, strict=True)) for r in rows]
    for d in dicts:
        d["properties"] = None if d["properties"] is None else json.loads(d["properties"])
    return set(uow.conn.execute(stmt.returning(metered_events.c.event_id), dicts).scalars())


def read_events_file(stream: IO[str], fmt: str) -> list[dict[str, Any]]:
    """Events of a JSON Lines file (one object a line, numbers read as decimals) or a CSV
    (header ``event_id,account,metric,timestamp,value`` plus optional ``replaces`` and
    ``properties`` (a JSON object) columns). A line that is not JSON (or nests too deeply
    to be read) becomes an event the ingestion rejects, naming its line."""
    if fmt == "csv":
        reader = csv.DictReader(stream)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValidationError("columns", ",".join(reader.fieldnames or []),
                                  f"missing {', '.join(missing)} (need {','.join(CSV_COLUMNS)})")
        out: list[dict[str, Any]] = []
        for row in reader:
            event: dict[str, Any] = {k: v for k, v in row.items()
                                     if k in (*CSV_COLUMNS, "replaces") and v not in (None, "")}
            props = (row.get("properties") or "").strip()
            if props:
                try:
                    event["properties"] = read_json(props, "properties")
                except ValidationError:
                    event["properties"] = props      # rejected by the ingestion, named
            out.append(event)
        return out
    events: list[Any] = []
    for n, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            events.append(read_json(line, "line"))
        except ValidationError as exc:
            events.append({"event_id": None, "_line": n, "_error": exc.problem})
    return events
