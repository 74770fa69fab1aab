"""Cursors and run records.

Rules kept here:
- ``save_cursor`` runs in the page's transaction (the caller's connection), never alone.
- A run row is written and committed when the run starts (``running``) so a killed process
  leaves a trace; ``finish_run`` closes it with the outcome, the objects it covered (with their
  API calls, in the run's own row) and a ``sync_run_objects`` row for each object something
  happened to (:func:`eventful`). A run with nothing to do writes its one row and nothing else;
  an object's last run (:func:`last_runs`) is the newest run that covered it, whichever way.
- Outcomes: ``ok``, ``partial`` (some records quarantined or failed to push),
  ``stopped: API budget``, ``stopped: shutdown``, ``failed: <error>``, ``interrupted`` (an
  interrupt such as Ctrl-C raised inside the run: recorded with its counts so far),
  ``abandoned`` (closed by a later run: its process died while it was ``running``).
- A run records the process running it (``pid`` and ``host`` in its options): a ``running`` run
  whose process is gone on this host, or that has run longer than a bound wherever it ran, is
  abandoned (:func:`is_abandoned`); the next run of its connection closes it as ``abandoned``.
- A run whose end could not be written (the database went away: ``finish_run`` raises) is kept
  in memory, per engine, and written by the next ``start_run`` of the same process once the
  database answers again, with the outcome and error it ended with; left alone it stayed
  ``running`` for as long as the daemon lived (its process is alive, so no run closed it) and
  ``status`` reported it abandoned.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import weakref
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from billing_core.adapters import owner
from sync.tables import sync_cursors, sync_run_objects, sync_runs

log = logging.getLogger(__name__)

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
    #: Why a failure happened, for exit codes: ``config`` (a credential missing or refused),
    #: ``unreachable`` (the CRM did not answer after the bounded retries), or None.
    cause: str | None = None
    #: CRM ids asked for by name (``account=``) that the CRM does not have.
    not_found: list[str] = field(default_factory=list)
    #: Wall seconds of the run's phases (``pull``, ``handoff``, ``outbox``, ``push``; the
    #: push's read-back of its writes counts in ``push``), for the run's log line and the
    #: CLI's report; not stored.
    phases: dict[str, float] = field(default_factory=dict)

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
    """Save a cursor; a cursor equal to the one saved is not written again (no row is
    updated when nothing changed)."""
    row = conn.execute(select(sync_cursors.c.cursor).where(
        sync_cursors.c.connection == connection, sync_cursors.c.object == obj)).first()
    if row is None:
        conn.execute(insert(sync_cursors).values(connection=connection, object=obj,
                                                 cursor=cursor, updated_at=now))
    elif row.cursor != cursor:
        conn.execute(update(sync_cursors).where(
            sync_cursors.c.connection == connection, sync_cursors.c.object == obj)
            .values(cursor=cursor, updated_at=now))


def start_run(engine: Engine, connection: str, trigger: str, options: dict[str, Any],
              now: datetime | None = None) -> RunReport:
    now = now or datetime.now(UTC)
    _write_unwritten(engine)
    with engine.begin() as conn:
        _close_abandoned(conn, connection, now)
        run_id = conn.execute(insert(sync_runs).values(
            trigger=trigger, connection=connection, started_at=now, outcome="running",
            options=json.dumps({**options, "pid": os.getpid(), "host": socket.gethostname(),
                                "owner": owner.current()},
                               default=str))).inserted_primary_key
    if run_id is None:
        raise RuntimeError("the database returned no id for the new run")
    return RunReport(int(run_id[0]), connection, trigger, now)


def process_gone(options: str | None) -> bool:
    """Whether the process a run recorded (its options' ``owner``, or the ``pid`` on ``host``
    of older runs) is known to be gone: only a process of this host can be asked
    (``billing_core.adapters.owner``); a run of an older version may have recorded none."""
    try:
        recorded = json.loads(options or "{}")
    except ValueError:
        return False
    if isinstance(recorded.get("owner"), str):
        return owner.is_gone(recorded["owner"])
    pid, host = recorded.get("pid"), recorded.get("host")
    return isinstance(pid, int) and host == socket.gethostname() and owner.pid_gone(pid)


def is_abandoned(row: Any, now: datetime, bound: timedelta) -> bool:
    """A ``running`` run (a row with ``outcome``, ``started_at``, ``options``) whose process
    is gone, or that started longer than ``bound`` ago."""
    return str(row.outcome) == "running" and (
        process_gone(row.options) or row.started_at < now - bound)


def running_runs(conn: Connection, connection: str | None = None) -> list[Any]:
    """The runs still recorded ``running`` (few: the live ones and the abandoned)."""
    stmt = select(sync_runs.c.id, sync_runs.c.connection, sync_runs.c.outcome,
                  sync_runs.c.started_at, sync_runs.c.options).where(
        sync_runs.c.outcome == "running")
    if connection is not None:
        stmt = stmt.where(sync_runs.c.connection == connection)
    return list(conn.execute(stmt.order_by(sync_runs.c.id)))


def _close_abandoned(conn: Connection, connection: str, now: datetime) -> None:
    """Close the connection's ``running`` runs whose process is gone as ``abandoned``."""
    gone = [r.id for r in running_runs(conn, connection) if process_gone(r.options)]
    if gone:
        conn.execute(update(sync_runs).where(sync_runs.c.id.in_(gone)).values(
            outcome="abandoned", finished_at=now,
            error="its process ended while the run was running (killed)"))


