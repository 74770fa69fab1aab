"""What the hand-off reads: which quotes to look at, and what a chunk of them needs.

Rules kept here:
- Only quotes accepted now or handed off before are looked at (:func:`worth_a_look`: the
  status is read in SQL, no stored JSON is parsed); waiting quotes are looked at every cycle.
- What the hand-off owes is durable, never only in a run's memory: an accepted, live quote
  revision without a hand-off row gets a ``waiting`` row (:func:`mark_owed`) in the same
  transaction as the page that brought it, so a run stopped or killed after the pull leaves it
  for the next run, which finds it through the partial index ``ix_handoffs_waiting``
  (:func:`owed`), whatever the CRM did since. A revision that does not fit the column
  (``MAX_REVISION``) gets no row: the hand-off refuses it by itself.
- Nothing the hand-off looks at is only in a run's memory, and a run holds at most a page of
  it (``HANDOFF_PAGE`` quotes): a handed-off quote that changed (its status, a deletion, a
  cancellation date, a line) owes no revision, so the page that brought the change notes it in
  ``handoff_looks`` (:func:`mark_owed`). A cycle's hand-off reads the owed quotes and the
  looks page by page, in key order (:func:`due`), and each chunk deletes the looks of what it
  looked at in its own transaction. A targeted run (one account, CRM events) hands off the
  quotes it touched, which it holds (a bounded few).
- A chunk's quotes, hand-off history, lines, accounts and products are read with a few
  queries per chunk (:class:`Known`), not per quote; products through billing's catalog
  service, never its tables.
- Revisions kept as separate quote records (Dataverse: a revised quote is a new record with
  the same ``quotenumber``, the old one closed) are one deal: a quote's *prior* revisions are
  the other quote records of the same account and number with a lower revision (their
  hand-off rows in :attr:`Known.prior`), and a quote with such a record of a higher revision
  is *revised* (:attr:`Known.revised`). One query per chunk, on the chunk's accounts.
- An amendment or renewal quote kept as a record of its own (CPQ, a Dataverse renewal) names
  the quote whose deal it continues (``QuoteRec.origin_quote``): the origin's stored record
  and hand-off rows, and the other quotes of the same account naming the same origin with
  their hand-off rows (:attr:`Known.origins`, :attr:`Known.followers`), a few queries per
  chunk. A quote without live lines whose lines the sync saw deleted is *emptied*
  (:attr:`Known.emptied`): an amendment that removed every item, told apart from a quote whose
  lines were never read.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Select,
    cast,
    func,
    insert,
    literal,
    select,
    union,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ColumnElement

from billing_core.adapters.bulk import text_in
from billing_core.adapters.db import UnitOfWork
from billing_core.service.accounts import currencies_of
from billing_core.service.pricing import get_products
from sync import boundary, mapping
from sync.mapping import QuoteLineRec, QuoteRec
from sync.refs import source_ref
from sync.states import HandoffState
from sync.tables import handoff_looks, handoffs, quarantine, sync_records

#: The largest revision ``handoffs.revision`` (INTEGER) holds.
MAX_REVISION = 2**31 - 1
#: Quotes per hand-off transaction (``sync.handoff.CHUNK``).
HANDOFF_CHUNK = 500
#: Quotes a hand-off run reads and holds at once (:func:`due`): about 5 MB of a process's RSS.
#: The sibling read (:func:`run_siblings`) walks the connection's quotes once per page (0.1-0.2
#: s per 250,000 stored quotes on SQLite), so a larger page walks less on a large backlog.
HANDOFF_PAGE = 10_000
#: The detail of a hand-off row written when its quote revision was pulled.
OWED = "accepted in the CRM; to hand off"


def owed(connection: str) -> Select[str]:
    """The quotes with a ``waiting`` hand-off row: an index range of ``ix_handoffs_waiting``
    (the state is a literal in the SQL, so SQLite sees the partial index applies)."""
    return select(handoffs.c.quote_crm_id).where(
        handoffs.c.connection == connection,
        handoffs.c.state == literal(HandoffState.WAITING.value, literal_execute=True))


def due(engine: Engine, connection: str, size: int = HANDOFF_PAGE) -> Iterator[list[str]]:
    """Everything a cycle's hand-off looks at, a page of up to ``size`` quotes at a time in
    the database's key order: the owed quotes (``waiting`` rows) and the looks. A page is read
    when the one before is done (keyset: after its last id, in the database's own order), so
    what the hand-off wrote meanwhile is read as it is; each side is an index range of at most
    ``size`` rows."""
    after = ""
    while True:
        with engine.connect().execution_options(ledger_read_only=True) as conn:
            # each side gives its first ``size`` distinct quotes (a quote owing two revisions
            # has two rows): the first ``size`` of both together are then the backlog's
            waiting = owed(connection).where(handoffs.c.quote_crm_id > after).distinct(
            ).order_by(handoffs.c.quote_crm_id).limit(size).subquery()
            looks = select(handoff_looks.c.quote_crm_id).where(
                handoff_looks.c.connection == connection,
                handoff_looks.c.quote_crm_id > after).order_by(
                handoff_looks.c.quote_crm_id).limit(size).subquery()
            both = union(select(waiting.c.quote_crm_id),
                         select(looks.c.quote_crm_id)).subquery()
            page = list(conn.execute(select(both.c.quote_crm_id).order_by(
                both.c.quote_crm_id).limit(size)).scalars())
        if not page:
            return
        yield page
        after = page[-1]


def anything_due(engine: Engine, connection: str) -> bool:
    """Whether a cycle's hand-off has anything to look at (:func:`due`)."""
    with engine.connect() as conn:
        return any(conn.execute(stmt.limit(1)).first() is not None for stmt in (
            owed(connection), select(handoff_looks.c.quote_crm_id).where(
                handoff_looks.c.connection == connection)))


def clear_looks(conn: Connection, connection: str, quote_ids: Iterable[str]) -> None:
    """The hand-off looked at these quotes (in the caller's transaction)."""
    ids = sorted(set(quote_ids))
    for start in range(0, len(ids), 2000):
        conn.execute(handoff_looks.delete().where(
            handoff_looks.c.connection == connection,
            text_in(conn, handoff_looks.c.quote_crm_id, ids[start:start + 2000])))


def _note_looks(conn: Connection, connection: str, quote_ids: list[str], now: datetime) -> None:
    """The hand-off must look at these quotes again (one row each; a quote noted before stays
    as it is)."""
    if not quote_ids:
        return
    dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(handoff_looks).on_conflict_do_nothing(), [
        {"connection": connection, "quote_crm_id": q, "noted_at": now} for q in quote_ids])


