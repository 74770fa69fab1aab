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
