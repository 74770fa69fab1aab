"""Cursors and run records.

Rules kept here:
- ``save_cursor`` runs in the page's transaction (the caller's connection), never alone.
- A run row is written and committed when the run starts (``running``) so a killed process
  leaves a trace; ``finish_run`` closes it with the outcome and per-object counts.
- Outcomes: ``ok``, ``partial`` (some records quarantined or failed to push),
  ``stopped: API budget``, ``stopped: shutdown``, ``failed: <error>``; a run still ``running``
  whose process is gone shows as ``abandoned`` in ``status``.
"""
from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from sync.tables import sync_cursors, sync_run_objects, sync_runs

COUNTS = ("read", "upserted", "unchanged", "quarantined", "deleted", "pushed", "failed",
          "api_calls")


@dataclass
class ObjectStats:
    read: int = 0
    upserted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    deleted: int = 0
    pushed: int = 0
    failed: int = 0
    api_calls: int = 0
    outcome: str = "ok"


@dataclass
class RunReport:
    run_id: int
    connection: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = "running"
    error: str | None = None
    objects: dict[str, ObjectStats] = field(default_factory=dict)
    handed_off: int = 0
    disappeared: list[str] = field(default_factory=list)
    api_used: int | None = None
    api_limit: int | None = None

    def stats(self, obj: str) -> ObjectStats:
        return self.objects.setdefault(obj, ObjectStats())

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.objects.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["objects"] = {k: asdict(v) for k, v in self.objects.items()}
        return out


#: The run a thread is working on, for log lines about problems ("run=%s").
current_run: ContextVar[int | None] = ContextVar("current_run", default=None)


def get_cursor(conn: Connection, connection: str, obj: str) -> str | None:
    return conn.execute(select(sync_cursors.c.cursor).where(
        sync_cursors.c.connection == connection, sync_cursors.c.object == obj)).scalar()


def save_cursor(conn: Connection, connection: str, obj: str, cursor: str | None,
                now: datetime) -> None:
    done = conn.execute(update(sync_cursors).where(
        sync_cursors.c.connection == connection, sync_cursors.c.object == obj)
        .values(cursor=cursor, updated_at=now))
    if done.rowcount == 0:
        conn.execute(insert(sync_cursors).values(connection=connection, object=obj,
                                                 cursor=cursor, updated_at=now))


def start_run(engine: Engine, connection: str, trigger: str, options: dict[str, Any],
              now: datetime | None = None) -> RunReport:
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        run_id = conn.execute(insert(sync_runs).values(
            trigger=trigger, connection=connection, started_at=now, outcome="running",
            options=json.dumps(options, default=str))).inserted_primary_key
    if run_id is None:
        raise RuntimeError("the database returned no id for the new run")
    return RunReport(int(run_id[0]), connection, trigger, now)


def finish_run(engine: Engine, report: RunReport, now: datetime | None = None) -> None:
    report.finished_at = now or datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == report.run_id).values(
            finished_at=report.finished_at, outcome=report.outcome,
            api_used=report.api_used, api_limit=report.api_limit,
            error=(report.error or None) and report.error[:2000]))
        if report.objects:
            conn.execute(insert(sync_run_objects), [
                {"run_id": report.run_id, "object": obj, **asdict(stats)}
                for obj, stats in report.objects.items()])


def last_runs(conn: Connection) -> list[dict[str, Any]]:
    """The newest finished-or-running run per (connection, object), plus runs without objects."""
    newest = (select(sync_run_objects.c.object, sync_runs.c.connection,
                     func.max(sync_run_objects.c.run_id).label("run_id"))
              .join(sync_runs, sync_runs.c.id == sync_run_objects.c.run_id)
              .group_by(sync_run_objects.c.object, sync_runs.c.connection).subquery())
    rows = conn.execute(
        select(sync_runs.c.connection, sync_run_objects, sync_runs.c.started_at,
               sync_runs.c.finished_at, sync_runs.c.trigger,
               sync_runs.c.outcome.label("run_outcome"))
        .join(newest, (newest.c.run_id == sync_run_objects.c.run_id)
              & (newest.c.object == sync_run_objects.c.object))
        .join(sync_runs, sync_runs.c.id == sync_run_objects.c.run_id)
        .order_by(sync_runs.c.connection, sync_run_objects.c.object)).mappings()
    return [dict(r) for r in rows]


def run_objects(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(sync_run_objects).where(
        sync_run_objects.c.run_id == run_id).order_by(sync_run_objects.c.id)).mappings()]


def get_run(conn: Connection, run_id: int) -> dict[str, Any] | None:
    """One run's record with its per-object counts (``objects``), or None if there is none."""
    row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).mappings().first()
    if row is None:
        return None
    return {**dict(row), "objects": run_objects(conn, run_id)}