def mark_owed(conn: Connection, connection: str, quote_ids: Iterable[str],
              accepted: frozenset[str], now: datetime, *, looks: bool = True) -> set[str]:
    """Of ``quote_ids``, the quotes worth a look (:func:`worth_a_look`); each accepted, live
    revision among them without a hand-off row gets a ``waiting`` one, in the caller's
    transaction (the page's), so what the hand-off owes outlives the run; with ``looks``
    (quotes that changed), each other one worth a look without a ``waiting`` row is noted in
    ``handoff_looks``. :func:`worth_a_look`'s two queries per 2,000 quotes, each giving what the
    rows need too: the accepted quotes with their stored revision, and the hand-off rows'
    quotes with their revisions and states."""
    ids = sorted(set(quote_ids))
    keep: set[str] = set()
    status = _status(conn)
    for start in range(0, len(ids), 2000):
        chunk = ids[start:start + 2000]
        here: set[str] = set()
        waiting: set[str] = set()
        known: set[tuple[str, int]] = set()
        for q, r, state in conn.execute(select(
                handoffs.c.quote_crm_id, handoffs.c.revision, handoffs.c.state).where(
                handoffs.c.connection == connection,
                text_in(conn, handoffs.c.quote_crm_id, chunk))):
            here.add(q)
            known.add((q, int(r)))
            if state == HandoffState.WAITING:
                waiting.add(q)
        revisions: dict[str, int] = {}
        if accepted:
            for crm_id, data in conn.execute(select(
                    sync_records.c.crm_id, sync_records.c.data).where(
                    sync_records.c.connection == connection, sync_records.c.object == "quote",
                    text_in(conn, sync_records.c.crm_id, chunk),
                    sync_records.c.deleted_at.is_(None), sync_records.c.data.is_not(None),
                    status.in_(sorted(accepted)))):
                here.add(crm_id)
                revision = _revision(data)
                if 0 <= revision <= MAX_REVISION:
                    revisions[crm_id] = revision
        new = sorted((q, r) for q, r in revisions.items() if (q, r) not in known)
        if new:
            conn.execute(insert(handoffs), [
                {"connection": connection, "quote_crm_id": q, "revision": r,
                 "source_ref": source_ref(connection, q, r), "state": HandoffState.WAITING,
                 "detail": OWED, "created_at": now, "updated_at": now} for q, r in new])
        if looks:
            waiting.update(q for q, _ in new)
            _note_looks(conn, connection, sorted(here - waiting), now)
        keep |= here
    return keep


