"""The seam between ``POST /sync:run`` and the sync engine.

The API never runs a sync on its request thread: it asks a :class:`SyncRunner` to start one in
the background and answers with the run id at once. The daemon passes a runner wired to the
sync engine; tests pass a fake. Without a runner the endpoint answers 503 ``sync_unavailable``.
Admission is bounded: a request for a run already queued gets that run's id; a connection with
too many queued runs refuses with :class:`SyncBusy` (429 with ``Retry-After``).
"""
from __future__ import annotations

from typing import Any, Protocol


class SyncBusy(Exception):
    """Too many manual runs of this connection are already queued: ask again later."""

    def __init__(self, connection: str, queued: int, retry_after: int) -> None:
        super().__init__(f"{queued} resyncs of connection {connection!r} are already queued; "
                         f"retry in {retry_after} s")
        self.connection = connection
        self.queued = queued
        self.retry_after = retry_after


class SyncRunner(Protocol):
    def start(self, connection: str, object: str | None, full: bool,
              account: str | None) -> int:
        """Record a run, start it in the background, return its id at once; when a run of the
        same connection and scope is already queued, return that run's id instead. Raises a
        ``LedgerError`` (e.g. ``NotFound('connection', ...)``) for a bad request and
        :class:`SyncBusy` when the connection has too many queued runs."""
        ...

    def get(self, run_id: int) -> dict[str, Any] | None:
        """The run's record (id, connection, trigger, outcome, started_at, finished_at, error,
        objects), or None when there is no such run."""
        ...
