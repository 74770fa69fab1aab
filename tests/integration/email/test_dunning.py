"""Dunning (issue 16, item 4): reminders on a schedule relative to the due date, each queued
once in the email outbox, stopping when the document is paid, on SQLite and PostgreSQL.

Worked dates: the bill run of 1 March 2027 posts INV-000001 and INV-000002 (20.00 USD each,
Net 30: due 31 March 2027). Schedule -3, 7, 14: reminder_-3 on 28 March, reminder_7 on
7 April, reminder_14 on 14 April. INV-000001 is paid in full on 1 April, so it gets only the
first reminder; INV-000002 gets all three. A ledger first dunned on 20 April sends only the
latest reminder due (reminder_14), not the three missed.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from click.testing import CliRunner
from email_helpers import SELLER, Inbox, at, billed_ledger, settings_for
from sqlalchemy import Engine

from billing_core.service import ledger_uow
from billing_core.service.dunning import dunning_list, owed_reminders, queue_reminders
from billing_core.service.email_outbox import list_emails
from billing_core.service.payments import record_payment
from jobs.cli import main
from jobs.mailer import send_pending

OFFSETS = (-3, 7, 14)
SINCE = date(2027, 1, 1)
DUE = date(2027, 3, 31)


def _owed(engine: Engine, day: date) -> list[tuple[str, str]]:
    with ledger_uow(engine, read_only=True) as uow:
        return [(d["number"], d["kind"]) for d in owed_reminders(uow.conn, day, OFFSETS, SINCE)]


def _queue(engine: Engine, day: date) -> list[tuple[str, str]]:
    with ledger_uow(engine, clock=lambda: at(day)) as uow:
        owed = queue_reminders(uow, day, OFFSETS, SINCE, domain="northwind.test")
        uow.commit()
    return [(d["number"], d["kind"]) for d in owed]


def _pay(engine: Engine, account: int, day: date) -> None:
    with ledger_uow(engine, clock=lambda: at(day)) as uow:
        record_payment(uow, account, "20.00", reference=f"pay-{account}", received_on=day,
                       auto_apply=True)
        uow.commit()


def test_the_schedule_each_reminder_once_stopping_when_paid(engine: Engine) -> None:
    ids = billed_ledger(engine, 2)
    with ledger_uow(engine, read_only=True) as uow:
        assert dunning_list(uow.conn, date(2027, 3, 28), OFFSETS, SINCE)[0]["due_date"] == DUE
    assert _owed(engine, date(2027, 3, 27)) == []
    assert _queue(engine, date(2027, 3, 28)) == [("INV-000001", "reminder_-3"),
                                                 ("INV-000002", "reminder_-3")]
    assert _queue(engine, date(2027, 3, 29)) == []                 # once
    _pay(engine, ids[0], date(2027, 4, 1))
    assert _owed(engine, date(2027, 4, 6)) == []
    assert _queue(engine, date(2027, 4, 7)) == [("INV-000002", "reminder_7")]
    assert _queue(engine, date(2027, 4, 14)) == [("INV-000002", "reminder_14")]
    assert _queue(engine, date(2027, 5, 30)) == []                 # the schedule is done
    with ledger_uow(engine, read_only=True) as uow:
        kinds = sorted((r["doc_id"], r["kind"]) for r in list_emails(uow.conn))
        [row] = dunning_list(uow.conn, date(2027, 4, 15), OFFSETS, SINCE)
    assert kinds == [(1, "reminder_-3"), (2, "reminder_-3"), (2, "reminder_14"),
                     (2, "reminder_7")]
    assert (row["document"], row["days_overdue"], row["balance_minor"], row["next"]) == \
        ("INV-000002", 15, 2000, "")
    assert row["reminders"] == "reminder_-3 queued, reminder_14 queued, reminder_7 queued"


def test_a_late_start_sends_only_the_latest_reminder_due(engine: Engine) -> None:
    billed_ledger(engine, 1)
    assert _queue(engine, date(2027, 4, 20)) == [("INV-000001", "reminder_14")]
    assert _queue(engine, date(2027, 4, 21)) == []


def test_reminders_are_emailed_and_one_settled_meanwhile_is_skipped(
        engine: Engine, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    ids = billed_ledger(engine, 2)
    settings = settings_for(port)
    assert send_pending(engine, settings).sent == 2              # the invoices themselves
    _queue(engine, date(2027, 4, 7))
    _pay(engine, ids[0], date(2027, 4, 7))                       # paid before the reminder went
    report = send_pending(engine, settings)
    assert (report.sent, report.skipped) == (1, 1)
    reminder = inbox.parsed()[-1]
    assert reminder["Subject"] == f"Reminder: invoice INV-000002 from {SELLER}"
    assert "invoice INV-000002 was due for payment on 2027-03-31" in \
        reminder.get_body().get_content()
    assert [a.get_filename() for a in reminder.iter_attachments()] == ["INV-000002.pdf"]
    with ledger_uow(engine, read_only=True) as uow:
        [skipped] = list_emails(uow.conn, state="skipped")
    assert (skipped["doc_id"], skipped["kind"]) == (1, "reminder_7")


def test_dunning_cli(sqlite_engine: Engine, tmp_path: Path) -> None:
    billed_ledger(sqlite_engine, 2, no_email=(1,))
    config = tmp_path / "lb.toml"
    config.write_text('[email]\nenabled = true\nsince = "2027-01-01"\n'
                      'from_address = "billing@northwind.test"\n'
                      '[dunning]\nenabled = true\noffsets = "-3, 7, 14"\n')

    def cli(*args: str):  # noqa: ANN202
        return CliRunner().invoke(main, ["--config", str(config), "--database-url",
                                         str(sqlite_engine.url), *args])

    dry = cli("dunning", "run", "--date", "2027-04-07", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert [(r["document"], r["reminder"]) for r in json.loads(dry.stdout)] == [
        ("INV-000001", "reminder_7"), ("INV-000002", "reminder_7")]
    run = cli("dunning", "run", "--date", "2027-04-07")
    assert run.exit_code == 1                                   # account 2 has no address
    assert "reminder_7 of INV-000002 failed" in run.stderr
    assert cli("dunning", "run", "--date", "2027-04-07", "--json").stdout.strip() == "[]"
    listed = json.loads(cli("dunning", "list", "--date", "2027-04-08", "--json").stdout)
    assert [(r["document"], r["reminders"], r["next"]) for r in listed] == [
        ("INV-000001", "reminder_7 queued", "reminder_14 on 2027-04-14"),
        ("INV-000002", "reminder_7 failed", "reminder_14 on 2027-04-14")]
    bad = cli("dunning", "run", "--date", "2027-02-30")
    assert bad.exit_code == 2
