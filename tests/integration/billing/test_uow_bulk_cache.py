"""SQLite's page cache: small per pooled connection, raised for one bulk unit of work only."""
from __future__ import annotations

from sqlalchemy import Engine

from billing_core.adapters.db import (
    SQLITE_BULK_CACHE_KIB,
    SQLITE_CACHE_KIB,
    UnitOfWork,
    bulk_cache,
)


def _cache_kib(raw: object) -> int:
    cur = raw.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA cache_size")
    value = -int(cur.fetchone()[0])
    cur.close()
    return value


def test_bulk_cache_lasts_while_bulk_units_of_work_follow_each_other(sqlite_engine: Engine
                                                                     ) -> None:
    with UnitOfWork(sqlite_engine) as uow:
        raw = uow.conn.connection.dbapi_connection
        assert _cache_kib(raw) == SQLITE_CACHE_KIB
    for _ in range(2):                                    # two bill-run chunks in a row
        with bulk_cache(), UnitOfWork(sqlite_engine) as uow:
            assert uow.conn.connection.dbapi_connection is raw   # the pool's one connection
            assert _cache_kib(raw) == SQLITE_BULK_CACHE_KIB
            assert not uow.conn.in_transaction()          # set without beginning one
    with UnitOfWork(sqlite_engine) as uow:                # any other unit of work: given back
        assert uow.conn.connection.dbapi_connection is raw
        assert _cache_kib(raw) == SQLITE_CACHE_KIB


def test_bulk_cache_is_harmless_elsewhere(engine: Engine) -> None:
    with bulk_cache(), UnitOfWork(engine) as uow:
        uow.conn.exec_driver_sql("SELECT 1")
        uow.commit()
