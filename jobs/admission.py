"""Bounded admission of manual resyncs (``POST /sync:run``): how many may wait, and how they
wait.

Rules kept here:
- A run is *queued* from the moment it is admitted until it holds its connection's job lock
  and starts working. One queued run per (connection, scope), where the scope is what the run
  reads (object, full, account): a further request for the same scope joins the queued run
  and gets its id.
- At most ``max_queued`` queued runs per connection (different scopes); one more is refused
  with :class:`jobs.api.admin_sync.SyncBusy` (the API answers 429 with ``Retry-After``).
- Queued runs of one connection wait their turn on an in-process lock (``turn``), which holds
  no database connection; only the run whose turn it is asks for the database job lock. So the
  number of threads and of pooled connections a burst of requests can take is bounded, and the
  daemon's other jobs keep theirs.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jobs.api.admin_sync import SyncBusy

#: What a run reads: (object or None for all, full, account or None).
Scope = tuple[str | None, bool, str | None]

#: Queued runs one connection may have (one per scope): all objects, one object, full, ...
MAX_QUEUED_PER_CONNECTION = 4
#: What a refused request is told to wait before asking again: a run rarely takes less.
RETRY_AFTER_SECONDS = 30


class Admission:
    def __init__(self, max_queued: int = MAX_QUEUED_PER_CONNECTION,
                 retry_after: int = RETRY_AFTER_SECONDS) -> None:
        self.max_queued = max_queued
        self.retry_after = retry_after
        self._guard = threading.Lock()
        self._queued: dict[tuple[str, Scope], int] = {}
        self._turns: dict[str, threading.Lock] = {}

    def admit(self, connection: str, scope: Scope, record: Callable[[], int]) -> tuple[int, bool]:
        """The id of the run queued for (connection, scope), and whether it is a new one:
        an existing queued run is joined, else ``record()`` records a new one (when the
        connection has room). Admissions are serialised, so two requests never both record."""
        with self._guard:
            queued = self._queued.get((connection, scope))
            if queued is not None:
                return queued, False
            waiting = sum(1 for conn, _ in self._queued if conn == connection)
            if waiting >= self.max_queued:
                raise SyncBusy(connection, waiting, self.retry_after)
            run_id = record()
            self._queued[(connection, scope)] = run_id
            return run_id, True

    def started(self, connection: str, scope: Scope, run_id: int) -> None:
        """The run holds its lock and works: it is no longer queued (idempotent)."""
        with self._guard:
            if self._queued.get((connection, scope)) == run_id:
                del self._queued[(connection, scope)]

    def queued(self, connection: str) -> list[int]:
        with self._guard:
            return sorted(run for (conn, _), run in self._queued.items() if conn == connection)

    @contextmanager
    def turn(self, connection: str) -> Iterator[None]:
        """Wait, holding no database connection, until no other manual run of ``connection``
        in this process is waiting for or holding its job lock."""
        with self._guard:
            lock = self._turns.setdefault(connection, threading.Lock())
        with lock:
            yield