def _revision(data: str) -> int:
    """A stored quote's revision (``data`` is the QuoteRec as JSON text), without building the
    whole record."""
    return int(json.loads(data)["revision"])


def accepted_quotes(conn: Connection, connection: str, accepted: frozenset[str],
                    size: int = 2000) -> Iterator[list[str]]:
    """Every live accepted quote of the connection, a page of up to ``size`` at a time in key
    order (a full read's check that nothing owed was left without its row, e.g. by a run
    before the rows existed). Each page is read in full before it is given out, so the caller
    may write between pages."""
    if not accepted:
        return
    after = ""
    while True:
        page = list(conn.execute(select(sync_records.c.crm_id).where(
            sync_records.c.connection == connection, sync_records.c.object == "quote",
            sync_records.c.crm_id > after, sync_records.c.deleted_at.is_(None),
            _status(conn).in_(sorted(accepted))).order_by(sync_records.c.crm_id)
            .limit(size)).scalars())
        if not page:
            return
        yield page
        after = page[-1]


def worth_a_look(conn: Connection, connection: str, quote_ids: Iterable[str],
                 accepted: frozenset[str]) -> set[str]:
    """Of ``quote_ids``, the quotes accepted now or handed off before (two queries per 2,000
    quotes; the status is read in SQL, no stored JSON is parsed here). The rest (drafts,
    denied quotes never handed off) cost no transaction."""
    ids = sorted(set(quote_ids))
    keep: set[str] = set()
    status = _status(conn)
    for start in range(0, len(ids), 2000):
        chunk = ids[start:start + 2000]
        keep.update(r[0] for r in conn.execute(select(handoffs.c.quote_crm_id).where(
            handoffs.c.connection == connection, text_in(conn, handoffs.c.quote_crm_id, chunk))))
        if accepted:
            keep.update(r[0] for r in conn.execute(select(sync_records.c.crm_id).where(
                sync_records.c.connection == connection, sync_records.c.object == "quote",
                text_in(conn, sync_records.c.crm_id, chunk), sync_records.c.deleted_at.is_(None),
                status.in_(sorted(accepted)))))
    return keep


def _status(conn: Connection) -> ColumnElement[Any]:
    """A stored quote's status (``data`` is the QuoteRec as JSON text)."""
    return _data_field(conn, "status")


def _data_field(conn: Connection, name: str,
                column: ColumnElement[Any] = sync_records.c.data) -> ColumnElement[Any]:
    """One field of a JSON text column (a stored record's ``data`` by default) in SQL."""
    if conn.dialect.name == "postgresql":
        value: ColumnElement[Any] = cast(column, JSONB)[name].astext
        return value
    return func.json_extract(column, f"$.{name}")


