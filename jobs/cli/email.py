"""``ledgerbridge email``: documents emailed to the accounts' billing contacts
(docs/DOCUMENTS.md, Email).

Exit codes (``jobs.cli.exits``): ``send`` 0 when everything due was sent (or, with
``--dry-run``, listed), 1 when an email of this run failed or went dead, 2 for bad input or
configuration (``[email]`` not enabled, a missing secret, refused credentials), 3 when the SMTP
server cannot be reached (the emails stay queued) or the database cannot.
"""
from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Any

import click

from billing_core.domain.ids import MAX_ID
from config.settings import ConfigError
from jobs.cli import exits
from jobs.cli.common import ID, AppContext, emit, json_option, pass_app

_COLUMNS = ["id", "doc_type", "doc_id", "kind", "recipient", "state", "attempts",
            "next_attempt_at", "last_error", "sent_at"]


@click.group("email")
def email_group() -> None:
    """Documents emailed to billing contacts: send, list, retry, cancel."""


def _enabled(app: AppContext) -> None:
    if not app.settings.email.enabled:
        raise ConfigError("email.enabled = false: set [email] enabled = true (with since and "
                          "from_address) to email documents")


def _preview(app: AppContext, limit: int | None) -> list[dict[str, Any]]:
    """What a run would send now: the queueing step on a transaction rolled back, then the due
    rows (document, recipients, subject)."""
    from billing_core.service import email_outbox as outbox
    from billing_core.service import ledger_uow
    from jobs.mailer import domain_of, subject

    email = app.settings.email
    since = date.fromisoformat(email.since) if email.since else date.min
    out: list[dict[str, Any]] = []
    with ledger_uow(app.engine) as uow:      # never committed: a dry run writes nothing
        outbox.queue_documents(uow, since, domain=domain_of(email), limit=10_000_000)
        rows = outbox.due_rows(uow.conn, datetime.now(UTC), limit=limit or 10_000_000)
        for row in rows:
            number = outbox.document_number(uow.conn, row["doc_type"], int(row["doc_id"]))
            out.append({"id": row["id"], "document": number, "kind": row["kind"],
                        "account": row["account_name"], "recipients": row["recipient"],
                        "subject": subject(row["kind"], row["doc_type"], number,
                                           app.settings.documents.seller_name)})
        failed = outbox.list_emails(uow.conn, state="failed", limit=10_000_000)
        uow.rollback()
    for row in failed:
        if row["attempts"] == 0 and row["sent_at"] is None and row["recipient"] is None:
            out.append({"id": row["id"], "document": f"{row['doc_type']} {row['doc_id']}",
                        "kind": row["kind"], "account": row["account_id"], "recipients": None,
                        "subject": f"not sent: {row['last_error']}"})
    return out


@email_group.command("send")
@click.option("--dry-run", is_flag=True, help="List what would be sent (document, recipients, "
                                              "subject); write and send nothing.")
@click.option("--limit", type=click.IntRange(1, MAX_ID), default=None,
              help="Send at most N emails (default: every due one).")
@json_option
@pass_app
def email_send(app: AppContext, dry_run: bool, limit: int | None, as_json: bool) -> None:
    """Queue the emails of issued documents and send the due ones over SMTP."""
    if dry_run:
        rows = _preview(app, limit)
        emit(rows, ["id", "document", "kind", "account", "recipients", "subject"],
             as_json=as_json, title="email: would send")
        return
    _enabled(app)
    from jobs.mailer import MailConfigError, send_pending

    try:
        report = send_pending(app.engine, app.settings, limit=limit, actor=app.actor)
    except MailConfigError as exc:
        raise ConfigError(str(exc)) from None
    if as_json:
        emit(report.as_dict(), as_json=True)
    else:
        click.echo(f"{report.sent} sent, {report.retried} to retry, {report.failed} failed, "
                   f"{report.dead} dead, {report.skipped} skipped ({report.queued} newly queued)")
    if report.config_error:
        click.echo(f"error: smtp_config: {report.config_error}", err=True)
        sys.exit(exits.BAD_INPUT)
    if report.unreachable:
        click.echo(f"error: smtp_unreachable: {report.unreachable} (the emails stay queued)",
                   err=True)
        sys.exit(exits.UNREACHABLE)
    if report.failed or report.dead:
        for err in report.errors:
            which = f"email {err['id']}" if err["id"] is not None else "email"
            click.echo(f"{which} {err['state']}: {err['error']}", err=True)
        sys.exit(exits.ATTENTION)


@email_group.command("list")
@click.option("--state", type=click.Choice(["queued", "sending", "sent", "failed", "dead",
                                           "skipped"]),
              default=None, help="Only emails in this state (default: all).")
@click.option("--limit", type=click.IntRange(1, MAX_ID), default=1000, show_default=True)
@json_option
@pass_app
def email_list(app: AppContext, state: str | None, limit: int, as_json: bool) -> None:
    """The email outbox, oldest first."""
    from billing_core.service.email_outbox import list_emails

    with app.engine.connect() as conn:
        rows = [dict(r) for r in list_emails(conn, state=state, limit=limit)]
    emit(rows, _COLUMNS, as_json=as_json, title=f"email: {state or 'all'}")


@email_group.command("retry")
@click.argument("email_id", type=ID)
@pass_app
def email_retry(app: AppContext, email_id: int) -> None:
    """Queue a failed or dead email again (an email never sent takes the account's billing
    email as it is now)."""
    from billing_core.service.email_outbox import retry
    from jobs.mailer import domain_of

    row = app.write(lambda uow: retry(uow, email_id, domain=domain_of(app.settings.email)))
    click.echo(f"email {email_id}: queued again for {row['recipient']}")


@email_group.command("cancel")
@click.argument("email_id", type=ID)
@pass_app
def email_cancel(app: AppContext, email_id: int) -> None:
    """Take a queued, failed or dead email out for good (it becomes skipped, never sent)."""
    from billing_core.service.email_outbox import cancel

    row = app.write(lambda uow: cancel(uow, email_id))
    click.echo(f"email {email_id}: {row['last_error']}")


COMMANDS: list[click.Command] = [email_group]
