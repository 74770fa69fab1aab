"""Reads run per page of accounts, per batch, per call or per cycle cost what they fetch, not
what the table holds (SQLite; migration 0025).

SQLite plans without statistics: a condition whose selective column had no index, or came after
an equality the planner preferred, walked the table each time:
- the incremental outbox refresh's done hand-offs of a page of accounts' orders
  (``connection = ? AND state = 'done' AND order_id IN``): every hand-off of the connection;
- accounts by CRM id alone (usage ingestion's batch look-up, ``resolve_account``): every account;
- a payment by reference alone (``find_payment``): every payment;
- each cycle's runs still running and latest API usage (``sync_runs``, a row per cycle): every
  run ever recorded;
- the event inbox's claim (``connection = ? AND (state = 'new' OR ...)``, grouped by record):
  every event of the connection, done ones included, for each round.
Measured without a clock: SQLite's virtual machine steps for the same small work with 20 and
3,000 rows of each kind. PostgreSQL plans from statistics and is not the subject.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from read_cost import counting, steps
from sqlalchemy import Engine, insert, update

from billing_core.adapters.tables import accounts, orders, payments
from billing_core.service.accounts import resolve_account
from billing_core.service.payments import find_payment
from billing_core.service.usage_ingest import _lookup
from sync.inbox import claim
from sync.outbox import _handed_off
from sync.runs import last_api_usage, running_runs
from sync.tables import event_inbox, handoffs, sync_runs

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
CHUNK = range(1, 11)


def _build(engine: Engine, first: int, last: int) -> None:
    """Accounts first..last, each with an order, its quote's done hand-off, a payment and a
    finished sync run (with its API usage); the first build also a run still running."""
    ids = range(first, last + 1)
    with engine.begin() as conn:
        conn.execute(insert(accounts), [
            {"id": a, "ext_source": "sf", "ext_object": "Account", "ext_id": f"A{a}",
             "name": f"Account {a}", "currency": "USD", "country": "US", "created_at": NOW,
             "updated_at": NOW} for a in ids])
        conn.execute(insert(orders), [
            {"id": a, "account_id": a, "source_ref": f"o{a}", "status": "active",
             "order_date": date(2026, 1, 1), "created_at": NOW} for a in ids])
        conn.execute(insert(handoffs), [
            {"connection": "sf", "quote_crm_id": f"Q{a:05d}", "revision": 1,
             "source_ref": f"sf:Q{a}:1", "order_id": a, "state": "done", "created_at": NOW,
             "updated_at": NOW} for a in ids])
        conn.execute(insert(payments), [
            {"account_id": a, "currency": "USD", "amount_minor": 1000 + a,
             "received_on": date(2026, 2, 1), "reference": f"R{a}", "created_at": NOW}
            for a in ids])
        conn.execute(insert(sync_runs), [
            {"trigger": "schedule", "connection": "sf",
             "started_at": NOW - timedelta(days=30, minutes=a),
             "finished_at": NOW - timedelta(days=30, minutes=a - 1), "outcome": "ok",
             "api_used": a, "api_limit": 100_000} for a in ids])
        conn.execute(insert(event_inbox), [
            {"connection": "sf", "source": "salesforce_json", "event_id": f"ev{a}",
             "object": "account", "crm_id": f"A{a}", "action": "Update",
             "received_at": NOW - timedelta(hours=1), "state": "new" if a in CHUNK else "done",
             "processed_at": None if a in CHUNK else NOW} for a in ids])
        if first == 1:
            conn.execute(insert(sync_runs).values(
                trigger="schedule", connection="sf", started_at=NOW, outcome="running",
                options="{}"))
            conn.execute(insert(sync_runs).values(
                trigger="schedule", connection="sf", started_at=NOW, finished_at=NOW,
                outcome="ok", api_used=7, api_limit=100_000))


READS: dict[str, Callable[[Any], Any]] = {
    "handed_off": lambda conn: [list(page) for page in _handed_off(conn, "sf", set(CHUNK), 4)],
    "ingest_lookup": lambda conn: sorted(_lookup(conn, accounts.c.ext_id,
                                                 [f"A{a}" for a in CHUNK],
                                                 accounts.c.ext_id, accounts.c.id)),
    "resolve_account": lambda conn: [resolve_account(conn, f"A{a}")["id"] for a in CHUNK],
    "find_payment": lambda conn: [find_payment(conn, f"R{a}")["amount_minor"] for a in CHUNK],
    "sync_runs": lambda conn: ([r.id for r in running_runs(conn, "sf")],
                               last_api_usage(conn, "sf", NOW - timedelta(days=1))),
}


def _claim_steps(engine: Engine) -> tuple[int, Any]:
    """Steps of one inbox claim round (every connection the engine opens is counted); the
    claimed events are put back to ``new`` afterwards."""
    with counting(engine) as counted:
        got = claim(engine, "sf", NOW, keys=100)
    with engine.begin() as conn:
        conn.execute(update(event_inbox).where(event_inbox.c.id.in_(got.event_ids))
                     .values(state="new", claimed_by=None, claimed_at=None, attempts=0))
    return counted.steps, (got.event_ids, got.records)


def test_page_batch_call_and_cycle_reads_do_not_grow_with_the_table(
        sqlite_engine: Engine) -> None:
    _build(sqlite_engine, 1, 20)
    few = {name: steps(sqlite_engine, read) for name, read in READS.items()}
    few["inbox_claim"] = _claim_steps(sqlite_engine)
    _build(sqlite_engine, 21, 3000)
    many = {name: steps(sqlite_engine, read) for name, read in READS.items()}
    many["inbox_claim"] = _claim_steps(sqlite_engine)

    assert {n: got for n, (_, got) in many.items()} == {n: got for n, (_, got) in few.items()}
    got = {n: g for n, (_, g) in few.items()}
    assert got["handed_off"] == [[(a, f"Q{a:05d}", 1) for a in range(1, 5)],
                                 [(a, f"Q{a:05d}", 1) for a in range(5, 9)],
                                 [(a, f"Q{a:05d}", 1) for a in range(9, 11)]]
    assert got["ingest_lookup"] == sorted((f"A{a}", a) for a in CHUNK)
    assert got["resolve_account"] == list(CHUNK)
    assert got["find_payment"] == [1000 + a for a in CHUNK]
    assert got["sync_runs"][0] == [21] and got["sync_runs"][1][:2] == (7, 100_000)
    assert got["inbox_claim"] == (list(CHUNK), {"account": [f"A{a}" for a in CHUNK]})
    # the other 2,990 rows of each kind (150 times as many) may not be walked
    for name in few:
        assert many[name][0] < few[name][0] * 2, (name, few[name][0], many[name][0])