def eventful(stats: ObjectStats) -> bool:
    """Whether an object's part of a run is worth its own ``sync_run_objects`` row: a count
    other than API calls, or an outcome other than ``ok``."""
    return stats.outcome != "ok" or any(getattr(stats, k) for k in COUNTS if k != "api_calls")


def covered_json(objects: dict[str, ObjectStats]) -> str:
    """The run row's ``objects``: compact JSON sorted by object, ``{"account":1,"price":1}``."""
    return json.dumps({k: objects[k].api_calls for k in sorted(objects)},
                      separators=(",", ":"))


#: Per engine, the runs whose end ``finish_run`` could not write (see the module's rules).
_unwritten: weakref.WeakKeyDictionary[Engine, dict[int, RunReport]] = \
    weakref.WeakKeyDictionary()
_unwritten_guard = threading.Lock()


def finish_run(engine: Engine, report: RunReport, now: datetime | None = None) -> None:
    report.finished_at = now or datetime.now(UTC)
    try:
        _write_finish(engine, report)
    except (OperationalError, InterfaceError):      # the database went away (or was locked)
        with _unwritten_guard:
            _unwritten.setdefault(engine, {})[report.run_id] = report
        raise


def _write_unwritten(engine: Engine) -> None:
    """Write the ends ``finish_run`` could not (oldest first), each to a row still
    ``running``; one the database still cannot take stays for the next try (the error is
    raised), one it refuses otherwise is given up (logged), never blocking later runs."""
    with _unwritten_guard:
        waiting = sorted(_unwritten.get(engine, {}).items())
    for run_id, report in waiting:
        try:
            _write_finish(engine, report, only_running=True)
        except (OperationalError, InterfaceError):
            raise
        except SQLAlchemyError as exc:
            log.warning("sync run=%s connection=%s: its end could not be recorded (%s); it "
                        "stays running until closed as abandoned", run_id, report.connection,
                        type(exc).__name__)
        with _unwritten_guard:
            _unwritten.get(engine, {}).pop(run_id, None)


def _write_finish(engine: Engine, report: RunReport, *, only_running: bool = False) -> None:
    rows = {obj: stats for obj, stats in report.objects.items() if eventful(stats)}
    quiet = sum(s.api_calls for obj, s in report.objects.items() if obj not in rows)
    with engine.begin() as conn:
        stmt = update(sync_runs).where(sync_runs.c.id == report.run_id)
        if only_running:
            stmt = stmt.where(sync_runs.c.outcome == "running")
        done = conn.execute(stmt.values(
            finished_at=report.finished_at, outcome=report.outcome,
            api_used=report.api_used, api_limit=report.api_limit,
            objects=covered_json(report.objects), api_calls=quiet,
            error=(report.error or None) and report.error[:2000])).rowcount
        if rows and done:
            conn.execute(insert(sync_run_objects), [
                {"run_id": report.run_id, "object": obj, **asdict(stats)}
                for obj, stats in rows.items()])


