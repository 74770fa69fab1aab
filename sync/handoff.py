"""Hand-off: an accepted CRM quote becomes a billing order, exactly once per revision.

Rules kept here:
- The order's source reference is ``<connection>:<quote crm id>:rev<revision>``; billing's
  ``place_order`` returns the existing order for a known reference, and ``handoffs`` has the
  same key unique, so a crash anywhere re-runs into "already done".
- A quote's order and its ``handoffs`` row commit together: quotes are handed off in chunks
  of ``CHUNK``, one transaction per chunk. Each quote is first looked at (waiting, withdrawn,
  reversed; its account fetched in a savepoint of its own); the chunk's orders then go through the
  gate together (``gate.accept_orders``: place + credit evaluation + provisioning, a few
  statements per chunk, not per order), which refuses an order alone (nothing of it written,
  its quote left waiting with the reason). A quote that raises (budget spent) is undone alone
  and the orders of the quotes before it are placed and committed before the error goes on.
  A chunk's quotes, hand-off history, lines, accounts and products are read with a few
  queries per chunk, not per quote.
- A quote whose account is not known yet waits (``waiting``); its account is fetched once with
  ``read_one`` and reconciled; if the CRM has no such account the quote is quarantined.
- A quote without lines waits. A newer revision of a handed-off quote is an amendment
  (``amends_order_id`` = the previous revision's order).
- A quote that leaves the accepted state (or is deleted) after hand-off is reported once
  (``reversed_in_crm``, a warning line), never silently reversed in billing.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ColumnElement

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import products as product_table
from billing_core.domain.errors import LedgerError
from billing_core.service import gate, ledger_uow
from billing_core.service import orders as orders_service
from billing_core.adapters.bulk import text_in
from billing_core.service.pricing import get_product
from connectors.base import Connector
from sync import mapping
from sync.mapping import Invalid, QuoteLineRec, QuoteRec
from sync.reconcile import apply_page, ledger_id_of, quarantine_record
from sync.runs import current_run
from sync.tables import handoffs, sync_records

log = logging.getLogger(__name__)


@dataclass
class HandoffReport:
    placed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    reversed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def source_ref(connection: str, quote_id: str, revision: int) -> str:
    return f"{connection}:{quote_id}:rev{revision}"


def candidates(engine: Engine, connection: str, touched: Iterable[str]) -> set[str]:
    with engine.connect() as conn:
        waiting = {r[0] for r in conn.execute(select(handoffs.c.quote_crm_id).where(
            handoffs.c.connection == connection, handoffs.c.state == "waiting"))}
    return set(touched) | waiting


CHUNK = 500      # quotes per transaction


def run_handoffs(engine: Engine, connector: Connector | None, connection: str,
                 quote_ids: Iterable[str], accepted: frozenset[str], *,
                 uow_factory: Callable[[], UnitOfWork] | None = None) -> HandoffReport:
    report = HandoffReport()
    factory = uow_factory or (lambda: ledger_uow(engine))
    todo = _worth_a_look(engine, connection, set(quote_ids), accepted)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        outcomes: list[tuple[str, str | None]] = []
        with factory() as uow:
            known = _Known.read(uow, connection, chunk)
            orders: list[tuple[QuoteRec, orders_service.OrderIn]] = []
            try:
                for quote_id in chunk:
                    outcomes.append((quote_id, _one(uow, connector, connection, quote_id,
                                                    accepted, known, orders)))
            except BaseException:
                # A quote that fails (budget spent, CRM error) is undone alone; the quotes
                # before it are handed off and commit, as they would one transaction per quote.
                outcomes += _place(uow, connection, orders, known)
                uow.commit()
                raise
            outcomes += _place(uow, connection, orders, known)
            uow.commit()
        for quote_id, outcome in outcomes:
            if outcome:
                getattr(report, outcome).append(quote_id)
    return report


@dataclass
class _Known:
    """What the hand-off of a chunk of quotes reads, read once for the chunk."""

    quotes: dict[str, tuple[QuoteRec, bool]]
    history: dict[str, list[Any]]
    lines: dict[str, list[QuoteLineRec]]
    accounts: dict[str, int]
    products: dict[str, int]
    product_rows: dict[int, Any]

    @classmethod
    def read(cls, uow: UnitOfWork, connection: str, quote_ids: list[str]) -> _Known:
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
                handoffs.c.connection == connection, text_in(conn, handoffs.c.quote_crm_id, quote_ids))
                .order_by(handoffs.c.quote_crm_id, handoffs.c.revision)).mappings():
            history.setdefault(row["quote_crm_id"], []).append(row)
        lines: dict[str, list[QuoteLineRec]] = {}
        for _, parent, data in sorted(tuple(r) for r in conn.execute(lines_of(connection, quote_ids))):
            if data:
                lines.setdefault(parent, []).append(mapping.line_from_json(data))
        accounts = _ledger_ids(uow, connection, "account",
                               {q.account_crm_id for q, _ in quotes.values()})
        products = _ledger_ids(uow, connection, "product",
                               {ln.product_crm_id for ls in lines.values() for ln in ls})
        product_rows = {int(r["id"]): r for r in conn.execute(select(product_table).where(
            product_table.c.id.in_(sorted(set(products.values()))))).mappings()}
        return cls(quotes, history, lines, accounts, products, product_rows)


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
    if conn.dialect.name == "postgresql":
        return cast(sync_records.c.data, JSONB)["status"].astext
    return func.json_extract(sync_records.c.data, "$.status")


def _worth_a_look(engine: Engine, connection: str, quote_ids: set[str],
                  accepted: frozenset[str]) -> list[str]:
    with engine.connect().execution_options(ledger_read_only=True) as conn:
        return sorted(worth_a_look(conn, connection, quote_ids, accepted))


def _set(uow: UnitOfWork, connection: str, quote: QuoteRec, state: str, detail: str,
         order_id: int | None = None) -> None:
    ref = source_ref(connection, quote.crm_id, quote.revision)
    now = uow.now()
    done = uow.conn.execute(update(handoffs).where(handoffs.c.source_ref == ref).values(
        state=state, detail=detail, order_id=order_id, updated_at=now))
    if done.rowcount == 0:
        uow.conn.execute(insert(handoffs).values(
            connection=connection, quote_crm_id=quote.crm_id, revision=quote.revision,
            source_ref=ref, order_id=order_id, state=state, detail=detail,
            created_at=now, updated_at=now))


def _one(uow: UnitOfWork, connector: Connector | None, connection: str, quote_id: str,
         accepted: frozenset[str], known: _Known,
         orders: list[tuple[QuoteRec, orders_service.OrderIn]]) -> str | None:
    """Decide what the quote needs; an order to place is added to ``orders`` (placed with
    the chunk's others by :func:`_place`)."""
    if quote_id not in known.quotes:
        return None
    quote, deleted = known.quotes[quote_id]
    history = known.history.get(quote_id, [])
    placed = [h for h in history if h["state"] in ("done", "reversed_in_crm")]
    if deleted or quote.status not in accepted:
        now_status = "deleted" if deleted else repr(quote.status)
        reversed_any = False
        for h in placed:
            if h["state"] == "done":
                uow.conn.execute(update(handoffs).where(handoffs.c.id == h["id"]).values(
                    state="reversed_in_crm", updated_at=uow.now(),
                    detail=f"quote is now {now_status} in the CRM; order {h['order_id']} "
                           "left as it is"))
                log.warning("quote left accepted state after hand-off run=%s connection=%s "
                            "quote=%s order=%s status=%s", current_run.get(), connection,
                            quote_id, h["order_id"], now_status)
                reversed_any = True
        if reversed_any:
            return "reversed"
        uow.conn.execute(update(handoffs).where(
            handoffs.c.connection == connection, handoffs.c.quote_crm_id == quote_id,
            handoffs.c.state == "waiting").values(state="withdrawn", updated_at=uow.now()))
        return None
    if any(h["revision"] == quote.revision and h["state"] in ("done", "reversed_in_crm")
           for h in history):
        return None
    account_id = known.accounts.get(quote.account_crm_id)
    if account_id is None:      # fetched for an earlier quote of this chunk, perhaps
        account_id = ledger_id_of(uow.conn, connection, "account", quote.account_crm_id)
    if account_id is None and connector is not None:
        with uow.savepoint():       # the CRM read may fail (budget): undone alone
            account_id = _fetch_account(uow, connector, connection, quote)
        if account_id is None:
            return "failed"
    if account_id is None:
        _set(uow, connection, quote, "waiting", f"account {quote.account_crm_id} not pulled yet")
        return "waiting"
    lines = known.lines.get(quote_id, [])
    if not lines:
        _set(uow, connection, quote, "waiting", "no quote lines yet")
        return "waiting"
    previous = [h for h in placed if h["revision"] < quote.revision and h["order_id"]]
    amends = int(previous[-1]["order_id"]) if previous else None
    try:
        orders.append((quote, _order_in(uow, connection, quote, int(account_id), lines, amends,
                                        known)))
    except Invalid as exc:
        _refused(uow, connection, quote, exc)
        return "failed"
    return None


def _refused(uow: UnitOfWork, connection: str, quote: QuoteRec, exc: Exception) -> None:
    _set(uow, connection, quote, "waiting", f"billing refused the order: {exc}")
    log.warning("hand-off refused run=%s connection=%s quote=%s error=%s",
                current_run.get(), connection, quote.crm_id, exc)


def _place(uow: UnitOfWork, connection: str, orders: list[tuple[QuoteRec, orders_service.OrderIn]],
           known: _Known) -> list[tuple[str, str]]:
    """Place the chunk's orders through the gate together (the gate decides with the unit of
    work's credit policy: the configured one); a refused order leaves its quote waiting."""
    outcomes: list[tuple[str, str]] = []
    done: list[tuple[QuoteRec, str, int]] = []
    results = gate.accept_orders(uow, [order for _, order in orders]) if orders else []
    for (quote, order), result in zip(orders, results, strict=True):
        if isinstance(result, LedgerError):
            _refused(uow, connection, quote, result)
            outcomes.append((quote.crm_id, "failed"))
            continue
        done.append((quote, "amendment" if order.amends_order_id else "order placed", result))
        log.info("handed off connection=%s quote=%s revision=%s order=%s", connection,
                 quote.crm_id, quote.revision, result)
        outcomes.append((quote.crm_id, "placed"))
    _set_done(uow, connection, done, known)
    orders.clear()
    return outcomes


def _set_done(uow: UnitOfWork, connection: str, done: list[tuple[QuoteRec, str, int]],
              known: _Known) -> None:
    """:func:`_set` ``done`` for the chunk's placed quotes: a revision seen before (it waited)
    is updated, the new ones are inserted with one statement."""
    now, fresh = uow.now(), []
    for quote, detail, order_id in done:
        if any(h["revision"] == quote.revision for h in known.history.get(quote.crm_id, ())):
            _set(uow, connection, quote, "done", detail, order_id)
            continue
        fresh.append({"connection": connection, "quote_crm_id": quote.crm_id,
                      "revision": quote.revision, "order_id": order_id, "state": "done",
                      "source_ref": source_ref(connection, quote.crm_id, quote.revision),
                      "detail": detail, "created_at": now, "updated_at": now})
    if fresh:
        uow.conn.execute(insert(handoffs), fresh)


def _fetch_account(uow: UnitOfWork, connector: Connector, connection: str,
                   quote: QuoteRec) -> int | None:
    """The quote's account was not pulled yet: read it once and reconcile it, or quarantine."""
    record = connector.read_one("account", quote.account_crm_id)
    if record is None:
        quarantine_record(uow, connection, "quote", json.loads(mapping.rec_to_json(quote)),
            Invalid("account_crm_id", quote.account_crm_id, "unknown account"))
        return None
    apply_page(uow, connection, "account", [record])
    return ledger_id_of(uow.conn, connection, "account", quote.account_crm_id)


def _order_in(uow: UnitOfWork, connection: str, quote: QuoteRec, account_id: int,
              lines: list[QuoteLineRec], amends: int | None, known: _Known
              ) -> orders_service.OrderIn:
    subs: list[orders_service.SubscriptionItem] = []
    charges: list[orders_service.OneTimeItem] = []
    today = uow.now().date()
    for line in lines:
        product_id = known.products.get(line.product_crm_id)
        if product_id is None:
            raise Invalid("product_crm_id", line.product_crm_id, "unknown product")
        product = known.product_rows.get(product_id) or get_product(uow.conn, product_id)
        start: date = line.start_date or quote.start_date or today
        if product["kind"] == "recurring":
            subs.append(orders_service.SubscriptionItem(
                product_id=int(product_id), quantity=line.quantity, start_date=start,
                frequency="annual" if product["billing_period"] == "year" else "monthly",
                unit_price=line.unit_price))
        elif product["kind"] == "one_time":
            charges.append(orders_service.OneTimeItem(
                product_id=int(product_id), quantity=line.quantity, charge_date=start,
                unit_price=line.unit_price))
    return orders_service.OrderIn(
        account_id=account_id, source_ref=source_ref(connection, quote.crm_id, quote.revision),
        order_date=quote.start_date or today, subscriptions=tuple(subs),
        one_time_charges=tuple(charges), amends_order_id=amends)
