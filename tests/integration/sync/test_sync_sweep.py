"""The full read's sweep: the ids a read returned live in a temporary table, not in memory."""
from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert

from billing_core.service import ledger_uow
from sync.sweep import SeenTable
from sync.tables import sync_records

NOW = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def _known(engine: Engine, obj: str, *crm_ids: str, deleted: tuple[str, ...] = (),
           connection: str = "sf") -> None:
    with engine.begin() as conn:
        conn.execute(insert(sync_records), [
            {"connection": connection, "object": obj, "crm_id": i, "content_hash": "h",
             "updated_at": NOW, "deleted_at": NOW if i in deleted else None}
            for i in crm_ids + deleted])


def _has_seen_table(engine: Engine, raw: Any) -> bool:
    cur = raw.cursor()
    if engine.dialect.name == "sqlite":
        cur.execute("SELECT count(*) FROM sqlite_temp_master WHERE name = 'ledgerbridge_seen'")
        found = cur.fetchone()[0] == 1
    else:
        cur.execute("SELECT to_regclass('pg_temp.ledgerbridge_seen') IS NOT NULL")
        found = bool(cur.fetchone()[0])
        raw.rollback()
    cur.close()
    return found


def test_missing_is_what_billing_knows_and_the_read_did_not_return(engine: Engine) -> None:
    _known(engine, "account", "A1", "A2", "A3", "A4", deleted=("A9",))
    _known(engine, "quote", "A2")                       # another object: not this sweep's
    _known(engine, "account", "A3", connection="d365")  # another connection: neither
    sweep = SeenTable(engine, "sf", "account")
    try:
        sweep.begin()
        sweep.saw(["A1", "NEW1"])
        sweep.saw([])
        sweep.saw(["A3", "A1"])                         # a row read twice is harmless
        assert sweep.missing() == ["A2", "A4"]          # A9 is already gone
        assert sweep.count == 4
    finally:
        sweep.close()


def test_begin_again_forgets_what_was_seen(engine: Engine) -> None:
    _known(engine, "account", "A1", "A2")
    sweep = SeenTable(engine, "sf", "account")
    try:
        sweep.begin()
        sweep.saw(["A1", "A2"])
        sweep.begin()                                   # the read restarted as a full read
        sweep.saw(["A2"])
        assert sweep.missing() == ["A1"]
    finally:
        sweep.close()


def test_close_drops_the_table_and_a_sweep_never_begun_costs_nothing(engine: Engine) -> None:
    _known(engine, "account", "A1")
    unused = SeenTable(engine, "sf", "account")
    unused.close()
    sweep = SeenTable(engine, "sf", "account")
    sweep.begin()
    sweep.saw(["A1"])
    assert sweep._conn is not None
    raw = sweep._conn.connection.dbapi_connection       # back in the pool after close()
    assert _has_seen_table(engine, raw)
    sweep.close()
    sweep.close()                                       # twice is harmless
    assert not _has_seen_table(engine, raw)
    again = SeenTable(engine, "sf", "account")          # a pooled connection is reused cleanly
    try:
        again.begin()
        assert again.missing() == ["A1"]
    finally:
        again.close()


def test_two_sweeps_at_once_do_not_see_each_other(engine: Engine) -> None:
    _known(engine, "account", "A1", "A2")
    one, two = SeenTable(engine, "sf", "account"), SeenTable(engine, "sf", "account")
    try:
        one.begin()
        two.begin()
        one.saw(["A1"])
        two.saw(["A2"])
        assert (one.missing(), two.missing()) == (["A2"], ["A1"])
    finally:
        one.close()
        two.close()


def test_recording_ids_never_waits_for_the_page_being_applied(engine: Engine) -> None:
    """The read-ahead thread writes the sweep while the engine holds a write transaction."""
    _known(engine, "account", "A1", "A2")
    sweep = SeenTable(engine, "sf", "account")
    done: dict[str, Any] = {}

    def read_ahead() -> None:
        sweep.begin()
        sweep.saw(["A1"])
        done["missing"] = sweep.missing()

    try:
        with ledger_uow(engine) as uow:
            _ = uow.conn                                # the write transaction is open
            uow.conn.execute(insert(sync_records).values(
                connection="sf", object="account", crm_id="A3", content_hash="h",
                updated_at=NOW))
            thread = threading.Thread(target=read_ahead)
            thread.start()
            thread.join(timeout=10)
            assert not thread.is_alive(), "the sweep waited for the engine's write lock"
            uow.commit()
        assert done == {"missing": ["A2"]}              # A3 was not committed when it looked
    finally:
        sweep.close()


def test_a_first_pull_records_nothing(engine: Engine) -> None:
    """Billing knows nothing live of the object: nothing can be missing, nothing is written."""
    _known(engine, "account", deleted=("GONE",))          # only a deleted one
    _known(engine, "quote", "Q1")                         # another object
    sweep = SeenTable(engine, "sf", "account")
    try:
        sweep.begin()
        sweep.saw(["A1", "A2"])
        assert sweep.idle and sweep.count == 2
        assert sweep._conn is not None
        assert not _has_seen_table(engine, sweep._conn.connection.dbapi_connection)
        assert sweep.missing() == []
    finally:
        sweep.close()
