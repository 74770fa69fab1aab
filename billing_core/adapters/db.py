"""Engines and the unit of work.

Rules kept here
- Nothing connects at import time: ``make_engine`` is called by an entry point.
- SQLite (the embedded default) runs in WAL mode with a busy timeout and foreign keys on, and
  ``BEGIN IMMEDIATE`` for write transactions so two processes serialise instead of failing on
  a lock upgrade.
- A ``UnitOfWork`` is one transaction: it rolls back unless ``commit()`` is called, so an
  exception anywhere leaves the ledger as it was ("every operation completes or changes nothing").
  ``savepoint()`` gives per-item atomicity inside a batch.
- Service functions that move an account's credit inputs (a posted invoice, a payment, a memo,
  a limit change) call ``uow.touch(account_id)``; ``before_commit`` hooks (credit control) then
  run inside the same transaction, so a hold decision commits with the change that caused it.
- ``uow.now()`` is the clock every service uses; tests replace ``clock``.
- ``uow.actor`` names who makes the changes of this transaction (``cli:<user>``,
  ``api:<token name>``, ``sync:<connection>``, ``system``: the default); ``uow.run_id``
  optionally ties them to a request or run. The audit trail (``billing_core/service/audit.py``)
  records both with every change; billing never learns more of its caller than this string.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Page cache per connection (SQLite's own default is 2 MiB). Every pooled connection keeps its
# cache between units of work, so this is what the process's memory grows to per connection:
# 8 MiB keeps a 300,000 + 300,000 full pull as small as a 30,000 one, at no measured cost.
SQLITE_CACHE_KIB = 8 * 1024
# The bill run's chunks read and write the same tables and indexes one after another; a cache
# that stays warm from chunk to chunk is worth about a fifth of its time (100,000 accounts:
# 5,846 invoices/s against 4,860 with 8 MiB; raising it per chunk and dropping it after each
# gave nothing). So the bill run raises it for its own units of work (``bulk_cache()``), and
# the next other unit of work on that connection gives it back.
SQLITE_BULK_CACHE_KIB = 64 * 1024


def make_engine(url: str, *, echo: bool = False, **kwargs: Any) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        # Pooled connections: closing the last connection to a WAL database checkpoints and
        # fsyncs, which made every unit of work cost 15-25 ms with a pool of none.
        engine = create_engine(
            url, echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {"connect_timeout": 10})
    return create_engine(url, echo=echo, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is off; SQLAlchemy's begin event issues BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Readers use a deferred BEGIN (WAL lets them run beside a writer); writers take the
        # write lock up front, so two writers queue on the busy timeout instead of deadlocking.
        read_only = conn.get_execution_options().get("ledger_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_BULK: contextvars.ContextVar[bool] = contextvars.ContextVar("ledger_bulk_cache", default=False)


@contextmanager
def bulk_cache() -> Iterator[None]:
    """SQLite: the units of work opened inside this block (in this thread or task) get a page
    cache of ``SQLITE_BULK_CACHE_KIB``, which stays warm from one to the next on a pooled
    connection (the chunks of a bill run); the first unit of work opened elsewhere on that
    connection sets it back to ``SQLITE_CACHE_KIB``, and SQLite frees the pages above that."""
    token = _BULK.set(True)
    try:
        yield
    finally:
        _BULK.reset(token)


def _set_cache(conn: Connection, kib: int) -> None:
    """Set a pooled SQLite connection's page cache, on the driver connection itself (so no
    transaction begins), only when it differs from what that connection has."""
    info = conn.connection.info
    if info.get("ledger_cache_kib", SQLITE_CACHE_KIB) != kib:
        conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            f"PRAGMA cache_size=-{int(kib)}")
        info["ledger_cache_kib"] = kib


class UnitOfWork:
    """One transaction on one connection. Use as a context manager; call ``commit()``."""

    def __init__(self, engine: Engine, *, read_only: bool = False,
                 before_commit: list[Callable[[UnitOfWork], None]] | None = None,
                 clock: Callable[[], datetime] | None = None, policy: Any = None,
                 actor: str = "system", run_id: str | None = None) -> None:
        self.engine = engine
        self.actor = actor
        self.run_id = run_id
        self.read_only = read_only
        # The credit policy in force for this transaction: every hold decision taken in it
        # (the gate's, the commit hook's) uses the same one. None = the defaults.
        self.policy = policy
        self.before_commit = list(before_commit or [])
        self.clock = clock or (lambda: datetime.now(UTC))
        self.touched_accounts: set[int] = set()
        self.new_accounts: set[int] = set()
        self._conn: Connection | None = None
        self._last_steps: list[Callable[[UnitOfWork], None]] = []

    def now(self) -> datetime:
        return self.clock()

    def touch(self, account_id: int) -> None:
        """Record that this account's credit inputs changed in this transaction."""
        self.touched_accounts.add(account_id)
        self.new_accounts.discard(account_id)

    def created(self, account_id: int) -> None:
        """Record a new account: touched, and (until something else touches it) known to have
        no documents, orders, requests or hold reasons, so credit control can take its
        figures as zero instead of reading them."""
        self.touched_accounts.add(account_id)
        self.new_accounts.add(account_id)

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("UnitOfWork used outside its 'with' block")
        return self._conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __enter__(self) -> UnitOfWork:
        # The transaction begins with the first statement (SQLAlchemy's autobegin), so a unit
        # of work that only reads on SQLite never takes the write lock early.
        self.touched_accounts = set()
        self.new_accounts = set()
        self._last_steps = []
        self._conn = self.engine.connect()
        if self._conn.dialect.name == "sqlite":
            _set_cache(self._conn, SQLITE_BULK_CACHE_KIB if _BULK.get() else SQLITE_CACHE_KIB)
        if self.read_only:
            self._conn = self._conn.execution_options(ledger_read_only=True)
        return self

    def at_commit(self, step: Callable[[UnitOfWork], None]) -> None:
        """Run ``step`` in this transaction when it commits, before the ``before_commit``
        hooks (so they see what it wrote), once; a rollback drops it. For work that takes a
        lock every writer needs (the invoice number sequence): done last, that lock is held
        for the step, the hooks and the commit, not for the whole transaction."""
        self._last_steps.append(step)

    def run_commit_steps(self) -> None:
        """The ``at_commit`` steps now (a dry run that rolls back wants their effect too)."""
        steps, self._last_steps = self._last_steps, []
        for step in steps:
            step(self)

    def commit(self) -> None:
        self.run_commit_steps()
        for hook in self.before_commit:
            hook(self)
        self.conn.commit()
        self.touched_accounts.clear()
        self.new_accounts.clear()

    def rollback(self) -> None:
        self.conn.rollback()
        self._last_steps = []
        self.touched_accounts.clear()
        self.new_accounts.clear()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Nested transaction: an exception inside rolls back this block only, then re-raises."""
        nested = self.conn.begin_nested()
        steps = len(self._last_steps)
        try:
            yield
        except BaseException:
            nested.rollback()
            del self._last_steps[steps:]        # the block's commit steps go with it
            raise
        else:
            nested.commit()

    def __exit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                conn.rollback()
        finally:
            conn.close()
