"""What the sync's state looks like to an admin: ``ledgerbridge status``, the API's ``/status``
overview and the sync figures of ``/metrics``. CLI and API both read it here; neither reads
the sync's tables itself.

Rules kept here:
- Reads only, in the caller's connection (or one short connection of ``overview``'s own).
- An object's last run is the newest run that covered it (``sync.runs.last_runs``: a run
  writes an object's counts only when something happened to it, and lists every object it
  covered in its own row). Something needs attention when that run did not end ``ok`` for the
  object or is older than three sync intervals, a sync run is abandoned (still ``running``
  while its process is gone, or longer than three intervals: ``sync.runs.is_abandoned``), a
  bill run is abandoned (still ``running`` while its process is gone, or longer than
  ``BILL_RUN_ABANDONED_AFTER``: ``billing_core.service.reports.bill_runs_abandoned``), or
  records wait in quarantine, dead letters or failed provisioning, CRM events failed, or the
  oldest unprocessed CRM event is older than ``EVENTS_LATE_AFTER``. ``attention`` lists each
  as one line; an empty list means all is well.
- The CRM event inbox (``sync.inbox.depth``): ``events_new`` (new or being processed),
  ``events_failed``, ``events_oldest_unprocessed_seconds`` (None when none waits).
- ``last_sweep``: per connection, the last drift sweep (``sync.drift.last_sweeps``) in one
  line: run, outcome, finish time, what it found missing / changed / deleted, the objects it
  left for the next; ``last_sweep_repairs``: per connection, object and kind, its non-zero
  counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Table, func, select

from billing_core.domain.states import ProvisioningState
from billing_core.service.holds import count_on_hold
from billing_core.service.reports import (
    bill_run_progress,
    bill_runs_abandoned,
    provisioning_by_state,
)
from sync import drift, inbox
from sync.runs import COUNTS, is_abandoned, last_runs, running_runs
from sync.states import HandoffState, OutboxState
from sync.tables import (
    event_inbox,
    handoff_looks,
    handoffs,
    outbox,
    quarantine,
    sync_run_objects,
    sync_runs,
)

# The figures whose non-zero value is a problem, named as ``attention`` lines name them.
_PROBLEM_COUNTS = ("quarantine_open", "dead_letters", "provisioning_failed", "abandoned_runs",
                   "abandoned_bill_runs", "events_failed")
#: CRM events waiting longer than this need attention (the resync runs every few seconds).
EVENTS_LATE_AFTER = timedelta(minutes=5)
#: A bill run closes its row however it ends unless its process is killed; one still
#: ``running`` after this long is taken as abandoned (a 20,000-account run takes minutes).
BILL_RUN_ABANDONED_AFTER = timedelta(hours=2)


@dataclass(frozen=True)
class ObjectTotals:
    """Everything the sync has recorded for one object of one connection, over all runs."""
    connection: str
    object: str
    counts: dict[str, int]


def overview(engine: Engine, *, interval_minutes: float,
             now: datetime | None = None) -> dict[str, Any]:
    """Last run per connection and object, backlog counts and the ``attention`` lines.
    ``interval_minutes`` is the configured sync interval (a run is stale after three)."""
    now = now or datetime.now(UTC)
    stale_after = interval_minutes * 3 * 60
    with engine.connect() as conn:
        runs = last_runs(conn)
        for r in runs:
            age = (now - r["started_at"]).total_seconds()
            r["age"] = f"{int(age // 60)}m{int(age % 60):02d}s"
            r["attention"] = (not str(r["outcome"]).startswith("ok")
                              or r["run_outcome"] == "interrupted" or age > stale_after)
        provisioning = provisioning_by_state(conn)
        data: dict[str, Any] = {
            "runs": runs,
            "api_budget": _api_budgets(conn),
            "api_calls_last_runs": sum(r["api_calls"] for r in runs),
            "quarantine_open": _count(conn, quarantine, quarantine.c.status == "open"),
            "dead_letters": _count(conn, outbox, outbox.c.state == OutboxState.DEAD),
            "outbox_pending": _count(conn, outbox, outbox.c.state.in_(
                (OutboxState.PENDING, OutboxState.SENDING))),
            "handoffs_waiting": _count(conn, handoffs, handoffs.c.state == HandoffState.WAITING),
            # handed-off quotes that changed, for the next cycle's hand-off to look at
            "handoffs_to_look_at": _count(conn, handoff_looks),
            "handoffs_reversed_in_crm": _count(
                conn, handoffs, handoffs.c.state == HandoffState.REVERSED_IN_CRM),
            "accounts_on_hold": count_on_hold(conn),
            "provisioning_waiting": provisioning.get(ProvisioningState.AWAITING_HOLD_RELEASE, 0),
            "provisioning_failed": provisioning.get(ProvisioningState.FAILED, 0),
            "abandoned_runs": sum(is_abandoned(r, now, timedelta(seconds=stale_after))
                                  for r in running_runs(conn)),
            "abandoned_bill_runs": bill_runs_abandoned(conn,
                                                           now - BILL_RUN_ABANDONED_AFTER),
        }
        bill_run = bill_run_progress(conn, now)
        data["bill_run"] = bill_run.line() if bill_run is not None else None
        events = inbox.depth(conn, now)
        data["events_new"] = events["by_state"][inbox.NEW] + events["by_state"][inbox.PROCESSING]
        data["events_failed"] = events["by_state"][inbox.FAILED]
        age = events["oldest_unprocessed_seconds"]
        data["events_oldest_unprocessed_seconds"] = None if age is None else round(age, 1)
        sweeps = drift.last_sweeps(conn)
        data["last_sweep"] = {name: _sweep_line(found) for name, found in sweeps.items()}
        data["last_sweep_repairs"] = {
            name: {obj: {k: n for k, n in counts.items() if n}
                   for obj, counts in found["repairs"].items() if any(counts.values())}
            for name, found in sweeps.items()}
        recorded = _count(conn, sync_runs)
    problems = [f"{r['connection']}/{r['object']}: {_shown(r)} ({r['age']} ago)"
                for r in runs if r["attention"]]
    if not runs:        # runs record their objects when they end: a killed one has none
        problems.append("no sync run finished yet" if recorded else "no sync run recorded yet")
    for key in _PROBLEM_COUNTS:
        if data[key]:
            problems.append(f"{key.replace('_', ' ')}: {data[key]}")
    if age is not None and age > EVENTS_LATE_AFTER.total_seconds():
        problems.append(f"events waiting: {data['events_new']}, the oldest for {int(age)} s")
    data["attention"] = problems
    return data


def _sweep_line(found: dict[str, Any]) -> str:
    """``run 12 ok 2026-12-06 03:31Z: missing 1, changed 0, deleted 2`` (and what it left)."""
    at = found["finished_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    total = ", ".join(f"{k} {n}" for k, n in found["total"].items())
    left = f"; left for the next: {', '.join(found['pending'])}" if found["pending"] else ""
    return f"run {found['run']} {found['outcome']} {at}: {total}{left}"


def _shown(run: dict[str, Any]) -> str:
    """An object's outcome, with its run's when the run was interrupted."""
    if run["run_outcome"] == "interrupted":
        return f"{run['outcome']} (run interrupted)"
    return str(run["outcome"])


def _count(conn: Connection, table: Table, *where: ColumnElement[bool]) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _api_budgets(conn: Connection) -> dict[str, str]:
    """Each connection's CRM API usage as its newest run that saw a limit recorded it."""
    newest = select(func.max(sync_runs.c.id)).where(sync_runs.c.api_limit.is_not(None)) \
        .group_by(sync_runs.c.connection)
    rows = conn.execute(select(sync_runs.c.connection, sync_runs.c.api_used,
                               sync_runs.c.api_limit).where(sync_runs.c.id.in_(newest))
                        .order_by(sync_runs.c.connection))
    return {r.connection: f"{r.api_used}/{r.api_limit}" for r in rows}


