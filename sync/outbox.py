"""The outbox: what each CRM record should show, with a content hash.

Rules kept here:
- ``refresh`` computes the payload of every account (and handed-off quote) of a connection whose
  billing figures may have moved since the last refresh (a watermark kept as the cursor of the
  pseudo-object ``_outbox``; the first refresh of a day adds every account with a document past
  due, since days passing change overdue days with no event; ``full=True`` or a first refresh
  takes them all), and writes a row only when the hash changed. A refresh that found nothing
  moved keeps the watermark as it is (no write).
- A row whose new hash equals the last acknowledged hash is ``acked`` again (nothing to send);
  any other change is ``pending`` with its attempts reset.
- Payload values are JSON: money and dates as text, decoded by field name at push time.
- Opt-in (``write_hold``): ``credit_hold`` (the CRM's own hold flag) is set only while a reason
  billing places (``credit_limit``, ``overdue``: billing's view says which) applies, and cleared
  only when billing was the one that set it (its last acknowledged value); otherwise the field
  is left out entirely.
- Documents (opt-in per connection, ``documents=True``): every issued invoice and memo of an
  account the refresh looks at gets a ``document`` row (keyed by the document's stable key
  ``<kind>-<id>``, the CRM record's external id; its number, type, dates, total, balance,
  status, currency and the account's CRM id) and a ``document_file`` row (which PDF to attach,
  once: its payload never changes, so once acknowledged it is never sent again). A payment or
  a memo application changes only the balance and status: only those are sent.
- Which accounts moved, and what an account or an order shows, is billing's answer, read
  through its service layer (``accounts.changed_since``, ``receivables.accounts_with_overdue``,
  the batched ``views.account_views`` / ``views.order_views`` / ``views.orders_of_accounts``);
  this module never reads billing's tables. Payloads are computed per chunk of accounts (or
  hand-offs) and written with one multi-row insert and one multi-row update per chunk.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, select, tuple_, update
from sqlalchemy.sql import ColumnElement

from billing_core.adapters.bulk import BulkInsert, id_in, text_in
from billing_core.adapters.gc_pause import gc_paused
from billing_core.service.accounts import changed_since
from billing_core.service.crm_documents import (
    DocumentView,
    LineView,
    document_lines,
    document_views,
)
from billing_core.service.receivables import accounts_with_overdue
from billing_core.service.views import (
    AccountView,
    OrderView,
    account_views,
    order_views,
    orders_of_accounts,
)
from sync.mapping import text_hash
from sync.runs import get_cursor, save_cursor
from sync.states import OutboxState
from sync.tables import handoffs, outbox, sync_records

DECIMAL_FIELDS = frozenset({"open_balance", "available_credit", "exposure", "total", "balance"})
DATE_FIELDS = frozenset({"last_invoice_date", "issue_date", "due_date"})
INT_FIELDS = frozenset({"oldest_overdue_days", "doc_id"})
#: The outbox objects of the documents push, in push order (a file needs its record first).
DOCUMENT_OBJECTS = ("document", "document_file")
WATERMARK = "_outbox"


def decode(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in DECIMAL_FIELDS:
        return Decimal(value)
    if field in DATE_FIELDS:
        return date.fromisoformat(value)
    if field in INT_FIELDS:
        return int(value)
    return value


def payload_of(view: AccountView, *, write_hold: bool = False,
               acked: dict[str, Any] | None = None) -> dict[str, Any]:
    """An account's payload from billing's view of it."""
    reasons = view.hold_reasons
    payload: dict[str, Any] = {
        "billing_hold": bool(reasons), "billing_hold_reasons": ";".join(reasons),
        "open_balance": str(view.open_balance),
        "available_credit": _text(view.available_credit),
        "exposure": str(view.exposure),
        "oldest_overdue_days": view.oldest_overdue_days,
        "last_invoice_number": view.last_invoice_number,
        "last_invoice_date": view.last_invoice_date.isoformat() if view.last_invoice_date
        else None,
    }
    if write_hold:
        if view.held_by_billing:
            payload["credit_hold"] = True
        elif acked and "credit_hold" in acked:
            payload["credit_hold"] = False
    return payload


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def quote_payload(view: OrderView) -> dict[str, Any]:
    """A handed-off quote's payload from billing's view of its order."""
    return {"order_number": view.order_number,
            "provisioning_status": view.provisioning_status,
            "invoice_number": view.first_invoice_number}


def document_payload(view: DocumentView, account_crm_id: str,
                     lines: list[LineView] | None = None) -> dict[str, Any]:
    """An issued document's CRM record payload (its key is the outbox row's ``crm_id``), with
    its ``_lines`` for a CRM that keeps them (never sent as a field; see crm_documents)."""
    extra: dict[str, Any] = {} if lines is None else {"_lines": [
        {"key": ln.key, "line_no": ln.line_no, "description": ln.description,
         "quantity": str(ln.quantity), "unit_price": str(ln.unit_price), "tax": str(ln.tax)}
        for ln in lines]}
    return {**extra, "account_crm_id": account_crm_id, "number": view.number,
            "document_type": view.type_label,
            "issue_date": view.issue_date.isoformat() if view.issue_date else None,
            "due_date": view.due_date.isoformat() if view.due_date else None,
            "total": str(view.total), "balance": str(view.balance), "status": view.status,
            "currency": view.currency}


def file_payload(view: DocumentView) -> dict[str, Any]:
    """Which file to attach to the document's CRM record (sent once)."""
    return {"kind": view.kind, "doc_id": view.doc_id, "title": view.number,
            "filename": f"{view.number}.pdf"}


