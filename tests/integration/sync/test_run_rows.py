"""A sync with nothing to do writes one run row (issue 15, item 9), on SQLite and PostgreSQL.

A run lists the objects it covered in its own ``sync_runs`` row and writes a
``sync_run_objects`` row only for an object something happened to; ``status`` still shows
every object's last run (its time, counts and outcome) from whichever the newest is, and the
API calls still add up."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fake_crm import FakeCRM
from sqlalchemy import Engine, func, insert, select

from sync.engine import SyncOptions, run_cycle
from sync.runs import get_run
from sync.status import api_calls_by_connection, overview
from sync.tables import sync_cursors, sync_run_objects, sync_runs

T1 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
OBJECTS = {"account", "product", "price", "quote", "quote_line"}


def _crm() -> FakeCRM:
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1")
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3))
    return crm


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _cursors(engine: Engine) -> dict[str, tuple[str | None, datetime]]:
    with engine.connect() as conn:
        return {r.object: (r.cursor, r.updated_at) for r in conn.execute(select(sync_cursors))}


def test_a_no_change_sync_writes_one_run_row_and_status_shows_it(engine: Engine) -> None:
    crm = _crm()
    first = run_cycle(engine, crm, SyncOptions(full=True), clock=lambda: T1)
    assert first.outcome == "ok" and first.total("read") == 10 and first.total("pushed") > 0
    runs, rows, cursors = _count(engine, sync_runs), _count(engine, sync_run_objects), \
        _cursors(engine)
    assert rows == 5                                     # every object read something

    t2 = T1 + timedelta(minutes=40)
    again = run_cycle(engine, crm, SyncOptions(), clock=lambda: t2)
    assert again.outcome == "ok" and again.total("read") == 0
    assert set(again.objects) == OBJECTS
    # one row in the run tables: the run's own (the code before wrote 1 + 5)
    assert _count(engine, sync_runs) == runs + 1
    assert _count(engine, sync_run_objects) == rows
    # no CRM cursor written again (the outbox's watermark moves once, past the first run's
    # own changes: the third run, below, writes no cursor at all)
    crm_cursors = {k: v for k, v in _cursors(engine).items() if not k.startswith("_")}
    assert crm_cursors == {k: v for k, v in cursors.items() if not k.startswith("_")}
    cursors = _cursors(engine)
    third = run_cycle(engine, crm, SyncOptions(), clock=lambda: t2)
    assert third.outcome == "ok" and third.total("read") == 0
    assert _count(engine, sync_runs) == runs + 2 and _count(engine, sync_run_objects) == rows
    assert _cursors(engine) == cursors
    again = third

    # status: every object's last run is the no-change run, fresh (three 5-minute intervals
    # after the first run it would be stale), with its counts (zero) and API calls (one page)
    status = overview(engine, interval_minutes=5, now=t2 + timedelta(minutes=1))
    assert status["attention"] == []
    shown = {r["object"]: r for r in status["runs"]}
    assert set(shown) == OBJECTS
    for r in shown.values():
        assert r["run_id"] == again.run_id and r["started_at"] == t2
        assert r["outcome"] == "ok" and r["run_outcome"] == "ok" and r["age"] == "1m00s"
        assert (r["read"], r["upserted"], r["pushed"], r["api_calls"]) == (0, 0, 0, 1)
    assert status["api_calls_last_runs"] == 5
    # the run's record lists its objects; the API calls of all runs add up per connection
    with engine.connect() as conn:
        record = get_run(conn, again.run_id)
        calls = api_calls_by_connection(conn)
    assert record is not None
    assert {o["object"]: o["api_calls"] for o in record["objects"]} == dict.fromkeys(OBJECTS, 1)
    assert calls == {"fake": crm.calls}
    # ... and 16 minutes later with no run (over three intervals), every object is stale
    late = overview(engine, interval_minutes=5, now=t2 + timedelta(minutes=16))
    assert len([line for line in late["attention"] if "ok (16m00s ago)" in line]) == 5


def test_an_object_something_happened_to_gets_its_row_and_status_shows_its_counts(
        engine: Engine) -> None:
    crm = _crm()
    run_cycle(engine, crm, SyncOptions(full=True), clock=lambda: T1)
    rows = _count(engine, sync_run_objects)
    crm.put("account", "A1", credit_limit=Decimal(2000))
    crm.put("account", "A4", name="Bad", currency="XXX")                # quarantined
    crm.put("product", "P1", name="Seat (renamed)")
    t2 = T1 + timedelta(minutes=10)
    changed = run_cycle(engine, crm, SyncOptions(), clock=lambda: t2)
    assert changed.outcome == "partial"
    assert _count(engine, sync_run_objects) == rows + 2     # account and product only
    status = overview(engine, interval_minutes=5, now=t2 + timedelta(minutes=1))
    shown = {r["object"]: r for r in status["runs"]}
    assert (shown["account"]["upserted"], shown["account"]["quarantined"]) == (1, 1)
    assert shown["product"]["upserted"] == 1 and shown["price"]["upserted"] == 0
    assert {r["run_id"] for r in shown.values()} == {changed.run_id}
    assert {r["run_outcome"] for r in shown.values()} == {"partial"}

    # the next run with nothing to do shows zero counts again, from its own row alone
    t3 = t2 + timedelta(minutes=5)
    quiet = run_cycle(engine, crm, SyncOptions(), clock=lambda: t3)
    assert quiet.outcome == "ok"
    assert _count(engine, sync_run_objects) == rows + 2
    shown = {r["object"]: r for r in overview(engine, interval_minutes=5,
                                              now=t3)["runs"]}
    assert shown["account"]["quarantined"] == 0 and shown["product"]["upserted"] == 0
    assert {r["started_at"] for r in shown.values()} == {t3}


def test_runs_recorded_before_the_object_list_are_still_read(engine: Engine) -> None:
    """A run recorded by the code before (a row per object, no list in its run row) is an
    object's last run until a newer run covers the object."""
    with engine.begin() as conn:
        old = conn.execute(insert(sync_runs).values(
            trigger="schedule", connection="fake", started_at=T1, finished_at=T1,
            outcome="ok")).inserted_primary_key
        assert old is not None
        conn.execute(insert(sync_run_objects), [
            {"run_id": old[0], "object": obj, "read": 2, "api_calls": 1, "outcome": "ok"}
            for obj in ("account", "product")])
        conn.execute(insert(sync_runs).values(
            trigger="schedule", connection="fake", started_at=T1 + timedelta(minutes=5),
            finished_at=T1 + timedelta(minutes=5), outcome="ok",
            objects=json.dumps({"product": 1}, separators=(",", ":")), api_calls=1))
    shown = {r["object"]: r for r in overview(engine, interval_minutes=5,
                                              now=T1 + timedelta(minutes=6))["runs"]}
    assert shown["account"]["run_id"] == old[0] and shown["account"]["read"] == 2
    assert shown["product"]["run_id"] != old[0] and shown["product"]["read"] == 0
    with engine.connect() as conn:
        assert api_calls_by_connection(conn) == {"fake": 3}
