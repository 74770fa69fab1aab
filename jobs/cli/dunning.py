"""``ledgerbridge dunning``: payment reminders by email on the ``[dunning]`` schedule
(docs/DOCUMENTS.md, Dunning; ``billing_core/service/dunning.py``).

Exit codes (``jobs.cli.exits``): ``run`` 0 when the owed reminders were queued (or, with
``--dry-run``, listed), 1 when a reminder was queued failed (the account has no billing
email), 2 when ``[dunning]`` or ``[email]`` is not enabled or a date is malformed, 3 when the
database cannot be reached. The reminders go with the next ``email send`` (or the daemon's
email job).
"""
from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Any

import click

from config.settings import ConfigError
from jobs.cli import exits
from jobs.cli.common import AppContext, emit, json_option, pass_app

_COLUMNS = ["document", "account", "account_class", "due_date", "days_overdue", "balance_minor", "currency",
            "reminders", "due_now", "next"]


@click.group("dunning")
def dunning_group() -> None:
    """Payment reminders on a schedule relative to the due date."""


def _today(on: datetime | None) -> date:
    return on.date() if on is not None else datetime.now(UTC).date()


def _since(app: AppContext) -> date:
    since = app.settings.email.since
    return date.fromisoformat(since) if since else date.min


def _warn_unknown_classes(app: AppContext) -> None:
    """One line on stderr per account whose class is not configured (it gets the default
    schedule): the account, the field and the value."""
    from billing_core.service.dunning import unknown_classes

    schedules = app.settings.dunning.schedules()
    for row in app.read(lambda uow: unknown_classes(uow.conn, schedules)):
        click.echo(f"warning: account {row['id']} ({row['name']}): {row['note']}", err=True)


@dunning_group.command("run")
@click.option("--dry-run", is_flag=True, help="List the reminders owed; queue nothing.")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The day to dun for (default: today, UTC).")
@json_option
@pass_app
def dunning_run(app: AppContext, dry_run: bool, on: datetime | None, as_json: bool) -> None:
    """Queue the reminders owed today in the email outbox (each once)."""
    from billing_core.service.dunning import owed_reminders, queue_reminders
    from jobs.mailer import domain_of

    settings = app.settings
    if not dry_run and not settings.dunning.enabled:
        raise ConfigError("dunning.enabled = false: set [dunning] enabled = true (with [email] "
                          "enabled) to send reminders")
    today, offsets = _today(on), settings.dunning.schedules()
    _warn_unknown_classes(app)
    if dry_run:
        owed = app.read(lambda uow: owed_reminders(uow.conn, today, offsets, _since(app)))
    else:
        owed = app.write(lambda uow: queue_reminders(uow, today, offsets, _since(app),
                                                     domain=domain_of(settings.email)))
    rows: list[dict[str, Any]] = [
        {"document": d["number"], "account": d["name"],
         "account_class": d["account_class"] or "", "due_date": d["due_date"],
         "days_overdue": d["days_overdue"], "reminder": d["kind"],
         "recipients": d["billing_email"]} for d in owed]
    emit(rows, ["document", "account", "account_class", "due_date", "days_overdue", "reminder",
                "recipients"],
         as_json=as_json, title=f"dunning {today}: {'owed' if dry_run else 'queued'}")
    missing = [d for d in owed if not d["billing_email"]]
    for d in missing:
        click.echo(f"{d['kind']} of {d['number']} failed: account {d['account_id']} "
                   f"({d['name']}) has no billing_email", err=True)
    if missing and not dry_run:
        sys.exit(exits.ATTENTION)


@dunning_group.command("list")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="As of this day (default: today, UTC).")
@json_option
@pass_app
def dunning_list_command(app: AppContext, on: datetime | None, as_json: bool) -> None:
    """Open documents past the schedule's first day: reminders so far, due now, next."""
    from billing_core.service.dunning import dunning_list

    today, offsets = _today(on), app.settings.dunning.schedules()
    _warn_unknown_classes(app)
    rows = app.read(lambda uow: dunning_list(uow.conn, today, offsets, _since(app)))
    emit(rows, _COLUMNS, as_json=as_json, title=f"dunning {today}")


COMMANDS: list[click.Command] = [dunning_group]