def _covered(text: str | None) -> dict[str, int]:
    """A run row's ``objects`` (object -> API calls); empty for runs recorded without it."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _quiet_row(run_id: int, obj: str, calls: int) -> dict[str, Any]:
    """The counts of an object a run covered without its own row: nothing but API calls."""
    return {"id": None, "run_id": run_id, "object": obj,
            **{k: 0 for k in COUNTS}, "api_calls": calls, "outcome": "ok"}


LISTED_WINDOW = 200      # runs per connection scanned for the objects they covered


def last_runs(conn: Connection) -> list[dict[str, Any]]:
    """The newest finished-or-interrupted run per (connection, object) that covered the object:
    its ``sync_run_objects`` row, or (nothing happened to the object in that run) zero counts
    with the run's API calls for it and outcome ``ok``; each with the run's ``started_at``,
    ``finished_at``, ``trigger`` and ``run_outcome``. Listed runs are looked for among each
    connection's newest ``LISTED_WINDOW`` (then, for an object with a row but not covered
    there, among the runs after its row), so a status read costs the same after a year of
    runs: an object that never had a row and no run of the window covered is left out."""
    newest: dict[tuple[str, str], int] = {
        (str(c), str(o)): int(r) for o, c, r in conn.execute(
            select(sync_run_objects.c.object, sync_runs.c.connection,
                   func.max(sync_run_objects.c.run_id))
            .join(sync_runs, sync_runs.c.id == sync_run_objects.c.run_id)
            .group_by(sync_run_objects.c.object, sync_runs.c.connection))}
    connections = [str(c) for c in conn.execute(
        select(sync_runs.c.connection).distinct()).scalars()]
    for connection in connections:
        # the newest runs of the connection first: a run covers all its objects, so the
        # newest LISTED_WINDOW runs name the newest covering run of every object synced lately
        found: dict[str, int] = {}
        for run_id, text in conn.execute(
                select(sync_runs.c.id, sync_runs.c.objects).where(
                    sync_runs.c.connection == connection, sync_runs.c.objects.is_not(None))
                .order_by(sync_runs.c.id.desc()).limit(LISTED_WINDOW)):
            for obj in _covered(text):
                found.setdefault(obj, int(run_id))
        for (conn_name, obj), row_run in list(newest.items()):
            if conn_name != connection or obj in found:
                continue
            # an object not covered lately: a listing run newer than its last row, if any
            # (the key's quotes and colon keep ``quote`` from matching ``quote_line``)
            run_id = conn.execute(
                select(sync_runs.c.id).where(
                    sync_runs.c.connection == connection, sync_runs.c.id > row_run,
                    sync_runs.c.objects.contains(f'"{obj}":', autoescape=True))
                .order_by(sync_runs.c.id.desc()).limit(1)).scalar()
            if run_id is not None:
                found[obj] = int(run_id)
        for obj, run_id in found.items():
            if run_id > newest.get((connection, obj), 0):
                newest[(connection, obj)] = run_id
    if not newest:
        return []
    run_ids = sorted(set(newest.values()))
    runs = {r.id: r for r in conn.execute(
        select(sync_runs.c.id, sync_runs.c.connection, sync_runs.c.started_at,
               sync_runs.c.finished_at, sync_runs.c.trigger, sync_runs.c.outcome,
               sync_runs.c.objects).where(sync_runs.c.id.in_(run_ids)))}
    rows = {(r["run_id"], r["object"]): dict(r) for r in conn.execute(
        select(sync_run_objects).where(sync_run_objects.c.run_id.in_(run_ids))).mappings()}
    out = []
    for (connection, obj), run_id in sorted(newest.items()):
        run = runs[run_id]
        row = rows.get((run_id, obj)) or _quiet_row(run_id, obj,
                                                    _covered(run.objects).get(obj, 0))
        out.append({"connection": connection, **row, "started_at": run.started_at,
                    "finished_at": run.finished_at, "trigger": run.trigger,
                    "run_outcome": run.outcome})
    return out


def run_objects(conn: Connection, run_id: int, covered: str | None = None
                ) -> list[dict[str, Any]]:
    """A run's per-object counts: its ``sync_run_objects`` rows, and zero counts (with their
    API calls) for the objects it covered without a row (``covered``: the run's ``objects``)."""
    rows = [dict(r) for r in conn.execute(select(sync_run_objects).where(
        sync_run_objects.c.run_id == run_id).order_by(sync_run_objects.c.id)).mappings()]
    have = {r["object"] for r in rows}
    return rows + [_quiet_row(run_id, obj, calls) for obj, calls in _covered(covered).items()
                   if obj not in have]


def get_run(conn: Connection, run_id: int) -> dict[str, Any] | None:
    """One run's record with its per-object counts (``objects``), or None if there is none."""
    row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).mappings().first()
    if row is None:
        return None
    return {**dict(row), "objects": run_objects(conn, run_id, row["objects"])}


def last_api_usage(conn: Connection, connection: str,
                   since: datetime) -> tuple[int, int, datetime] | None:
    """The newest CRM usage figure (used, limit, when) a run of ``connection`` recorded since
    ``since``."""
    row = conn.execute(
        select(sync_runs.c.api_used, sync_runs.c.api_limit, sync_runs.c.finished_at)
        .where(sync_runs.c.connection == connection, sync_runs.c.api_used.is_not(None),
               sync_runs.c.api_limit.is_not(None), sync_runs.c.finished_at >= since)
        .order_by(sync_runs.c.finished_at.desc()).limit(1)).first()
    return None if row is None else (int(row.api_used), int(row.api_limit), row.finished_at)
