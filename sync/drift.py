"""The drift sweep: what the cursors and the change events missed, found by comparing ids and
modification stamps, and repaired through the targeted resync.

Rules kept here:
- Per object (``sync.engine.PULL_ORDER``: products, prices, quotes, quote lines, accounts;
  those the connection maps and ``[sync] objects`` lists), the CRM lists every live record's
  id and modification stamp only (the connector's ``list_stamps``: Salesforce ``SELECT Id,
  SystemModstamp``, Dataverse ``$select=<key>,modifiedon``), compared with ``sync_records``
  (the id and the ``modstamp`` of the last record applied):
  - ``missing``: listed, but billing has no live row of it (created in the CRM and never pulled:
    committed after the cursor's overlap window passed, an event lost), or deleted in billing
    while the CRM still has it;
  - ``changed``: listed with a stamp other than billing's (newer, or older: an update
    committed late with a stamp from before the version billing has);
  - ``deleted``: billing has it live, the CRM no longer lists it (deleted outside the change
    window, or with no trace left in the recycle bin).
  A record whose open quarantine entry was taken from a version at least as new as the listed
  stamp is not read again (the quarantine has it; ``quarantine retry`` is its way back).
- Those records only are resynced by the targeted resync (``Cycle.run_targeted``'s path: read
  by id in batches, applied by the cycle's handlers; an id the CRM does not return is deleted as
  the cycle deletes). One path, no second sync. The whole sweep is one run, trigger ``sweep``,
  with the per-object counts of any run; what it found per object and kind is kept in the run's
  ``options`` as ``repairs`` (``status`` and ``/metrics``: the last sweep's repairs).
- A record re-read as ``changed`` whose content billing already had (our own push moved the
  CRM's stamp; a field billing does not map changed) gets the listed stamp in ``sync_records``,
  so the next sweep does not read it again (a row the sweep's read wrote keeps the stamp of the
  version it applied).
- The API budget guard applies to every call: ``BudgetExhausted`` stops the sweep (``stopped:
  API budget``). The objects still to sweep are kept (``sync_cursors``, object
  ``drift_sweep``); the next sweep resumes with them, and starts over once a sweep completed.
- Memory: billing's ids and stamps of one object are held while its listing is compared (about
  100 bytes a record: 300,000 accounts, some 30 MB); the listing itself is streamed.
- The caller holds the connection's ``crm:<connection>`` lock (``jobs.worker``).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select, update

from connectors.values import parse_datetime
from sync.engine import PULL_ORDER, Cycle
from sync.mapping import OBJECTS
from sync.runs import RunReport, get_cursor, save_cursor
from sync.tables import quarantine, sync_records, sync_runs

log = logging.getLogger(__name__)
KINDS = ("missing", "changed", "deleted")
#: The ``sync_cursors`` key of a sweep's progress (the objects still to sweep).
PROGRESS = "drift_sweep"


@dataclass
class Drift:
    """What one object's comparison found (CRM ids), and the listed stamps of the changed."""

    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    stamps: dict[str, datetime] = field(default_factory=dict)
    listed: int = 0

    @property
    def ids(self) -> list[str]:
        return [*self.missing, *self.changed, *self.deleted]

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in KINDS}


def compare(conn: Connection, connection: str, obj: str,
            listing: Iterable[tuple[str, datetime | None]]) -> Drift:
    """Compare the CRM's listing of ``obj`` with what billing knows (see the module's rules).
    Ids are matched without case (a GUID may be listed in another case than stored; two
    18-character Salesforce ids never differ by case alone)."""
    rec = sync_records
    known: dict[str, tuple[str, Any, bool]] = {}
    for crm_id, stamp, deleted_at in conn.execute(
            select(rec.c.crm_id, rec.c.modstamp, rec.c.deleted_at).where(
                rec.c.connection == connection, rec.c.object == obj)):
        known[str(crm_id).lower()] = (str(crm_id), stamp, deleted_at is None)
    held = _quarantined(conn, connection, obj)
    drift = Drift()
    seen: set[str] = set()
    for crm_id, stamp in listing:
        drift.listed += 1
        key = crm_id.lower()
        if key in seen:              # listed twice (a page boundary moved): compared once
            continue
        seen.add(key)
        row = known.get(key)
        if row is None or not row[2]:
            kept = held.get(key)
            if kept is not None and stamp is not None and stamp <= kept:
                continue
            drift.missing.append(crm_id)
        elif stamp is not None and stamp != row[1]:
            drift.changed.append(row[0])
            drift.stamps[row[0]] = stamp
    drift.deleted = sorted(row[0] for key, row in known.items() if row[2] and key not in seen)
    return drift


