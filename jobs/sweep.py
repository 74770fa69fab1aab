"""The drift sweep as a job: per connection, under its ``crm:<connection>`` lock, one sweep
(``sync.drift``), then the dispatch of what it released. The daemon's ``drift-sweep`` job and
``ledgerbridge sweep`` both run it."""
from __future__ import annotations

import logging

from jobs.worker import Worker
from sync.drift import sweep_connection
from sync.locks import job_lock
from sync.runs import RunReport

log = logging.getLogger(__name__)


def sweep(worker: Worker, connection: str | None = None, *,
          wait: bool = False) -> list[RunReport]:
    """Sweep ``connection`` (None: every configured one). A connection whose lock another
    worker holds is skipped with a log line unless ``wait``."""
    names = [connection] if connection is not None else list(worker.connections)
    reports: list[RunReport] = []
    for name in names:
        if worker.stop.is_set():
            break
        with job_lock(worker.engine, f"crm:{name}", wait=wait) as got:
            if not got:
                log.info("drift sweep connection=%s skipped: another worker holds it", name)
                continue
            report = sweep_connection(worker.cycle(name, worker.options("sweep")))
        if report.outcome == "stopped: API budget":
            worker._drop_connector(name)   # a fresh meter learns the allowance again
        reports.append(report)
    if any(r.handed_off for r in reports) and not worker.stop.is_set():
        worker.dispatch()
    return reports
