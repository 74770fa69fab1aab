"""The email outbox: which document emails are owed, who is sending one, what became of it.

The SMTP client is not here (billing does no I/O beyond its database): ``jobs/mailer.py``
claims rows, renders and sends, and reports back through these functions (docs/DOCUMENTS.md,
Email).

Rules kept here
- One row per (document, recipients, kind); ``idempotency_key`` (unique) is the SHA-256 of
  ``doc_type:doc_id:kind:recipients``, and ``message_id`` is derived from it, so a message sent
  again after a crash carries the same ``Message-ID`` as the first.
- ``queue_documents`` queues the issued documents of ``since`` or later that have no row of
  their kind yet: posted (or paid) invoices by issue date, active (or applied) credit memos by
  activation, debit memos by issue date. It is idempotent (an anti-join on the document and
  kind, backed by the unique key), so it may run after every bill run, at every send, and again
  after a crash; a crash while queueing rolls its transaction back and loses nothing. Void
  invoices and cancelled memos are not queued.
- An account with no ``billing_email`` gets its row ``failed`` at once with an error naming
  the account and the field; finance sets the address and ``retry``s it.
- States: ``queued`` -> ``sending`` (claimed: ``claimed_by`` = the process, ``claimed_at``)
  -> ``sent`` (``sent_at``) | ``queued`` again with ``next_attempt_at`` (a temporary failure)
  | ``dead`` (a permanent failure, or ``max_attempts`` reached) | ``failed`` (nothing to send
  to, or the document cannot be rendered) | ``skipped`` (a reminder whose document was settled
  before it went: ``still_owed``). ``retry`` puts a failed or dead row back to queued;
  ``cancel`` takes a queued, failed or dead row out (``skipped``, ``last_error`` says who
  cancelled it): it is never sent.
- Audit (``audit_log``, entity ``email``, the unit of work's actor: ``cli:``, ``api:``,
  ``system`` for the daemon): ``sent``, ``dead``, ``failed`` and ``skipped`` when a sender
  finishes a row, ``retried`` and ``cancelled`` by hand; dunning's ``queued`` (dunning.py).
- A claim is a compare-and-set on (id, state, claimed_by): two senders never hold one row. A
  ``sending`` row whose holder is gone (``owner.is_gone``) or whose lease ran out is claimed
  again: that is the one window in which a message may go twice (the server accepted it, the
  process died before ``mark_sent``); it goes with the same ``Message-ID``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.adapters import owner as owners
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    credit_memos,
    debit_memos,
    email_outbox,
    invoices,
)
from billing_core.domain.errors import InvalidState, NotFound, ValidationError
from billing_core.service import audit

DOC_KINDS = ("invoice", "credit_memo", "debit_memo")
STATES = ("queued", "sending", "sent", "failed", "dead", "skipped")
_LIVE = {"invoice": ("posted", "partially_paid", "paid"),
         "credit_memo": ("active", "partially_applied", "applied"),
         "debit_memo": ("active", "partially_paid", "paid")}
_TABLES = {"invoice": invoices, "credit_memo": credit_memos, "debit_memo": debit_memos}
QUEUE_CHUNK = 500


def idempotency_key(doc_type: str, doc_id: int, kind: str, recipient: str | None) -> str:
    text = f"{doc_type}:{doc_id}:{kind}:{recipient or ''}"
    return hashlib.sha256(text.encode()).hexdigest()


def message_id(key: str, domain: str) -> str:
    return f"<{key[:40]}@{domain or 'ledgerbridge.invalid'}>"


def no_contact_error(account: RowMapping | dict[str, Any]) -> str:
    return (f"account {account['id']} ({account['name']}) has no billing_email: set it in the "
            f"CRM or with `ledgerbridge accounts update {account['id']} --billing-email ...`")


def _issued_since(doc_type: str, since: date) -> Any:
    table = _TABLES[doc_type]
    if doc_type == "credit_memo":
        day = table.c.activated_at >= datetime.combine(since, datetime.min.time(), UTC)
    else:
        day = table.c.issue_date >= since
    return and_(table.c.status.in_(_LIVE[doc_type]), day)


def _unqueued(conn: Connection, doc_type: str, kind: str, since: date,
              limit: int, after: int = 0) -> list[RowMapping]:
    """Up to ``limit`` documents owed an email, in id order after id ``after``."""
    table = _TABLES[doc_type]
    queued = select(email_outbox.c.id).where(
        email_outbox.c.doc_type == doc_type, email_outbox.c.doc_id == table.c.id,
        email_outbox.c.kind == kind).exists()
    return list(conn.execute(
        select(table.c.id.label("doc_id"), table.c.account_id, accounts.c.name,
               accounts.c.billing_email)
        .join(accounts, accounts.c.id == table.c.account_id)
        .where(table.c.id > after, _issued_since(doc_type, since), ~queued)
        .order_by(table.c.id).limit(limit)).mappings())


def new_row(doc_type: str, doc_id: int, account: dict[str, Any], kind: str, domain: str,
            now: datetime) -> dict[str, Any]:
    """The outbox row of one email (``account``: id, name, billing_email)."""
    recipient = account["billing_email"]
    key = idempotency_key(doc_type, doc_id, kind, recipient)
    return {"doc_type": doc_type, "doc_id": doc_id, "account_id": account["id"],
            "recipient": recipient, "kind": kind, "idempotency_key": key,
            "state": "queued" if recipient else "failed", "attempts": 0,
            "next_attempt_at": None,
            "last_error": None if recipient else no_contact_error(account),
            "message_id": message_id(key, domain), "created_at": now, "updated_at": now}


def queue_documents(uow: UnitOfWork, since: date, *, domain: str = "",
                    kinds: Sequence[str] = DOC_KINDS, limit: int = QUEUE_CHUNK,
                    after: dict[str, int] | None = None) -> tuple[int, list[str]]:
    """Queue up to ``limit`` per kind of the issued documents owed an email (module rules).
    Returns how many rows were written and the errors of those that failed (no billing email). The
    caller commits; a unique violation (another process queued the same document meanwhile)
    raises ``IntegrityError`` and the caller's next transaction queues what is still missing.
    ``after`` (per kind, the last document id read): only documents after it are read, and it
    is moved on to the last one read."""
    rows: list[dict[str, Any]] = []
    now = uow.now()
    for doc_type in kinds:
        start = after.get(doc_type, 0) if after is not None else 0
        for doc in _unqueued(uow.conn, doc_type, doc_type, since, limit, start):
            if after is not None:
                after[doc_type] = int(doc["doc_id"])
            account = {"id": doc["account_id"], "name": doc["name"],
                       "billing_email": doc["billing_email"]}
            rows.append(new_row(doc_type, int(doc["doc_id"]), account, doc_type, domain, now))
    if rows:
        uow.conn.execute(insert(email_outbox), rows)
    return len(rows), [r["last_error"] for r in rows if r["state"] == "failed"]


def queue_all(engine_uow: Any, since: date, *, domain: str = "",
              kinds: Sequence[str] = DOC_KINDS, attempts: int = 3) -> tuple[int, list[str]]:
    """``queue_documents`` in transactions of ``QUEUE_CHUNK`` per kind until nothing is left;
    ``engine_uow`` makes a unit of work. A lost race is read again (up to ``attempts``).
    Returns (rows written, the errors of those that failed)."""
    total, failed, lost = 0, list[str](), 0
    # each transaction reads on from the last document the previous one read: reading from the
    # first id again walked every document already queued (and every one issued before
    # ``since``) once per chunk, a cycle's cost quadratic in the documents it queues
    after: dict[str, int] = {}
    while True:
        read = dict(after)
        try:
            with engine_uow() as uow:
                written, bad = queue_documents(uow, since, domain=domain, kinds=kinds,
                                               after=read)
                uow.commit()
        except IntegrityError:
            lost += 1
            if lost >= attempts:
                raise
            continue
        after = read
        total, failed = total + written, failed + bad
        if written == 0:
            return total, failed


def add_row(uow: UnitOfWork, row: dict[str, Any]) -> bool:
    """Insert one outbox row unless its key is there already (a savepoint); True if new."""
    exists = uow.conn.execute(select(email_outbox.c.id).where(
        email_outbox.c.idempotency_key == row["idempotency_key"])).first()
    if exists:
        return False
    try:
        with uow.conn.begin_nested():
            uow.conn.execute(insert(email_outbox).values(**row))
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class Claimed:
    """One claimed row with what the sender needs."""
    id: int
    doc_type: str
    doc_id: int
    account_id: int
    account_name: str
    recipient: str
    kind: str
    message_id: str
    attempts: int


def _due(now: datetime) -> Any:
    return or_(
        and_(email_outbox.c.state == "queued",
             or_(email_outbox.c.next_attempt_at.is_(None), email_outbox.c.next_attempt_at <= now)),
        email_outbox.c.state == "sending")


def claim(uow: UnitOfWork, *, limit: int, lease_seconds: float, holder: str | None = None,
          due_by: datetime | None = None) -> list[Claimed]:
    """Claim up to ``limit`` due rows for this process (the caller commits): queued rows whose
    time has come (by ``due_by``, default now: a run passes its start, so a row it queued
    again is not tried twice in one run), and ``sending`` rows whose holder is gone or whose
    lease ran out."""
    now = uow.now()
    holder = holder or owners.current()
    lease = timedelta(seconds=lease_seconds)
    out: list[Claimed] = []
    after = 0
    while len(out) < limit:
        rows = list(uow.conn.execute(
            select(email_outbox, accounts.c.name.label("account_name"))
            .join(accounts, accounts.c.id == email_outbox.c.account_id)
            .where(_due(due_by or now), email_outbox.c.id > after)
            .order_by(email_outbox.c.id).limit(limit * 2)).mappings())
        if not rows:
            break
        after = int(rows[-1]["id"])
        for row in rows:
            if len(out) >= limit:
                break
            if row["state"] == "sending" and not (
                    owners.is_gone(row["claimed_by"]) or row["claimed_at"] is None
                    or row["claimed_at"] <= now - lease):
                continue
            cond = [email_outbox.c.id == row["id"], email_outbox.c.state == row["state"]]
            cond.append(email_outbox.c.claimed_by.is_(None) if row["claimed_by"] is None
                        else email_outbox.c.claimed_by == row["claimed_by"])
            done = uow.conn.execute(update(email_outbox).where(*cond).values(
                state="sending", claimed_by=holder, claimed_at=now, updated_at=now))
            if done.rowcount == 1:
                out.append(Claimed(int(row["id"]), row["doc_type"], int(row["doc_id"]),
                                   int(row["account_id"]), row["account_name"],
                                   row["recipient"] or "", row["kind"], row["message_id"],
                                   int(row["attempts"])))
    return out


def _audit(uow: UnitOfWork, row_id: int, action: str, before: dict[str, Any],
           after: dict[str, Any]) -> None:
    """The audit row of a change to outbox row ``row_id`` (its document named)."""
    row = uow.conn.execute(select(email_outbox.c.doc_type, email_outbox.c.doc_id,
                                  email_outbox.c.kind, email_outbox.c.account_id)
                           .where(email_outbox.c.id == row_id)).mappings().first()
    if row is None:
        return
    number = document_number(uow.conn, row["doc_type"], int(row["doc_id"]))
    audit.record(uow, action, "email", row_id,
                 entity_ref=f"{row['kind']} {number or row['doc_id']}",
                 account_id=int(row["account_id"]), before=before, after=after)


def _finish(uow: UnitOfWork, row_id: int, holder: str | None, **values: Any) -> bool:
    holder = holder or owners.current()
    done = uow.conn.execute(update(email_outbox).where(
        email_outbox.c.id == row_id, email_outbox.c.state == "sending",
        email_outbox.c.claimed_by == holder).values(
        **values, claimed_by=None, claimed_at=None, updated_at=uow.now()))
    if done.rowcount == 1 and values.get("state") != "queued":
        after = {"state": values["state"]}
        if values.get("last_error"):
            after["last_error"] = values["last_error"]
        _audit(uow, row_id, str(values["state"]), {"state": "sending"}, after)
    return done.rowcount == 1


def mark_sent(uow: UnitOfWork, row_id: int, holder: str | None = None) -> bool:
    return _finish(uow, row_id, holder, state="sent", sent_at=uow.now(), last_error=None,
                   attempts=email_outbox.c.attempts + 1)


def mark_retry(uow: UnitOfWork, row_id: int, error: str, *, delay_seconds: float,
               max_attempts: int, holder: str | None = None) -> str:
    """A temporary failure: queued again after ``delay_seconds``, or dead once this was the
    ``max_attempts``-th attempt. Returns the new state."""
    attempts = int(uow.conn.execute(select(email_outbox.c.attempts).where(
        email_outbox.c.id == row_id)).scalar_one()) + 1
    state = "dead" if attempts >= max_attempts else "queued"
    _finish(uow, row_id, holder, state=state, attempts=attempts, last_error=error[:2000],
            next_attempt_at=uow.now() + timedelta(seconds=delay_seconds))
    return state


def mark_dead(uow: UnitOfWork, row_id: int, error: str, *, state: str = "dead",
              holder: str | None = None) -> bool:
    """A permanent failure (``dead``) or nothing to send (``failed``)."""
    return _finish(uow, row_id, holder, state=state, last_error=error[:2000],
                   attempts=email_outbox.c.attempts + 1)


def release(uow: UnitOfWork, row_ids: Iterable[int], error: str, *, delay_seconds: float,
            holder: str | None = None) -> None:
    """Give claimed rows back untried (the server could not be reached): queued again after
    ``delay_seconds``, attempts unchanged."""
    holder = holder or owners.current()
    ids = list(row_ids)
    if ids:
        uow.conn.execute(update(email_outbox).where(
            email_outbox.c.id.in_(ids), email_outbox.c.state == "sending",
            email_outbox.c.claimed_by == holder).values(
            state="queued", claimed_by=None, claimed_at=None, last_error=error[:2000],
            next_attempt_at=uow.now() + timedelta(seconds=delay_seconds),
            updated_at=uow.now()))


def retry(uow: UnitOfWork, row_id: int, *, domain: str = "") -> dict[str, Any]:
    """Put a failed or dead row back to queued, due now. A row never sent takes the account's
    current billing email (and the key and Message-ID that go with it)."""
    row = uow.conn.execute(select(email_outbox).where(
        email_outbox.c.id == row_id)).mappings().first()
    if row is None:
        raise NotFound("email", row_id)
    if row["state"] not in ("failed", "dead"):
        raise InvalidState("email", row_id, f"is {row['state']}: only failed or dead emails "
                                            "are retried")
    account = uow.conn.execute(select(accounts.c.id, accounts.c.name, accounts.c.billing_email)
                               .where(accounts.c.id == row["account_id"])).mappings().one()
    values: dict[str, Any] = {"state": "queued", "attempts": 0, "next_attempt_at": None,
                              "last_error": None, "updated_at": uow.now()}
    if account["billing_email"] != row["recipient"]:
        if not account["billing_email"]:
            raise ValidationError("billing_email", None, no_contact_error(account))
        key = idempotency_key(row["doc_type"], int(row["doc_id"]), row["kind"],
                              account["billing_email"])
        values.update(recipient=account["billing_email"], idempotency_key=key,
                      message_id=message_id(key, domain or row["message_id"].rpartition("@")[2]
                                            .rstrip(">")))
    uow.conn.execute(update(email_outbox).where(email_outbox.c.id == row_id).values(**values))
    _audit(uow, row_id, "retried", {"state": row["state"], "recipient": row["recipient"]},
           {"state": "queued", "recipient": values.get("recipient", row["recipient"])})
    return {**row, **values}


CANCELLABLE = ("queued", "failed", "dead")


def cancel(uow: UnitOfWork, row_id: int) -> dict[str, Any]:
    """Take a queued, failed or dead row out for good: ``skipped``, with ``last_error``
    naming who cancelled it (the unit of work's actor). A row being sent, sent or already
    skipped is refused."""
    row = uow.conn.execute(select(email_outbox).where(
        email_outbox.c.id == row_id)).mappings().first()
    if row is None:
        raise NotFound("email", row_id)
    if row["state"] not in CANCELLABLE:
        raise InvalidState("email", row_id, f"is {row['state']}: only queued, failed or dead "
                                            "emails are cancelled")
    note = f"cancelled by {uow.actor or 'system'}"
    done = uow.conn.execute(update(email_outbox).where(
        email_outbox.c.id == row_id, email_outbox.c.state == row["state"]).values(
        state="skipped", last_error=note, next_attempt_at=None, updated_at=uow.now()))
    if done.rowcount != 1:          # a sender claimed it meanwhile
        raise InvalidState("email", row_id, "is being sent: cancel it after this run")
    _audit(uow, row_id, "cancelled", {"state": row["state"]}, {"state": "skipped"})
    return {**row, "state": "skipped", "last_error": note}


def list_emails(conn: Connection, *, state: str | None = None, after_id: int = 0,
                limit: int = 100) -> list[RowMapping]:
    if state is not None and state not in STATES:
        raise ValidationError("state", state, f"must be one of {list(STATES)}")
    stmt = select(email_outbox).where(email_outbox.c.id > after_id)
    if state is not None:
        stmt = stmt.where(email_outbox.c.state == state)
    return list(conn.execute(stmt.order_by(email_outbox.c.id).limit(limit)).mappings())


def get_email(conn: Connection, row_id: int) -> RowMapping:
    row = conn.execute(select(email_outbox).where(email_outbox.c.id == row_id)).mappings().first()
    if row is None:
        raise NotFound("email", row_id)
    return row


def due_rows(conn: Connection, now: datetime, *, limit: int) -> list[RowMapping]:
    """Queued rows whose time has come (what a dry run shows), oldest first."""
    return list(conn.execute(
        select(email_outbox, accounts.c.name.label("account_name"))
        .join(accounts, accounts.c.id == email_outbox.c.account_id)
        .where(email_outbox.c.state == "queued",
               or_(email_outbox.c.next_attempt_at.is_(None),
                   email_outbox.c.next_attempt_at <= now))
        .order_by(email_outbox.c.id).limit(limit)).mappings())


def counts(conn: Connection) -> dict[str, int]:
    return {str(s): int(n) for s, n in conn.execute(
        select(email_outbox.c.state, func.count()).group_by(email_outbox.c.state))}


def document_number(conn: Connection, doc_type: str, doc_id: int) -> str | None:
    table = _TABLES[doc_type]
    value = conn.execute(select(table.c.number).where(table.c.id == doc_id)).scalar()
    return None if value is None else str(value)


_OPEN = {"invoice": ("posted", "partially_paid"), "debit_memo": ("active", "partially_paid")}


def still_owed(conn: Connection, doc_type: str, doc_id: int, kind: str) -> bool:
    """Whether an email of ``kind`` is still to go: always, but for a reminder, whose document
    must still be open (not paid, credited in full, void or cancelled)."""
    if not kind.startswith("reminder_"):
        return True
    table = _TABLES[doc_type]
    status = conn.execute(select(table.c.status).where(table.c.id == doc_id)).scalar()
    return status in _OPEN.get(doc_type, ())