class Sibling(NamedTuple):
    """A stored quote record as the revision check (:func:`_revisions`) needs it."""

    crm_id: str
    revision: int


#: Stored quotes by (account, quote number): the records that may be revisions of one deal.
Siblings = dict[tuple[str, str], list[Sibling]]


def _siblings(conn: Connection, connection: str, accounts: list[str], numbers: list[str],
              keep: Callable[[tuple[str, str], list[Sibling]], bool] | None = None
              ) -> Siblings:
    """The live stored quotes of these accounts with one of these numbers, by (account,
    number), read in that order and grouped as they come; with ``keep``, only the groups it
    keeps. Quotes have no index by account (see ``sync.tables``): this walks every quote of
    the connection. The fields come from the stored JSON in SQL (no record is built)."""
    account, number = _data_field(conn, "account_crm_id"), _data_field(conn, "number")
    out: Siblings = {}
    key: tuple[str, str] | None = None
    group: list[Sibling] = []
    for acc, num, crm_id, revision in conn.execute(select(
            account, number, sync_records.c.crm_id, _data_field(conn, "revision")).where(
            sync_records.c.connection == connection, sync_records.c.object == "quote",
            text_in(conn, sync_records.c.parent_crm_id, accounts),
            sync_records.c.deleted_at.is_(None), sync_records.c.data.is_not(None),
            _number_in(conn, numbers)).order_by(account, number, sync_records.c.crm_id)):
        here = (str(acc), str(num))
        if here != key:
            if key is not None and (keep is None or keep(key, group)):
                out.setdefault(key, []).extend(group)
            key, group = here, []
        group.append(Sibling(crm_id, int(revision)))
    if key is not None and (keep is None or keep(key, group)):
        out.setdefault(key, []).extend(group)
    return out


def _number_in(conn: Connection, numbers: list[str]) -> ColumnElement[bool]:
    """The stored quote's number among ``numbers``: rendered as an IN list up to 500 (as
    before), as one bound value beyond (``text_in``: a run's every number)."""
    if len(numbers) <= 500:
        return _data_field(conn, "number").in_(numbers)
    return text_in(conn, _data_field(conn, "number"), numbers)


def run_siblings(conn: Connection, connection: str, quote_ids: list[str]) -> Siblings | None:
    """The siblings the chunks of a page of a hand-off run need, read once for the page (one
    walk of the connection's quotes instead of one per chunk: at 100,000 quotes, 25 chunks
    walked 100,000 quotes each); None for a page of one chunk, which reads its own. The chunks
    read the same: the hand-off writes no stored quote.

    Only the groups of two records or more are kept: a live quote alone under its (account,
    number) has no other revision, and :func:`_revisions` finds nothing for it whether its
    group is there or not, so what the run holds is the revised deals', not a record per quote
    (it held every quote's whole record for the whole hand-off: 11.5 MB of Python heap for the
    12,500 accepted quotes of a 100,000-quote full pull). A deleted quote looked at is not in
    its own (live) group: a lone record under its key is kept (one key per deleted quote).
    Groups of other pairs of the same accounts and numbers may come too; no quote looks them
    up."""
    if len(quote_ids) <= HANDOFF_CHUNK:
        return None
    accounts: set[str] = set()
    numbers: set[str] = set()
    gone: set[tuple[str, str]] = set()
    for start in range(0, len(quote_ids), 2000):
        for account, number, deleted in conn.execute(select(
                _data_field(conn, "account_crm_id"), _data_field(conn, "number"),
                sync_records.c.deleted_at).where(
                sync_records.c.connection == connection, sync_records.c.object == "quote",
                text_in(conn, sync_records.c.crm_id, quote_ids[start:start + 2000]),
                sync_records.c.data.is_not(None))):
            if number:
                accounts.add(str(account))
                numbers.add(str(number))
                if deleted is not None:
                    gone.add((str(account), str(number)))
    if not numbers:
        return {}
    return _siblings(conn, connection, sorted(accounts), sorted(numbers),
                     lambda key, group: len(group) > 1 or key in gone)


