"""The targeted resync: the records the CRM's change events name, read back and applied.

Rules kept here:
- One round of one connection: claim (``sync.inbox.claim``: up to ``keys`` distinct records
  with every ``new`` event of each, so events coalesce per (connection, object, crm id)), then
  one targeted run of the cycle (``sync.engine.Cycle.run_targeted``): the records are read
  from the CRM by id in batches (``read_by_ids``: 200 per Salesforce ``Id IN (...)`` query or
  Dataverse ``$filter``) and applied by the same handlers, quarantine, hand-off, credit control
  and outbox as every cycle. There is no second sync: what differs is only which records are
  read. A record the CRM no longer returns is deleted, as the cycle deletes.
- The event payload is never read here (``connectors.events`` keeps only ids): the CRM read is
  the truth.
- The caller holds the connection's ``crm:<connection>`` job lock (``jobs.worker``), so the
  targeted run never overlaps a cycle or a push of that connection.
- After the run: ``ok`` / ``partial`` (a record quarantined is handled: the quarantine has it)
  mark the claimed events ``done``; any other outcome (the CRM unreachable, the API budget
  spent, a shutdown) puts them back to ``new`` with the error, ``failed`` after
  ``inbox.MAX_ATTEMPTS`` (the poll still reads their records). An interrupt puts them back.
- Every targeted run is recorded like any run (``sync_runs``, trigger ``events``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from sync import inbox
from sync.engine import READ_BY_IDS_BATCH, Cycle

log = logging.getLogger(__name__)


@dataclass
class ResyncReport:
    """One round of one connection."""

    connection: str
    events: int = 0                 # events claimed (and done, when the run succeeded)
    records: int = 0                # distinct records read back
    run_id: int | None = None
    outcome: str = "idle"           # idle (nothing to do) | the run's outcome
    cause: str | None = None        # the run's cause (config | unreachable) when it failed
    failed: int = 0                 # events that reached ``failed`` in this round
    deferred: int = 0               # records left for a later round (``settle``)

    @property
    def done(self) -> bool:
        return self.outcome in ("idle", "ok", "partial")


def process_round(engine: Engine, connection: str, make_cycle: Callable[[], Cycle],
                  clock: Callable[[], datetime], *, keys: int,
                  settle: timedelta | None = None,
                  busy_since: datetime | None = None) -> ResyncReport:
    """Claim up to ``keys`` records' events of ``connection`` and resync those records (with
    ``settle``, only whole read batches of an object whose events still arrive:
    ``inbox.claim``)."""
    claimed = inbox.claim(engine, connection, clock(), keys=keys, settle=settle,
                          batch=READ_BY_IDS_BATCH, busy_since=busy_since)
    result = ResyncReport(connection, deferred=claimed.deferred)
    if claimed.empty:
        return result
    result.events = len(claimed.event_ids)
    result.records = sum(len(v) for v in claimed.records.values())
    cycle = make_cycle()
    try:
        report = cycle.run_targeted(claimed.records)
    except BaseException:
        inbox.release(engine, claimed.event_ids, "interrupted", clock())
        raise
    result.run_id, result.outcome, result.cause = report.run_id, report.outcome, report.cause
    if result.done:
        inbox.finish(engine, claimed.event_ids, clock())
    else:
        result.failed = inbox.release(engine, claimed.event_ids,
                                      f"{report.outcome}: {report.error or ''}"[:2000], clock())
    log.info("events connection=%s events=%s records=%s run=%s outcome=%s%s", connection,
             result.events, result.records, result.run_id, result.outcome,
             f" failed={result.failed}" if result.failed else "")
    return result
