"""What a full read did not return, found in the database instead of in memory.

A full read (``ledgerbridge sync --full``, the first run, or a connector's fallback when the CRM
refuses an expired change-tracking token) must end by reporting the records billing knows that
the CRM no longer returns: deleted with no trace left in the recycle bin or change log. Keeping
the ids a read returned in a Python set costs memory in proportion to the CRM's size (tens of
MB at a few hundred thousand records); here they go to a temporary table instead, so a full
pull's memory stays flat in the number of records.

Rules kept here:
- ``SeenTable`` is the connectors' ``Sweep``. It is created for every pull and costs nothing
  unless the connector starts a full read (``begin``): then it checks out a connection of its
  own and creates ``ledgerbridge_seen`` as a TEMPORARY table (per connection on SQLite and
  PostgreSQL, so concurrent pulls cannot see each other's ids, and a crashed process leaves
  nothing behind).
- ``saw`` appends a page's ids (one bulk insert, committed; on SQLite in a deferred
  transaction, which writes the temporary database only and never takes the main database's
  write lock). It runs in the pull's read-ahead
  thread; the connection is only ever used by one thread at a time.
- When billing knows no live record of the object when the read begins (a first pull),
  nothing can be missing: the sweep stays idle (no table, no inserts).
- ``missing`` indexes the table, then returns the ids of the connection's live
  ``sync_records`` of that object that are not in it, in id order. It reads committed data
  only: a record first written by the page being applied is in the table already.
- ``close`` drops the table and returns the connection (the engine calls it when the object's
  pull ends, however it ends).
"""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, exists, select, text

from billing_core.adapters.bulk import BulkInsert
from sync.tables import sync_records

_META = MetaData()
SEEN = Table("ledgerbridge_seen", _META, Column("crm_id", String(64), nullable=False),
             prefixes=["TEMPORARY"])
_INSERT = BulkInsert(SEEN, ("crm_id",))


class SeenTable:
    """The ids one full read of (connection, object) returned, in a temporary table."""

    def __init__(self, engine: Engine, connection: str, obj: str) -> None:
        self.engine, self.connection, self.obj = engine, connection, obj
        self._conn: Connection | None = None
        self.count = 0
        self.idle = False

    def begin(self) -> None:
        if self._conn is None:
            # A deferred BEGIN on SQLite: writing a TEMPORARY table takes no lock on the main
            # database, so the read-ahead never waits for the page being applied.
            self._conn = self.engine.connect().execution_options(ledger_read_only=True)
        conn = self._conn
        SEEN.drop(conn, checkfirst=True)
        self.count = 0
        # Billing knows nothing of this object yet (a first pull): nothing can disappear, so
        # nothing is recorded. Whatever this read adds, it has seen.
        self.idle = conn.execute(select(sync_records.c.id).where(
            sync_records.c.connection == self.connection, sync_records.c.object == self.obj,
            sync_records.c.deleted_at.is_(None)).limit(1)).first() is None
        if not self.idle:
            SEEN.create(conn)
        conn.commit()

    def saw(self, crm_ids: Sequence[str]) -> None:
        if self._conn is None:
            raise RuntimeError("SeenTable.saw() before begin()")
        if self.idle:
            self.count += len(crm_ids)
        elif crm_ids:
            _INSERT.run(self._conn, [(i,) for i in crm_ids])
            self._conn.commit()
            self.count += len(crm_ids)

    def missing(self) -> list[str]:
        if self._conn is None:
            raise RuntimeError("SeenTable.missing() before begin()")
        if self.idle:
            return []
        conn = self._conn
        conn.execute(text("CREATE INDEX ix_ledgerbridge_seen ON ledgerbridge_seen (crm_id)"))
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE ledgerbridge_seen"))
        found = [r[0] for r in conn.execute(
            select(sync_records.c.crm_id).where(
                sync_records.c.connection == self.connection,
                sync_records.c.object == self.obj, sync_records.c.deleted_at.is_(None),
                ~exists().where(SEEN.c.crm_id == sync_records.c.crm_id))
            .order_by(sync_records.c.crm_id))]
        conn.commit()
        return found

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback()
            SEEN.drop(conn, checkfirst=True)
            conn.commit()
        finally:
            conn.close()
