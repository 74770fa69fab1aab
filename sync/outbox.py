"""The outbox: what each CRM record should show, with a content hash.

Rules kept here:
- ``refresh`` computes the payload of every account (and handed-off quote) of a connection whose
  billing figures may have moved since the last refresh (a watermark kept as the cursor of the
  pseudo-object ``_outbox``; the first refresh of a day adds every account with a document past
  due, since days passing change overdue days with no event; ``full=True`` or a first refresh
  takes them all), and writes a row only when the hash changed.
- A row whose new hash equals the last acknowledged hash is ``acked`` again (nothing to send);
  any other change is ``pending`` with its attempts reset.
- Payload values are JSON: money and dates as text, decoded by field name at push time.
- Opt-in (``write_hold``): ``credit_hold`` (the CRM's own hold flag) is set only while a reason
  billing places (``credit_limit``, ``overdue``) applies, and cleared only when billing was the
  one that set it (its last acknowledged value); otherwise the field is left out entirely.
- Which accounts moved is billing's answer (``accounts.changed_since``,
  ``receivables.accounts_with_overdue``). Payloads are computed per chunk of accounts with
  billing's batched reads (``receivables.account_summaries``, ``holds.current_reasons_many``)
  and written with one multi-row insert and one multi-row update per chunk.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, select, tuple_, update
from sqlalchemy.sql import ColumnElement

from billing_core.adapters.tables import (
    invoice_lines,
    invoices,
    one_time_charges,
    orders,
    provisioning_requests,
    subscriptions,
)
from billing_core.domain.money import from_minor
from billing_core.service.accounts import changed_since
from billing_core.adapters.bulk import BulkInsert, id_in, text_in
from billing_core.service.holds import current_reasons_many
from billing_core.service.receivables import account_summaries, accounts_with_overdue
from sync.mapping import text_hash
from sync.runs import get_cursor, save_cursor
from sync.tables import handoffs, outbox, sync_records

DECIMAL_FIELDS = frozenset({"open_balance", "available_credit", "exposure"})
DATE_FIELDS = frozenset({"last_invoice_date"})
INT_FIELDS = frozenset({"oldest_overdue_days"})
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


BILLING_REASONS = frozenset({"credit_limit", "overdue"})


def payload_of(s: dict[str, Any], reason_names: Iterable[str], *, write_hold: bool = False,
               acked: dict[str, Any] | None = None) -> dict[str, Any]:
    """An account's payload from its receivables summary and its hold reasons."""
    cur = s["currency"]
    reasons = sorted(reason_names)

    def money(minor: int | None) -> str | None:
        return None if minor is None else str(from_minor(int(minor), cur))

    payload: dict[str, Any] = {
        "billing_hold": bool(reasons), "billing_hold_reasons": ";".join(reasons),
        "open_balance": money(s["open_balance_minor"]),
        "available_credit": money(s["available_credit_minor"]),
        "exposure": money(s["exposure_minor"]),
        "oldest_overdue_days": int(s["oldest_overdue_days"]),
        "last_invoice_number": s["last_invoice_number"],
        "last_invoice_date": s["last_invoice_date"].isoformat() if s["last_invoice_date"]
        else None,
    }
    if write_hold:
        if BILLING_REASONS & set(reasons):
            payload["credit_hold"] = True
        elif acked and "credit_hold" in acked:
            payload["credit_hold"] = False
    return payload


