"""``ledgerbridge events``: the CRM's change events (docs/SYNC.md, CRM change events).

Exit codes (``jobs.cli.exits``): ``process`` 0 when every claimed event's records were read
back and applied (or nothing waited), 1 when a round did not complete (the API budget spent, a
shutdown, a record's run partial is still 0: the quarantine has it), 2 for bad configuration
(a missing secret, refused credentials), 3 when the CRM cannot be reached (the events stay
``new``), 130 when interrupted. ``list`` and ``retry`` exit 0.
"""
from __future__ import annotations

import sys

import click
from sqlalchemy import select

from billing_core.domain.ids import MAX_ID
from jobs.cli import exits
from jobs.cli.common import AppContext, emit, json_option, pass_app
from jobs.worker import Worker
from sync import inbox
from sync.resync import ResyncReport
from sync.tables import event_inbox


@click.group("events")
def events_group() -> None:
    """The CRM's change events: process them now, list them, retry failed ones."""


def code_of(report: ResyncReport) -> int:
    """One round's exit code (see the module's docstring)."""
    if report.outcome == "interrupted":
        return exits.INTERRUPTED
    if report.cause == "config":
        return exits.BAD_INPUT
    if report.cause == "unreachable":
        return exits.UNREACHABLE
    return exits.OK if report.done else exits.ATTENTION


@events_group.command("process")
@click.option("--limit", type=click.IntRange(1, MAX_ID), default=None,
              help="Read back at most N records (default: until no event waits).")
@json_option
@pass_app
def events_process(app: AppContext, limit: int | None, as_json: bool) -> None:
    """Read back the records the waiting events name and apply them (the daemon's events job,
    run once, until nothing waits or --limit records were read)."""
    worker = Worker(app.engine, app.settings)
    try:
        reports = worker.process_events(limit=limit or 10**12, wait=True)
    finally:
        worker.close()
    rows = [{"connection": r.connection, "events": r.events, "records": r.records,
             "run": r.run_id, "outcome": r.outcome, "failed": r.failed} for r in reports]
    emit(rows, ["connection", "events", "records", "run", "outcome", "failed"],
         as_json=as_json, title="events processed")
    code = exits.worst(code_of(r) for r in reports)
    if code:
        sys.exit(code)


@events_group.command("list")
@click.option("--state", type=click.Choice(inbox.STATES), default=None,
              help="Only events in this state (default: all but done).")
@click.option("--limit", type=click.IntRange(1, MAX_ID), default=100, show_default=True)
@json_option
@pass_app
def events_list(app: AppContext, state: str | None, limit: int, as_json: bool) -> None:
    """Stored events, oldest first."""
    stmt = select(event_inbox).order_by(event_inbox.c.id).limit(limit)
    stmt = stmt.where(event_inbox.c.state == state) if state else \
        stmt.where(event_inbox.c.state != inbox.DONE)
    with app.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    emit(rows, ["id", "connection", "source", "object", "crm_id", "action", "received_at",
                "state", "attempts", "error"], as_json=as_json, title="events")


@events_group.command("retry")
@click.option("--connection", "-c", default=None, help="Only this connection's.")
@pass_app
def events_retry(app: AppContext, connection: str | None) -> None:
    """Failed events back to new (their records are read again at the next round)."""
    click.echo(f"{inbox.retry_failed(app.engine, connection)} event(s) back to new")


COMMANDS: list[click.Command] = [events_group]