def _quarantined(conn: Connection, connection: str, obj: str) -> dict[str, datetime | None]:
    """Open quarantine entries of ``obj``: id (lower case) -> the quarantined version's stamp."""
    out: dict[str, datetime | None] = {}
    for crm_id, record in conn.execute(select(quarantine.c.crm_id, quarantine.c.record).where(
            quarantine.c.connection == connection, quarantine.c.object == obj,
            quarantine.c.status == "open")):
        try:
            stamp = parse_datetime(json.loads(record or "{}").get("modstamp"))
        except (ValueError, AttributeError):
            stamp = None
        out[str(crm_id).lower()] = stamp if isinstance(stamp, datetime) else None
    return out


class SweepCycle(Cycle):
    """A cycle whose targets are found by the comparison, object by object, and repaired
    through the targeted resync's own reads and handlers (``Cycle._by_ids``)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.repairs: dict[str, dict[str, int]] = {}
        self.swept: list[str] = []
        self.pending: list[str] = []

    @classmethod
    def like(cls, cycle: Cycle) -> SweepCycle:
        """A sweep with the engine, connector, options and hooks of ``cycle``."""
        return cls(cycle.engine, cycle.connector, cycle.options, clock=cycle.clock,
                   should_stop=cycle.should_stop, progress=cycle.progress,
                   policy=cycle.policy)

    def objects_to_sweep(self) -> list[str]:
        mapped = set(self.connector.objects())
        wanted = set(self.options.objects or OBJECTS)
        every = [o for o in PULL_ORDER if o in mapped and o in wanted]
        with self.engine.connect() as conn:
            saved = get_cursor(conn, self.name, PROGRESS)
        try:
            left = json.loads(saved).get("pending") if saved else None
        except (ValueError, AttributeError):
            left = None
        if isinstance(left, list) and left:
            resumed = [o for o in every if o in left]
            if resumed:
                return resumed
        return every

    def sweep(self) -> RunReport:
        """The whole sweep as one run (``run_targeted`` with targets found per object)."""
        self.pending = self.objects_to_sweep()
        return self.run_targeted({"_sweep": ["*"]})

    def _by_ids(self, targets: Mapping[str, list[str]]) -> None:
        lister = getattr(self.connector, "list_stamps", None)
        if lister is None:
            raise NotImplementedError(f"{self.name}: the connector cannot list stamps")
        self._save_progress(self.pending)
        for obj in list(self.pending):
            before = self.calls()
            try:
                with self.engine.connect() as conn:
                    drift = compare(conn, self.name, obj, lister(obj))
            finally:
                self.rep.stats(obj).api_calls += self.calls() - before
            self.repairs[obj] = drift.counts()
            if drift.ids:
                log.info("drift sweep run=%s connection=%s object=%s listed=%s missing=%s "
                         "changed=%s deleted=%s", self.rep.run_id, self.name, obj,
                         drift.listed, *drift.counts().values())
                super()._by_ids({obj: drift.ids})
                self._settle_stamps(obj, drift.stamps)
            self.swept.append(obj)
            self.pending.remove(obj)
            self._save_progress(self.pending)
            if self.should_stop():
                self.rep.outcome = "stopped: shutdown"
                return
        # Accounts read for the quotes and lines repaired were read after them (PULL_ORDER).
        self.holds_read = True

    def _settle_stamps(self, obj: str, stamps: Mapping[str, datetime]) -> None:
        """Changed records re-read with content billing already had (their rows were not
        written by this run): the listed stamp is theirs now. A row this run wrote keeps the
        stamp of the version it applied; a record in open quarantine keeps its stamp."""
        rec = sync_records
        items = list(stamps.items())
        with self.engine.begin() as conn:
            held = _quarantined(conn, self.name, obj)
            for crm_id, stamp in items:
                if crm_id.lower() in held:
                    continue
                conn.execute(update(rec).where(
                    rec.c.connection == self.name, rec.c.object == obj, rec.c.crm_id == crm_id,
                    rec.c.deleted_at.is_(None), rec.c.updated_at < self.rep.started_at,
                    or_(rec.c.modstamp.is_(None), rec.c.modstamp != stamp)).values(
                    modstamp=stamp))

    def _save_progress(self, pending: list[str]) -> None:
        with self.engine.begin() as conn:
            save_cursor(conn, self.name, PROGRESS, json.dumps({"pending": pending}),
                        self.clock())


def sweep_connection(cycle: Cycle) -> RunReport:
    """Run one drift sweep with ``cycle``'s connector and options (its trigger should be
    ``sweep``); the repairs found are written to the run's ``options``."""
    sweeper = SweepCycle.like(cycle)
    report = sweeper.sweep()
    record_repairs(sweeper.engine, report.run_id, sweeper.repairs, sweeper.pending)
    total = {k: sum(r[k] for r in sweeper.repairs.values()) for k in KINDS}
    log.info("drift sweep run=%s connection=%s outcome=%s missing=%s changed=%s deleted=%s "
             "pending=%s", report.run_id, sweeper.name, report.outcome, *total.values(),
             ",".join(sweeper.pending) or "-")
    return report


