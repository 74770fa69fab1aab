"""The APScheduler 3 schedule of ``ledgerbridge run``: wiring only, every body is a worker call.

Jobs (explicit ids, so logs, the API and a restarted scheduler agree on names):
- ``sync:<connection>``: pull + reconcile + hand off + push, then dispatch what it released or
  ordered, every ``interval_minutes`` (first run at start-up);
- ``bill-run``: daily at ``bill_run_time`` (UTC); billing bills the accounts whose cycle is due;
- ``holds``: time-based hold re-evaluation (invoices become overdue with no CRM change);
- ``provisioning-dispatch``: every ``dispatch_interval_seconds``, until the queue is empty;
- ``outbox-push``: every ``push_interval_seconds``;
- ``housekeeping``: daily, forgets stored API idempotency answers older than seven days and
  processed CRM events older than ``sync.inbox.KEEP_DONE``;
- ``email-send``: with ``[email] enabled``, every ``send_interval_seconds``: queues the emails
  of issued documents and sends the due ones (``jobs/mailer.py``);
- ``events``: with a connection's ``[connections.NAME.events]``, every
  ``events_interval_seconds``: one bounded round of the targeted resync of the CRM's change
  events per connection (``[sync] events_batch_size`` records), then the dispatch of what it
  released (``sync/resync.py``);
- ``drift-sweep``: unless ``[sync] drift_sweep = false``, daily at ``drift_sweep_time`` (UTC)
  or every ``drift_sweep_interval_hours``: the drift sweep of every connection (``sync/drift.py``,
  ``jobs/sweep.py``);
- ``dunning``: with ``[dunning] enabled``, every ``run_interval_minutes``: queues the payment
  reminders owed today (``billing_core/service/dunning.py``).
Defaults for all: ``coalesce=True`` (a backlog of missed runs runs once), ``max_instances=1``,
``misfire_grace_time`` from the config. A job body that raises is logged, counted on the
worker (``Worker.job_failed``: ``ledgerbridge_job_failures_total`` and ``ledgerbridge_job_failing``
in ``/metrics``, ``scheduler.failures`` in the API's ``/status``) and runs again at its next
time; nothing here retries in a loop.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from billing_core.service import ledger_uow
from jobs.api.idempotency import purge_answers
from jobs.worker import Worker

log = logging.getLogger(__name__)


def _guarded(name: str, fn: Callable[[], Any], worker: Worker) -> Callable[[], None]:
    def body() -> None:
        if worker.stop.is_set():
            return
        try:
            fn()
        except Exception as exc:
            log.exception("job %s failed", name)
            worker.job_failed(name, exc)
        else:
            worker.job_ok(name)
    body.__name__ = f"job_{name}"
    return body


def build_scheduler(worker: Worker) -> BackgroundScheduler:
    s = worker.sync
    scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": s.misfire_grace_seconds})
    now = datetime.now(UTC)
    for name in worker.connections:
        scheduler.add_job(_guarded(f"sync:{name}", partial(worker.sync_and_dispatch, name),
                                   worker),
                          IntervalTrigger(minutes=s.interval_minutes), id=f"sync:{name}",
                          name=f"sync {name}", next_run_time=now, replace_existing=True)
    hour, minute = (int(x) for x in s.bill_run_time.split(":"))
    scheduler.add_job(_guarded("bill-run", worker.bill_run, worker),
                      CronTrigger(hour=hour, minute=minute, timezone=UTC),
                      id="bill-run", name="daily bill run", replace_existing=True)
    scheduler.add_job(_guarded("holds", worker.reevaluate_holds, worker),
                      IntervalTrigger(minutes=s.hold_interval_minutes), id="holds",
                      name="hold re-evaluation", replace_existing=True)
    scheduler.add_job(_guarded("provisioning-dispatch", worker.dispatch, worker),
                      IntervalTrigger(seconds=s.dispatch_interval_seconds),
                      id="provisioning-dispatch", name="provisioning dispatch",
                      replace_existing=True)
    scheduler.add_job(_guarded("outbox-push", worker.push_all, worker),
                      IntervalTrigger(seconds=s.push_interval_seconds), id="outbox-push",
                      name="outbox push", replace_existing=True)
    scheduler.add_job(_guarded("housekeeping", partial(housekeeping, worker), worker),
                      CronTrigger(hour=(hour + 1) % 24, minute=minute, timezone=UTC),
                      id="housekeeping", name="housekeeping", replace_existing=True)
    if any(c.events is not None for c in worker.connections.values()):
        scheduler.add_job(_guarded("events", worker.events_job, worker),
                          IntervalTrigger(seconds=s.events_interval_seconds), id="events",
                          name="CRM events (targeted resync)", replace_existing=True)
    if s.drift_sweep and worker.connections:
        from jobs.sweep import sweep

        at_hour, at_minute = (int(x) for x in s.drift_sweep_time.split(":"))
        trigger: Any = IntervalTrigger(hours=s.drift_sweep_interval_hours) \
            if s.drift_sweep_interval_hours else CronTrigger(hour=at_hour, minute=at_minute,
                                                              timezone=UTC)
        scheduler.add_job(_guarded("drift-sweep", partial(sweep, worker), worker), trigger,
                          id="drift-sweep", name="drift sweep", replace_existing=True)
    if worker.settings.email.enabled:
        scheduler.add_job(_guarded("email-send", partial(send_email, worker), worker),
                          IntervalTrigger(seconds=worker.settings.email.send_interval_seconds),
                          id="email-send", name="email send", replace_existing=True)
    if worker.settings.dunning.enabled:
        scheduler.add_job(_guarded("dunning", partial(run_dunning, worker), worker),
                          IntervalTrigger(minutes=worker.settings.dunning.run_interval_minutes),
                          id="dunning", name="dunning", replace_existing=True)
    return scheduler


def run_dunning(worker: Worker) -> None:
    """Queue the reminders owed today (the email-send job sends them)."""
    from datetime import date as _date

    from billing_core.service.dunning import queue_reminders, unknown_classes
    from jobs.mailer import domain_of

    settings = worker.settings
    since = _date.fromisoformat(settings.email.since) if settings.email.since else _date.min
    schedules = settings.dunning.schedules()
    with ledger_uow(worker.engine, clock=worker.clock) as uow:
        for row in unknown_classes(uow.conn, schedules):
            log.warning("dunning: account %s (%s): %s", row["id"], row["name"], row["note"])
        owed = queue_reminders(uow, worker.clock().date(), schedules, since,
                               domain=domain_of(settings.email))
        uow.commit()
    log.info("dunning: %d reminder(s) queued", len(owed))


def send_email(worker: Worker) -> None:
    """Queue and send document emails; one sender at a time (the ``email`` job lock)."""
    from jobs.mailer import send_pending
    from sync.locks import job_lock

    with job_lock(worker.engine, "email") as got:
        if not got:
            return
        report = send_pending(worker.engine, worker.settings, clock=worker.clock,
                              should_stop=worker.stop.is_set)
    log.info("email: sent=%d retried=%d failed=%d dead=%d%s", report.sent, report.retried,
             report.failed, report.dead,
             f" unreachable={report.unreachable}" if report.unreachable else "")


def housekeeping(worker: Worker) -> None:
    from sync import inbox

    with ledger_uow(worker.engine) as uow:
        purged = purge_answers(uow)
        uow.commit()
    log.info("housekeeping: %d stored API answer(s) purged", purged)
    events = inbox.purge_done(worker.engine, worker.clock() - inbox.KEEP_DONE)
    if events:
        log.info("housekeeping: %d processed CRM event(s) purged", events)


def wake_events(scheduler: BackgroundScheduler, worker: Worker) -> None:
    """Run the ``events`` job now (the receivers stored events): its next run is moved to now,
    or, when it runs already, it does one more round (``Worker.wake_events``), so no stored
    event waits for the interval. Without the job (no connection takes events), nothing."""
    job = scheduler.get_job("events")
    if job is not None and worker.wake_events():
        job.modify(next_run_time=datetime.now(UTC))


def job_ids(scheduler: BackgroundScheduler) -> list[str]:
    return sorted(job.id for job in scheduler.get_jobs())
