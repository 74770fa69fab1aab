"""Run-at-most-once locks across processes, with no home-made coordination.

Rules kept here:
- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a dedicated connection,
  keyed by a 64-bit hash of the job name; released (and the connection closed) when the block
  ends, or by the server if the process dies. Only the holder keeps a connection: each try
  while waiting takes one from the pool and gives it back at once, so waiters cannot exhaust
  the pool.
- SQLite: an ``flock`` on a file beside the database (``<db>.<job>.lock``); the OS releases it
  when the process dies. An in-memory database uses a process-local lock.
- ``wait=True`` polls (bounded by ``timeout``) instead of giving up at once: a manual resync
  waits for the daemon's run of the same connection to finish.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

_local: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


def lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_path(engine: Engine, name: str) -> str | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return f"{os.path.abspath(database)}.{safe}.lock"


def _pg_try(engine: Engine, key: int) -> Connection | None:
    """One try on a connection of its own: the connection that holds the lock, or None (the
    connection is back in the pool, so a waiter holds none between tries)."""
    conn = engine.connect()
    try:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
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
             timeout: float = 600.0, poll: float = 0.2) -> Iterator[bool]:
    """Yields True when this process holds the lock for the block, False when another does."""
    deadline = time.monotonic() + timeout
    if engine.dialect.name == "postgresql":
        key = lock_key(name)
        conn = _pg_try(engine, key)
        while conn is None and wait and time.monotonic() < deadline:
            time.sleep(poll)
            conn = _pg_try(engine, key)
        if conn is None:
            yield False
            return
        try:
            yield True
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
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
        got = lock.acquire(timeout=max(deadline - time.monotonic(), 0) if wait else -1) \
            if wait else lock.acquire(blocking=False)
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
            if got or not wait or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        try:
            yield got
        finally:
            if got:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