def record_repairs(engine: Engine, run_id: int, repairs: Mapping[str, Mapping[str, int]],
                   pending: list[str]) -> None:
    with engine.begin() as conn:
        raw = conn.execute(select(sync_runs.c.options).where(sync_runs.c.id == run_id)).scalar()
        try:
            options = json.loads(raw or "{}")
        except ValueError:
            options = {}
        options["repairs"] = {o: dict(c) for o, c in repairs.items()}
        options["pending"] = list(pending)
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(
            options=json.dumps(options, default=str)))


def last_sweep(conn: Connection, connection: str | None = None) -> dict[str, Any] | None:
    """The last finished sweep (of ``connection``, or of any): its run, outcome, finish time,
    repairs per object and kind, and the objects it left for the next sweep."""
    where = [sync_runs.c.trigger == "sweep", sync_runs.c.finished_at.is_not(None)]
    if connection is not None:
        where.append(sync_runs.c.connection == connection)
    row = conn.execute(select(sync_runs.c.id, sync_runs.c.connection, sync_runs.c.outcome,
                              sync_runs.c.finished_at, sync_runs.c.options)
                       .where(and_(*where)).order_by(sync_runs.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    try:
        options = json.loads(row.options or "{}")
    except ValueError:
        options = {}
    repairs = options.get("repairs") or {}
    return {"run": int(row.id), "connection": row.connection, "outcome": row.outcome,
            "finished_at": row.finished_at, "repairs": repairs,
            "total": {k: sum(int(c.get(k, 0)) for c in repairs.values()) for k in KINDS},
            "pending": options.get("pending") or []}


def last_sweeps(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per connection, its last finished sweep (``last_sweep``): ``status`` and ``/metrics``."""
    connections = conn.execute(select(sync_runs.c.connection).where(
        sync_runs.c.trigger == "sweep").distinct().order_by(sync_runs.c.connection)).scalars()
    out: dict[str, dict[str, Any]] = {}
    for connection in list(connections):
        found = last_sweep(conn, str(connection))
        if found is not None:
            out[str(connection)] = found
    return out
