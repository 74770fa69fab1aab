"""The daemon's ``email-send`` job (issue 16, item 3): registered only with ``[email]
enabled``; one run queues and sends the bill run's invoices (2 accounts, 20.00 USD each)."""
from __future__ import annotations

from dataclasses import replace

from email_helpers import Inbox, billed_ledger, settings_for
from sqlalchemy import Engine

from config.settings import Settings
from jobs.scheduler import build_scheduler, job_ids, send_email
from jobs.worker import Worker


def test_the_email_job_is_scheduled_only_when_enabled_and_sends(
        sqlite_engine: Engine, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    settings = settings_for(port, send_interval_seconds=30.0)
    off = Worker(sqlite_engine, replace(settings, email=replace(settings.email, enabled=False)))
    try:
        assert "email-send" not in job_ids(build_scheduler(off))
    finally:
        off.close()
    billed_ledger(sqlite_engine, 2)
    worker = Worker(sqlite_engine, settings)
    try:
        scheduler = build_scheduler(worker)
        assert "email-send" in job_ids(scheduler)
        assert scheduler.get_job("email-send").trigger.interval.total_seconds() == 30
        send_email(worker)
    finally:
        worker.close()
    assert len(inbox.messages) == 2
    assert isinstance(settings, Settings)


def test_the_dunning_job_is_scheduled_only_when_enabled_and_queues(
        sqlite_engine: Engine, smtp: tuple[Inbox, int]) -> None:
    """1 invoice due 31 March 2027; the job run on 7 April queues its reminder_7."""
    from datetime import date

    from email_helpers import at

    from billing_core.service import ledger_uow
    from billing_core.service.email_outbox import list_emails
    from config.settings import DunningSettings
    from jobs.scheduler import run_dunning

    _, port = smtp
    settings = replace(settings_for(port), dunning=DunningSettings(enabled=True,
                                                                  run_interval_minutes=15))
    assert "dunning" not in job_ids(build_scheduler(Worker(sqlite_engine, settings_for(port))))
    billed_ledger(sqlite_engine, 1)
    worker = Worker(sqlite_engine, settings, clock=lambda: at(date(2027, 4, 7)))
    try:
        scheduler = build_scheduler(worker)
        assert scheduler.get_job("dunning").trigger.interval.total_seconds() == 15 * 60
        run_dunning(worker)
    finally:
        worker.close()
    with ledger_uow(sqlite_engine, read_only=True) as uow:
        assert [r["kind"] for r in list_emails(uow.conn)] == ["reminder_7"]
