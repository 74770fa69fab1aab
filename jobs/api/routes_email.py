"""The email outbox over HTTP (docs/DOCUMENTS.md, Email): list the emails, queue a failed or
dead one again, cancel one. The same service functions as ``ledgerbridge email list|retry|
cancel`` (``billing_core.service.email_outbox``); a retry or cancel is recorded in the audit
trail as the request's token (``api:<name>``). Sending is the daemon's ``email-send`` job (or
``ledgerbridge email send``), not a request: SMTP does not belong in a request's time.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query, Request
from pydantic import BaseModel

from billing_core.service import email_outbox as outbox
from jobs.api.deps import Reader, Uow, Writer, router
from jobs.api.routes_billing import Cursor, Limit
from jobs.api.views import decode_cursor, encode_cursor

routes = router("email")

EmailId = Annotated[int, Path(ge=1, le=2**62, description="The email's id (`email list`).")]
State = Annotated[str | None, Query(pattern=r"^(queued|sending|sent|failed|dead|skipped)$")]


class EmailOut(BaseModel):
    id: int
    doc_type: str
    doc_id: int
    account_id: int
    kind: str
    recipient: str | None = None
    state: str
    attempts: int
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    sent_at: datetime | None = None
    message_id: str


class EmailPage(BaseModel):
    items: list[EmailOut]
    next_cursor: str | None = None


def _out(row: object) -> EmailOut:
    return EmailOut(**{k: row[k] for k in EmailOut.model_fields})  # type: ignore[index]


@routes.get("/billing/emails")
def list_emails(uow: Uow, _: Reader, state: State = None, cursor: Cursor = None,
                limit: Limit = 100) -> EmailPage:
    """The email outbox, oldest first (optionally one state)."""
    rows = outbox.list_emails(uow.conn, state=state, after_id=decode_cursor(cursor),
                              limit=limit + 1)
    items = [_out(r) for r in rows[:limit]]
    return EmailPage(items=items, next_cursor=encode_cursor(items[-1].id)
                     if len(rows) > limit else None)


@routes.post("/billing/emails/{email_id}:retry")
def retry_email(email_id: EmailId, uow: Uow, _: Writer, request: Request) -> EmailOut:
    """Queue a failed or dead email again, due now (an email never sent takes the account's
    billing email as it is now); another state is a 409."""
    from jobs.mailer import domain_of

    outbox.retry(uow, email_id, domain=domain_of(request.app.state.api.settings.email))
    return _out(outbox.get_email(uow.conn, email_id))


@routes.post("/billing/emails/{email_id}:cancel")
def cancel_email(email_id: EmailId, uow: Uow, _: Writer) -> EmailOut:
    """Take a queued, failed or dead email out for good (``skipped``, never sent); another
    state is a 409."""
    outbox.cancel(uow, email_id)
    return _out(outbox.get_email(uow.conn, email_id))
