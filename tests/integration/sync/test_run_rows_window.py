"""``last_runs`` reads a bounded number of runs however long the history (a status read after a
year of five-minute runs cost 0.9 s on SQLite with a scan of every run; 0.05 s now), and still
finds each object's newest covering run, on SQLite and PostgreSQL.

History (LISTED_WINDOW shrunk to 5): run 1 covers account and price, price with a row of its
own (it read 3 records); run 2 covers both, nothing happened (listed only); runs 3-12 cover
account only (price left the connection's objects). price's last run is run 2 (found past the
window, after its row), account's run 12; the other connection's quote, run 13."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from sync import runs
from sync.tables import sync_run_objects, sync_runs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _run(conn, run_id: int, connection: str, objects: str) -> None:
    at = T0 + timedelta(minutes=5 * run_id)
    conn.execute(insert(sync_runs).values(
        id=run_id, trigger="schedule", connection=connection, started_at=at,
        finished_at=at + timedelta(seconds=3), outcome="ok", objects=objects, api_calls=1))


def test_each_objects_newest_covering_run_past_the_window(engine, monkeypatch) -> None:
    monkeypatch.setattr(runs, "LISTED_WINDOW", 5)
    with engine.begin() as conn:
        _run(conn, 1, "sf", '{"account":1,"price":1}')
        conn.execute(insert(sync_run_objects).values(
            run_id=1, object="price", read=3, upserted=3, api_calls=1, outcome="ok"))
        _run(conn, 2, "sf", '{"account":1,"price":2}')
        for run_id in range(3, 13):
            _run(conn, run_id, "sf", '{"account":1}')
        _run(conn, 13, "d365", '{"quote":4}')
    with engine.connect() as conn:
        last = {(r["connection"], r["object"]): r for r in runs.last_runs(conn)}
    assert {k: v["run_id"] for k, v in last.items()} == {
        ("sf", "account"): 12, ("sf", "price"): 2, ("d365", "quote"): 13}
    assert (last[("sf", "price")]["read"], last[("sf", "price")]["api_calls"]) == (0, 2)
    assert last[("d365", "quote")]["api_calls"] == 4


@pytest.mark.parametrize("window", [5, 200])
def test_a_row_newer_than_every_listing_wins(engine, monkeypatch, window: int) -> None:
    """price's row in run 3 (something happened) is newer than run 2's listing."""
    monkeypatch.setattr(runs, "LISTED_WINDOW", window)
    with engine.begin() as conn:
        _run(conn, 2, "sf", '{"account":1,"price":1}')
        _run(conn, 3, "sf", '{"account":1,"price":1}')
        conn.execute(insert(sync_run_objects).values(
            run_id=3, object="price", read=1, upserted=1, api_calls=1, outcome="ok"))
    with engine.connect() as conn:
        last = {r["object"]: (r["run_id"], r["read"]) for r in runs.last_runs(conn)}
    assert last == {"account": (3, 0), "price": (3, 1)}