def _put_documents(conn: Connection, connection: str, part: list[tuple[int, str]],
                   now: datetime, with_lines: bool = False) -> int:
    crm_of = dict(part)
    views = document_views(conn, [ledger_id for ledger_id, _ in part])
    if not views:
        return 0
    lines = document_lines(conn, views) if with_lines else {}
    keys = [v.key for v in views]
    pending = 0
    for obj in DOCUMENT_OBJECTS:
        writes = _Writes(connection, _existing(conn, connection, obj, keys), now)
        for view in views:
            writes.put(obj, view.key, view.doc_id,
                       document_payload(view, crm_of[view.account_id], lines.get(view.key))
                       if obj == "document"
                       else file_payload(view))
        pending += writes.flush(conn)
    return pending


#: ``json.dumps(payload, sort_keys=True)``'s encoder, built once (``dumps`` with an option
#: builds one per call).
_PAYLOAD = json.JSONEncoder(sort_keys=True)


class _Writes:
    """One chunk's outbox rows, written with one insert and one update statement."""

    def __init__(self, connection: str, existing: dict[tuple[str, str], Any],
                 now: datetime) -> None:
        self.connection, self.existing, self.now = connection, existing, now
        self.inserts: list[tuple[Any, ...]] = []
        self.updates: list[dict[str, Any]] = []
        self.pending = 0

    def put(self, obj: str, crm_id: str, ledger_id: int, payload: dict[str, Any]) -> None:
        text = _PAYLOAD.encode(payload)
        digest = text_hash(text)
        row = self.existing.get((obj, crm_id))
        if row is None:
            self.inserts.append((self.connection, obj, crm_id, ledger_id, text, digest,
                                 OutboxState.PENDING, 0, self.now, self.now))
            self.pending += 1
            return
        if row["hash"] == digest:
            return
        state = OutboxState.ACKED if digest == row["acked_hash"] else OutboxState.PENDING
        self.updates.append({"b_id": row["id"], "b_payload": text, "b_hash": digest,
                             "b_state": state})
        self.pending += state is OutboxState.PENDING

    def flush(self, conn: Connection) -> int:
        _INSERT.run(conn, self.inserts)
        if self.updates:
            conn.execute(update(outbox).where(outbox.c.id == bindparam("b_id")).values(
                payload=bindparam("b_payload"), hash=bindparam("b_hash"),
                state=bindparam("b_state"), attempts=0, next_attempt_at=self.now,
                last_error=None, dead_at=None, updated_at=self.now), self.updates)
        return self.pending