def _revisions(conn: Connection, connection: str, quotes: list[QuoteRec],
               run: Siblings | None = None) -> tuple[dict[str, list[Any]], set[str]]:
    """The hand-off rows of each quote's prior revisions kept as other records (same
    account and number, lower revision), and the quotes a higher revision replaced. ``run``:
    the siblings read for the whole run (:func:`run_siblings`), else read for these quotes."""
    numbered = [q for q in quotes if q.number]
    if not numbered:
        return {}, set()
    siblings = run if run is not None else _siblings(
        conn, connection, sorted({q.account_crm_id for q in numbered}),
        sorted({str(q.number) for q in numbered}))
    before: dict[str, list[str]] = {}
    revised: set[str] = set()
    for q in numbered:
        others = [s for s in siblings.get((q.account_crm_id, str(q.number)), ())
                  if s.crm_id != q.crm_id]
        before[q.crm_id] = [s.crm_id for s in others if s.revision < q.revision]
        if any(s.revision > q.revision for s in others):
            revised.add(q.crm_id)
    ids = sorted({i for ids in before.values() for i in ids})
    rows: dict[str, list[Any]] = {}
    if ids:
        for row in conn.execute(select(handoffs).where(
                handoffs.c.connection == connection,
                text_in(conn, handoffs.c.quote_crm_id, ids))).mappings():
            rows.setdefault(row["quote_crm_id"], []).append(row)
    prior = {q: sorted((r for i in ids_ for r in rows.get(i, ())),
                       key=lambda r: (r["revision"], r["id"]))
             for q, ids_ in before.items() if ids_}
    return prior, revised


@dataclass(frozen=True)
class Origin:
    """What the hand-off knows of a quote other quotes amend or renew: its stored record
    (None: never pulled), whether the CRM deleted it, and its hand-off rows."""

    rec: QuoteRec | None
    deleted: bool
    rows: list[Any]


def _origins(conn: Connection, connection: str, quotes: list[QuoteRec]
             ) -> tuple[dict[str, Origin], dict[str, list[tuple[QuoteRec, list[Any]]]]]:
    """The origins the chunk's amendment and renewal quotes name, and per origin every quote
    of the same account naming it (with its hand-off rows)."""
    named = [q for q in quotes if q.kind != "new" and q.origin_quote]
    if not named:
        return {}, {}
    ids = sorted({str(q.origin_quote) for q in named})
    recs: dict[str, tuple[QuoteRec, bool]] = {}
    for crm_id, data, deleted in conn.execute(select(
            sync_records.c.crm_id, sync_records.c.data, sync_records.c.deleted_at).where(
            sync_records.c.connection == connection, sync_records.c.object == "quote",
            text_in(conn, sync_records.c.crm_id, ids))):
        if data:
            recs[crm_id] = (mapping.quote_from_json(data), deleted is not None)
    following: list[QuoteRec] = [mapping.quote_from_json(data) for data in conn.execute(
        select(sync_records.c.data).where(
            sync_records.c.connection == connection, sync_records.c.object == "quote",
            text_in(conn, sync_records.c.parent_crm_id,
                    sorted({q.account_crm_id for q in named})),
            sync_records.c.deleted_at.is_(None), sync_records.c.data.is_not(None),
            _data_field(conn, "origin_quote").in_(ids))).scalars()]
    rows: dict[str, list[Any]] = {}
    wanted = sorted({*ids, *(q.crm_id for q in following)})
    for row in conn.execute(select(handoffs).where(
            handoffs.c.connection == connection,
            text_in(conn, handoffs.c.quote_crm_id, wanted))
            .order_by(handoffs.c.revision, handoffs.c.id)).mappings():
        rows.setdefault(row["quote_crm_id"], []).append(row)
    origins = {i: Origin(recs[i][0] if i in recs else None, recs[i][1] if i in recs else False,
                         rows.get(i, [])) for i in ids}
    followers: dict[str, list[tuple[QuoteRec, list[Any]]]] = {}
    for q in following:
        followers.setdefault(str(q.origin_quote), []).append((q, rows.get(q.crm_id, [])))
    return origins, followers