def quote_payloads(conn: Connection, order_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Each handed-off quote's payload (order number, provisioning status, first invoice),
    read with four queries per chunk of orders."""
    ids = sorted(set(order_ids))
    states: dict[int, list[str]] = {}
    status: dict[int, str] = {}
    first: dict[int, tuple[Any, int, str]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for order_id, state in conn.execute(select(
                provisioning_requests.c.order_id, provisioning_requests.c.state).where(
                id_in(conn, provisioning_requests.c.order_id, chunk))):
            states.setdefault(int(order_id), []).append(state)
        status.update((int(i), st) for i, st in conn.execute(
            select(orders.c.id, orders.c.status).where(id_in(conn, orders.c.id, chunk))))
        billed = (invoices.c.number.is_not(None), invoices.c.status != "void")
        via_subs = (select(subscriptions.c.order_id, invoices.c.issue_date, invoices.c.id,
                           invoices.c.number)
                    .join(invoice_lines, invoice_lines.c.subscription_id == subscriptions.c.id)
                    .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
                    .where(id_in(conn, subscriptions.c.order_id, chunk), *billed))
        via_charges = (select(one_time_charges.c.order_id, invoices.c.issue_date, invoices.c.id,
                              invoices.c.number)
                       .join(invoices, invoices.c.id == one_time_charges.c.invoice_id)
                       .where(id_in(conn, one_time_charges.c.order_id, chunk), *billed))
        for stmt in (via_subs, via_charges):
            for order_id, issued, invoice_id, number in conn.execute(stmt):
                key = (issued or date.min, int(invoice_id), number)
                if int(order_id) not in first or key < first[int(order_id)]:
                    first[int(order_id)] = key
    return {order_id: {"order_number": f"ORD-{order_id}",
                       "provisioning_status": _provisioning(states.get(order_id, []),
                                                            status.get(order_id)),
                       "invoice_number": first[order_id][2] if order_id in first else None}
            for order_id in ids}


def _provisioning(states: list[str], order_status: str | None) -> str:
    if not states:
        return "not required"
    if "awaiting_hold_release" in states or order_status == "held":
        return "waiting for hold release"
    if "failed" in states:
        return "failed"
    if all(s in ("provisioned", "cancelled") for s in states):
        return "provisioned" if "provisioned" in states else "cancelled"
    if all(s in ("provisioned", "dispatched", "cancelled") for s in states):
        return "dispatched"
    return "in progress"


class _Writes:
    """One chunk's outbox rows, written with one insert and one update statement."""

    def __init__(self, connection: str, existing: dict[tuple[str, str], Any],
                 now: datetime) -> None:
        self.connection, self.existing, self.now = connection, existing, now
        self.inserts: list[tuple[Any, ...]] = []
        self.updates: list[dict[str, Any]] = []
        self.pending = 0

    def put(self, obj: str, crm_id: str, ledger_id: int, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, sort_keys=True)
        digest = text_hash(text)
        row = self.existing.get((obj, crm_id))
        if row is None:
            self.inserts.append((self.connection, obj, crm_id, ledger_id, text, digest,
                                 "pending", 0, self.now, self.now))
            self.pending += 1
            return
        if row["hash"] == digest:
            return
        state = "acked" if digest == row["acked_hash"] else "pending"
        self.updates.append({"b_id": row["id"], "b_payload": text, "b_hash": digest,
                             "b_state": state})
        self.pending += state == "pending"

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
    """(order id, account id, quote crm id, revision) of the quotes handed off; keyed by
    HANDOFF_KEYS."""
    return (select(handoffs.c.order_id, orders.c.account_id, *HANDOFF_KEYS)
            .join(orders, orders.c.id == handoffs.c.order_id)
            .where(handoffs.c.connection == connection, handoffs.c.state == "done"))


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
    accounts, ``size`` accounts at a time (an incremental refresh reads only theirs)."""
    if wanted is None:
        yield from _keyset(conn, done_handoffs(connection), HANDOFF_KEYS, size)
        return
    ids = sorted(wanted)
    for start in range(0, len(ids), size):
        rows = conn.execute(done_handoffs(connection).where(
            id_in(conn, orders.c.account_id, ids[start:start + size]))
            .order_by(*HANDOFF_KEYS)).all()
        if rows:
            yield rows


def refresh(engine: Engine, connection: str, now: datetime, *, full: bool = False,
            grace_days: int = 0, write_hold: bool = False,
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
        on_date = now.date()
        for part in _keyset(conn, links, LINK_KEYS, chunk):
            part = [(int(ledger_id), crm_id) for ledger_id, crm_id in part]
            ids = [ledger_id for ledger_id, _ in part]
            existing = _existing(conn, connection, "account", [c for _, c in part])
            summaries = account_summaries(conn, ids, on_date, grace_days=grace_days)
            reasons = current_reasons_many(conn, ids)
            writes = _Writes(connection, existing, now)
            for ledger_id, crm_id in part:
                row = existing.get(("account", crm_id))
                acked = json.loads(row["acked_payload"]) if row is not None \
                    and row["acked_payload"] else None
                writes.put("account", crm_id, ledger_id, payload_of(
                    summaries[ledger_id], reasons.get(ledger_id, {}), write_hold=write_hold,
                    acked=acked))
            pending += writes.flush(conn)
        for found in _handed_off(conn, connection, wanted, chunk):
            # An amended quote has a done hand-off per revision: it shows its newest (rows
            # come in revision order; a revision in a later page updates the row).
            latest = {q: int(o) for o, _, q, _ in found}
            payloads = quote_payloads(conn, latest.values())
            writes = _Writes(connection, _existing(conn, connection, "quote", list(latest)),
                             now)
            for quote_id, order_id in latest.items():
                writes.put("quote", quote_id, order_id, payloads[order_id])
            pending += writes.flush(conn)
        if only_accounts is None:
            save_cursor(conn, connection, WATERMARK, started.isoformat(), now)
    return pending