_INSERT = BulkInsert(outbox, ("connection", "object", "crm_id", "ledger_id", "payload", "hash",
                              "state", "attempts", "next_attempt_at", "updated_at"))


def _existing(conn: Connection, connection: str, obj: str,
              crm_ids: list[str]) -> dict[tuple[str, str], Any]:
    if not crm_ids:
        return {}
    return {(r["object"], r["crm_id"]): r for r in conn.execute(
        select(outbox).where(outbox.c.connection == connection, outbox.c.object == obj,
                             text_in(conn, outbox.c.crm_id, crm_ids))).mappings()}


LINK_KEYS = (sync_records.c.crm_id,)
HANDOFF_KEYS = (handoffs.c.quote_crm_id, handoffs.c.revision)


def account_links(connection: str) -> Select[Any]:
    """(ledger id, crm id) of the connection's live, linked accounts; keyed by LINK_KEYS."""
    return select(sync_records.c.ledger_id, *LINK_KEYS).where(
        sync_records.c.connection == connection, sync_records.c.object == "account",
        sync_records.c.deleted_at.is_(None), sync_records.c.ledger_id.is_not(None))


def done_handoffs(connection: str) -> Select[Any]:
    """(order id, quote crm id, revision) of the quotes handed off; keyed by HANDOFF_KEYS."""
    return select(handoffs.c.order_id, *HANDOFF_KEYS).where(
        handoffs.c.connection == connection, handoffs.c.state == "done",
        handoffs.c.order_id.is_not(None))


def keyset_page(stmt: Select[Any], keys: Sequence[ColumnElement[Any]],
                after: Sequence[Any] | None, size: int) -> Select[Any]:
    """The page of ``stmt`` after the key values ``after`` (None: the first page)."""
    page = stmt if after is None else stmt.where(tuple_(*keys) > tuple_(*after))
    return page.order_by(*keys).limit(size)


def _keyset(conn: Connection, stmt: Select[Any], keys: Sequence[ColumnElement[Any]],
            size: int) -> Iterator[Sequence[Any]]:
    """``stmt``'s rows in pages of ``size``, ordered by ``keys`` (unique together, the last
    selected columns, and a prefix of an index after its equality columns: the account links
    walk ``uq_sync_records_key``, the hand-offs ``uq_handoffs_quote_rev``), so a full refresh
    holds one page of rows, not every account's, and no page sorts the whole table."""
    last: tuple[Any, ...] | None = None
    width = len(keys)
    while True:
        rows = conn.execute(keyset_page(stmt, keys, last, size)).all()
        if not rows:
            return
        yield rows
        last = tuple(rows[-1][-width:])
        if len(rows) < size:
            return


def _handed_off(conn: Connection, connection: str, wanted: set[int] | None,
                size: int) -> Iterator[Sequence[Any]]:
    """The done hand-offs to refresh, in pages: all of them by key, or those of the ``wanted``
    accounts' orders (billing names them), ``size`` accounts at a time (an incremental refresh
    reads only theirs)."""
    if wanted is None:
        yield from _keyset(conn, done_handoffs(connection), HANDOFF_KEYS, size)
        return
    ids = sorted(wanted)
    for start in range(0, len(ids), size):
        order_ids = orders_of_accounts(conn, ids[start:start + size])
        if not order_ids:
            continue
        # by order id alone (ix_handoffs_order), connection and state kept in Python: with them
        # in SQL, SQLite (no statistics) took the equality on connection and walked every
        # hand-off of the connection for each page of accounts
        rows = sorted(((o, q, r) for o, q, r, conn_name, state in conn.execute(
            select(handoffs.c.order_id, *HANDOFF_KEYS, handoffs.c.connection, handoffs.c.state)
            .where(id_in(conn, handoffs.c.order_id, order_ids)))
            if conn_name == connection and state == "done"), key=lambda t: (t[1], t[2]))
        if rows:
            yield rows