def runs_by_outcome(conn: Connection) -> dict[tuple[str, str], int]:
    """Runs counted by (connection, outcome), the outcome without its detail (``failed``, not
    ``failed: <error>``)."""
    out: dict[tuple[str, str], int] = {}
    for connection, outcome, n in conn.execute(
            select(sync_runs.c.connection, sync_runs.c.outcome, func.count())
            .group_by(sync_runs.c.connection, sync_runs.c.outcome)):
        key = (str(connection), str(outcome).split(":")[0])
        out[key] = out.get(key, 0) + int(n)
    return out


def object_totals(conn: Connection) -> list[ObjectTotals]:
    """Per connection and object, each count of ``sync.runs.COUNTS`` summed over the runs'
    ``sync_run_objects`` rows (an object covered without a row counted nothing but API calls:
    those are in :func:`api_calls_by_connection`)."""
    sums = [func.coalesce(func.sum(sync_run_objects.c[k]), 0) for k in COUNTS]
    rows = conn.execute(select(sync_runs.c.connection, sync_run_objects.c.object, *sums)
                        .join(sync_runs, sync_runs.c.id == sync_run_objects.c.run_id)
                        .group_by(sync_runs.c.connection, sync_run_objects.c.object))
    return [ObjectTotals(str(connection), str(obj),
                         {k: int(v) for k, v in zip(COUNTS, values, strict=True)})
            for connection, obj, *values in rows]


def api_calls_by_connection(conn: Connection) -> dict[str, int]:
    """Every CRM API call the sync's runs recorded, per connection: the objects' rows and the
    calls of objects covered without one (``sync_runs.api_calls``)."""
    out: dict[str, int] = {}
    for connection, n in conn.execute(
            select(sync_runs.c.connection, func.coalesce(func.sum(sync_run_objects.c.api_calls), 0))
            .join(sync_runs, sync_runs.c.id == sync_run_objects.c.run_id)
            .group_by(sync_runs.c.connection)):
        out[str(connection)] = int(n)
    for connection, n in conn.execute(
            select(sync_runs.c.connection, func.coalesce(func.sum(sync_runs.c.api_calls), 0))
            .group_by(sync_runs.c.connection)):
        if int(n) or str(connection) in out:
            out[str(connection)] = out.get(str(connection), 0) + int(n)
    return out


def queue_depths(conn: Connection) -> dict[str, dict[str, int]]:
    """The sync's queues (``outbox`` by state, ``quarantine`` by status, ``event_inbox`` by
    state), rows per state."""
    return {name: {str(state): int(n) for state, n in conn.execute(
        select(column, func.count()).group_by(column))}
        for name, column in (("outbox", outbox.c.state), ("quarantine", quarantine.c.status),
                             ("event_inbox", event_inbox.c.state))}