def to_hand_off(engine: Engine, connection: str, quote_ids: set[str],
                accepted: frozenset[str]) -> list[str]:
    """:func:`worth_a_look` in its own read-only connection, in key order."""
    with engine.connect().execution_options(ledger_read_only=True) as conn:
        return sorted(worth_a_look(conn, connection, quote_ids, accepted))


@dataclass
class Known:
    """What the hand-off of a chunk of quotes reads, read once for the chunk."""

    quotes: dict[str, tuple[QuoteRec, bool]]
    history: dict[str, list[Any]]
    lines: dict[str, list[QuoteLineRec]]
    accounts: dict[str, int]
    products: dict[str, int]
    product_rows: dict[int, RowMapping]
    prior: dict[str, list[Any]]
    revised: set[str]
    origins: dict[str, Origin]
    followers: dict[str, list[tuple[QuoteRec, list[Any]]]]
    #: Quotes with no live line whose lines the sync saw deleted (all items removed).
    emptied: set[str]
    #: The ledger accounts' currencies (a quote in another currency is refused).
    currencies: dict[int, str]
    #: Per quote, its lines in open quarantine: (line, field, reason). The CRM sent them and
    #: billing refused them, so the quote cannot be billed whole until they are fixed.
    refused_lines: dict[str, list[tuple[str, str, str]]]

    @classmethod
    def read(cls, uow: UnitOfWork, connection: str, quote_ids: list[str],
             siblings: Siblings | None = None) -> Known:
        """``siblings``: the run's (:func:`run_siblings`), else the chunk's are read."""
        conn = uow.conn
        quotes: dict[str, tuple[QuoteRec, bool]] = {}
        for crm_id, data, deleted in conn.execute(select(
                sync_records.c.crm_id, sync_records.c.data, sync_records.c.deleted_at).where(
                sync_records.c.connection == connection, sync_records.c.object == "quote",
                text_in(conn, sync_records.c.crm_id, quote_ids))):
            if data:
                quotes[crm_id] = (mapping.quote_from_json(data), deleted is not None)
        history: dict[str, list[Any]] = {}
        for row in conn.execute(select(handoffs).where(
                handoffs.c.connection == connection,
                text_in(conn, handoffs.c.quote_crm_id, quote_ids))
                .order_by(handoffs.c.quote_crm_id, handoffs.c.revision)).mappings():
            history.setdefault(row["quote_crm_id"], []).append(row)
        lines: dict[str, list[QuoteLineRec]] = {}
        rows = sorted(tuple(r) for r in conn.execute(lines_of(connection, quote_ids)))
        for _, parent, data in rows:
            if data:
                lines.setdefault(parent, []).append(mapping.line_from_json(data))
        accounts = _ledger_ids(uow, connection, "account",
                               {q.account_crm_id for q, _ in quotes.values()})
        products = _ledger_ids(uow, connection, "product",
                               {ln.product_crm_id for ls in lines.values() for ln in ls})
        product_rows = get_products(conn, products.values())
        recs = [q for q, _ in quotes.values()]
        prior, revised = _revisions(conn, connection, recs, siblings)
        origins, followers = _origins(conn, connection, recs)
        lineless = sorted(set(quotes) - set(lines))
        emptied = {parent for (parent,) in conn.execute(select(
            sync_records.c.parent_crm_id).where(
            sync_records.c.connection == connection,
            sync_records.c.object == literal("quote_line", literal_execute=True),
            sync_records.c.parent_crm_id.in_(lineless),
            sync_records.c.deleted_at.is_not(None)).distinct())} if lineless else set()
        return cls(quotes, history, lines, accounts, products, product_rows, prior, revised,
                   origins, followers, emptied, currencies_of(conn, list(accounts.values())),
                   _refused_lines(conn, connection, quotes))