@gc_paused
def _refresh_accounts(conn: Connection, connection: str, part: Sequence[Any], now: datetime, *,
                      grace_days: int, include_unbilled: bool, write_hold: bool,
                      documents: bool | str) -> int:
    """One chunk of accounts' rows (and their documents'); how many became pending."""
    part = [(int(ledger_id), crm_id) for ledger_id, crm_id in part]
    ids = [ledger_id for ledger_id, _ in part]
    existing = _existing(conn, connection, "account", [c for _, c in part])
    views = account_views(conn, ids, now.date(), grace_days=grace_days,
                          include_unbilled=include_unbilled)
    writes = _Writes(connection, existing, now)
    for ledger_id, crm_id in part:
        row = existing.get(("account", crm_id))
        acked = json.loads(row["acked_payload"]) if row is not None \
            and row["acked_payload"] else None
        writes.put("account", crm_id, ledger_id, payload_of(
            views[ledger_id], write_hold=write_hold, acked=acked))
    pending = writes.flush(conn)
    if documents:
        pending += _put_documents(conn, connection, part, now, with_lines=documents == "lines")
    return pending


@gc_paused
def _refresh_quotes(conn: Connection, connection: str, found: Sequence[Any],
                    now: datetime) -> int:
    """One page of done hand-offs' quote rows; how many became pending. An amended quote has
    a done hand-off per revision: it shows its newest (rows come in revision order; a
    revision in a later page updates the row)."""
    latest = {q: int(o) for o, q, _ in found}
    orders = order_views(conn, latest.values())
    writes = _Writes(connection, _existing(conn, connection, "quote", list(latest)), now)
    for quote_id, order_id in latest.items():
        writes.put("quote", quote_id, order_id, quote_payload(orders[order_id]))
    return writes.flush(conn)


def refresh(engine: Engine, connection: str, now: datetime, *, full: bool = False,
            grace_days: int = 0, include_unbilled: bool = True, write_hold: bool = False,
            documents: bool | str = False,
            only_accounts: Iterable[int] | None = None, chunk: int = 2000) -> int:
    """Recompute payloads; returns how many rows became pending."""
    with engine.connect() as conn:
        mark = get_cursor(conn, connection, WATERMARK)
    since = datetime.fromisoformat(mark) if mark else None
    take_all = full or since is None
    new_day = since is not None and since.date() != now.date()
    started = now
    pending = 0
    with engine.begin() as conn:
        links = account_links(connection)
        if only_accounts is not None:
            wanted: set[int] | None = set(only_accounts)
        elif take_all or since is None:
            wanted = None
        else:
            wanted = changed_since(conn, since - timedelta(seconds=5))
            if new_day:
                wanted |= accounts_with_overdue(conn, now.date())
        if wanted is not None:
            links = links.where(id_in(conn, sync_records.c.ledger_id, sorted(wanted)))
        for part in _keyset(conn, links, LINK_KEYS, chunk):
            pending += _refresh_accounts(conn, connection, part, now, grace_days=grace_days,
                                         include_unbilled=include_unbilled,
                                         write_hold=write_hold, documents=documents)
        for found in _handed_off(conn, connection, wanted, chunk):
            pending += _refresh_quotes(conn, connection, found, now)
        if only_accounts is None and (wanted is None or wanted or new_day):
            # Nothing moved since the watermark: it stays (the next refresh looks from it, a
            # superset of what it would look at), and a sync with nothing to do writes nothing.
            save_cursor(conn, connection, WATERMARK, started.isoformat(), now)
    return pending
