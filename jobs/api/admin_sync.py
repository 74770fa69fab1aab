"""The seam between ``POST /sync:run`` and the sync engine.

The API never runs a sync on its request thread: it asks a :class:`SyncRunner` to start one in
the background and answers with the run id at once. The daemon passes a runner wired to the
sync engine; tests pass a fake. Without a runner the endpoint answers 503 ``sync_unavailable``.
"""
from __future__ import annotations

from typing import Any, Protocol


class SyncRunner(Protocol):
    def start(self, connection: str, object: str | None, full: bool,
              account: str | None) -> int:
        """Record a run, start it in the background, return its id at once. Raises a
        ``LedgerError`` (e.g. ``NotFound('connection', ...)``) for a bad request."""
        ...

    def get(self, run_id: int) -> dict[str, Any] | None:
        """The run's record (id, connection, trigger, outcome, started_at, finished_at, error,
        objects), or None when there is no such run."""
        ...