def _refused_lines(conn: Connection, connection: str, quotes: Iterable[str]
                   ) -> dict[str, list[tuple[str, str, str]]]:
    """The open quarantine's lines of these quotes: by the quote named in their stored record,
    in its one form (``boundary.same_id``: a line that names its quote by the 15-character
    Salesforce id is that quote's, also in an entry kept before ids had one form), and the
    lines whose quote reference could not be read (refused naming ``quote_crm_id``: an object,
    a number) by every id that reference may hold (``boundary.ids_within``), so their quote
    waits instead of being handed off short. Ids compare without case once in their one form
    (a GUID; two 18-character Salesforce ids never differ by case alone)."""
    wanted = {_id_key(q): q for q in quotes}
    found: dict[str, set[tuple[str, str, str]]] = {}
    if not wanted:
        return {}
    # the stored reference as it may be: the one form, or a 15-character id kept before
    probes = sorted({*wanted, *(k[:15] for k in wanted if len(k) == 18 and k.isalnum())})
    ref = _data_field(conn, "quote_crm_id", quarantine.c.record)
    open_lines = (quarantine.c.connection == connection,
                  quarantine.c.object == literal("quote_line", literal_execute=True),
                  quarantine.c.status == "open")
    for crm_id, parent, field, reason in conn.execute(select(
            quarantine.c.crm_id, ref, quarantine.c.field, quarantine.c.reason).where(
            *open_lines, func.lower(ref).in_(probes))):
        quote = wanted.get(_id_key(parent)) if isinstance(parent, str) else None
        if quote is not None:
            found.setdefault(quote, set()).add((crm_id, field, reason))
    for crm_id, record, field, reason in conn.execute(select(
            quarantine.c.crm_id, quarantine.c.record, quarantine.c.field, quarantine.c.reason
            ).where(*open_lines, quarantine.c.field == "quote_crm_id")):
        try:
            named = json.loads(record).get("quote_crm_id") if record else None
        except (ValueError, AttributeError):
            named = record
        for candidate in boundary.ids_within(named):
            quote = wanted.get(_id_key(candidate))
            if quote is not None:
                found.setdefault(quote, set()).add((crm_id, field, reason))
    return {q: sorted(entries) for q, entries in found.items()}


def _id_key(crm_id: str) -> str:
    """An id as the quarantine's references are compared with it (see :func:`_refused_lines`)."""
    return str(boundary.same_id(crm_id)).lower()


def lines_of(connection: str, quote_ids: list[str]) -> Select[str, str, str]:
    """The live lines of these quotes as (crm id, quote crm id, data), in no order: sorted in
    Python, because an ORDER BY crm_id makes SQLite walk every line of the connection by the
    key index instead of looking the quotes up in ``ix_sync_records_line_quote``. The object
    is a literal in the SQL: SQLite uses a partial index only when the query's own text
    implies the index's condition."""
    return select(sync_records.c.crm_id, sync_records.c.parent_crm_id, sync_records.c.data
                  ).where(sync_records.c.connection == connection,
                          sync_records.c.object == literal("quote_line", literal_execute=True),
                          sync_records.c.parent_crm_id.in_(quote_ids),
                          sync_records.c.deleted_at.is_(None))


def _ledger_ids(uow: UnitOfWork, connection: str, obj: str, crm_ids: set[str]) -> dict[str, int]:
    return {crm_id: int(ledger_id) for crm_id, ledger_id in uow.conn.execute(select(
        sync_records.c.crm_id, sync_records.c.ledger_id).where(
        sync_records.c.connection == connection, sync_records.c.object == obj,
        text_in(uow.conn, sync_records.c.crm_id, sorted(crm_ids)),
        sync_records.c.deleted_at.is_(None),
        sync_records.c.ledger_id.is_not(None)))}
