"""Run-at-most-once locks across processes, with no home-made coordination.

Rules kept here:
- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a dedicated connection,
  keyed by a 64-bit hash of the connection's schema and the job name (``hashtextextended``
  of ``<current_schema>:<name>``): advisory locks belong to the whole database, so two ledgers
  in two schemas of one database (two deployments, parallel test runs) never hold each
  other's locks, while every worker of one ledger meets on the same key. Released (and the
  connection closed) when the block ends, or by the server if the process dies. Only the
  holder keeps a connection: each try while waiting takes one from the pool and gives it back
  at once, so waiters cannot exhaust the pool. (Keys before this rule were a hash of the name
  alone: stop every worker before starting ones with this rule, as for any upgrade.)
- SQLite: an ``flock`` on a file beside the database (``<db>.<job>.lock``); the OS releases it
  when the process dies. An in-memory database uses a process-local lock.
- ``wait=True`` polls (bounded by ``timeout``) instead of giving up at once: a manual resync
  waits for the daemon's run of the same connection to finish. A waiter given ``stop`` (the
  daemon's stop event) gives up as soon as it is set: a SIGTERM never waits out the timeout.
"""
from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

_local: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


#: The lock's key, computed by the server: the schema the connection works in, and the name.
_KEY = "hashtextextended(coalesce(current_schema(), '') || ':' || :name, 0)"


def is_held(engine: Engine, name: str) -> bool:
    """PostgreSQL: whether a session holds lock ``name`` now (``pg_locks``); False on
    SQLite. For tests and status, not for deciding anything (it can change at once)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        key = int(conn.execute(text(f"SELECT {_KEY}"), {"name": name}).scalar_one())
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((classid::bigint << 32) | objid::bigint) = :k AND objsubid = 1 "
            ), {"k": key}).scalar_one())


def lock_path(engine: Engine, name: str) -> str | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return f"{os.path.abspath(database)}.{safe}.lock"


def _pg_try(engine: Engine, name: str) -> Connection | None:
    """One try on a connection of its own: the connection that holds the lock, or None (the
    connection is back in the pool, so a waiter holds none between tries)."""
    conn = engine.connect()
    try:
        got = bool(conn.execute(text(f"SELECT pg_try_advisory_lock({_KEY})"),
                                {"name": name}).scalar())
        conn.commit()
    except BaseException:
        conn.close()
        raise
    if got:
        return conn
    conn.close()
    return None


@contextmanager
def job_lock(engine: Engine, name: str, *, wait: bool = False,
             timeout: float = 600.0, poll: float = 0.2,
             stop: Callable[[], bool] | None = None) -> Iterator[bool]:
    """Yields True when this process holds the lock for the block, False when another does
    (after ``timeout`` with ``wait``, or once ``stop()`` says so)."""
    deadline = time.monotonic() + timeout
    stopped = stop or (lambda: False)
    if engine.dialect.name == "postgresql":
        conn = _pg_try(engine, name)
        while conn is None and wait and time.monotonic() < deadline and not stopped():
            time.sleep(poll)
            conn = _pg_try(engine, name)
        if conn is None:
            yield False
            return
        try:
            yield True
        finally:
            try:
                conn.execute(text(f"SELECT pg_advisory_unlock({_KEY})"), {"name": name})
                conn.commit()
            except BaseException:
                conn.invalidate()   # never back to the pool still holding the lock
                raise
            finally:
                conn.close()
        return
    path = lock_path(engine, name)
    if path is None:
        with _local_guard:
            lock = _local.setdefault(name, threading.Lock())
        got = lock.acquire(blocking=False)
        while not got and wait and time.monotonic() < deadline and not stopped():
            got = lock.acquire(timeout=max(min(poll, deadline - time.monotonic()), 0))
        try:
            yield got
        finally:
            if got:
                lock.release()
        return
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
            if got or not wait or time.monotonic() >= deadline or stopped():
                break
            time.sleep(poll)
        try:
            yield got
        finally:
            if got:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
