"""Dunning: payment reminders on a schedule of days relative to the due date, sent through the
email outbox (``email_outbox``, kind ``reminder_<offset>``).

Rules kept here
- The schedule is a list of offsets in days from the due date (``-3``: three days before,
  ``7``: a week after). The ledger has no account class, so one schedule serves every account.
- A document is dunned while it is open: an invoice ``posted`` or ``partially_paid``, a debit
  memo ``active`` or ``partially_paid`` (paid, credited in full, void or cancelled: never
  again), issued on or after ``since``.
- On day D a document is owed the reminder of the latest offset whose day (due date + offset)
  is D or earlier, if it has none of that kind yet: one reminder per offset, ever (the outbox's
  unique key), and a run after a gap sends only the latest one due, not every one missed.
- A reminder queued while the document was open and settled before it went is ``skipped`` by
  the sender (``email_outbox.still_owed``).
- What was sent, when, to whom is the outbox row (``dunning list`` shows it beside what is
  next).
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts, debit_memos, email_outbox, invoices
from billing_core.service.email_outbox import new_row

OPEN = {"invoice": ("posted", "partially_paid"), "debit_memo": ("active", "partially_paid")}
_TABLES = {"invoice": invoices, "debit_memo": debit_memos}


def reminder_kind(offset: int) -> str:
    return f"reminder_{offset}"


def _open_documents(conn: Connection, today: date, offsets: tuple[int, ...],
                    since: date) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not offsets:
        return out
    latest_due = today - timedelta(days=min(offsets))    # no offset's day has come before it
    for doc_type, table in _TABLES.items():
        amount = table.c.total_minor if doc_type == "invoice" else table.c.amount_minor
        rows = conn.execute(
            select(table.c.id, table.c.number, table.c.account_id, table.c.due_date,
                   table.c.currency, (amount - table.c.applied_minor).label("balance_minor"),
                   accounts.c.name, accounts.c.billing_email)
            .join(accounts, accounts.c.id == table.c.account_id)
            .where(table.c.status.in_(OPEN[doc_type]), table.c.due_date.is_not(None),
                   table.c.issue_date >= since, table.c.due_date <= latest_due)
            .order_by(table.c.id)).mappings()
        out.extend({"doc_type": doc_type, **r} for r in rows)
    return out


def _reminders_of(conn: Connection, docs: list[dict[str, Any]]) -> dict[tuple[str, int],
                                                                        dict[str, Any]]:
    """Each document's reminder rows by kind: {(doc_type, id): {kind: row}}."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for doc_type in _TABLES:
        ids = [int(d["id"]) for d in docs if d["doc_type"] == doc_type]
        for start in range(0, len(ids), 500):
            for row in conn.execute(select(email_outbox).where(
                    email_outbox.c.doc_type == doc_type,
                    email_outbox.c.doc_id.in_(ids[start:start + 500]),
                    email_outbox.c.kind.like("reminder_%"))).mappings():
                found.setdefault((doc_type, int(row["doc_id"])), {})[row["kind"]] = dict(row)
    return found


def _latest_due(due_date: date, today: date, offsets: tuple[int, ...]) -> int | None:
    passed = [o for o in offsets if due_date + timedelta(days=o) <= today]
    return max(passed) if passed else None


def owed_reminders(conn: Connection, today: date, offsets: tuple[int, ...],
                   since: date) -> list[dict[str, Any]]:
    """The reminders owed on ``today`` (module rules): document, account, offset, kind."""
    docs = _open_documents(conn, today, offsets, since)
    sent = _reminders_of(conn, docs)
    out = []
    for doc in docs:
        offset = _latest_due(doc["due_date"], today, offsets)
        if offset is None or reminder_kind(offset) in sent.get((doc["doc_type"],
                                                               int(doc["id"])), {}):
            continue
        out.append({**doc, "offset": offset, "kind": reminder_kind(offset),
                    "days_overdue": (today - doc["due_date"]).days})
    return out


def queue_reminders(uow: UnitOfWork, today: date, offsets: tuple[int, ...], since: date, *,
                    domain: str = "") -> list[dict[str, Any]]:
    """Queue the reminders owed on ``today`` in the email outbox; returns them. The caller
    commits. (An account without a billing email gets its reminder ``failed``, as any email.)"""
    owed = owed_reminders(uow.conn, today, offsets, since)
    now = uow.now()
    rows = [new_row(d["doc_type"], int(d["id"]),
                    {"id": d["account_id"], "name": d["name"],
                     "billing_email": d["billing_email"]}, d["kind"], domain, now)
            for d in owed]
    if rows:
        uow.conn.execute(email_outbox.insert(), rows)
    return owed


def dunning_list(conn: Connection, today: date, offsets: tuple[int, ...],
                 since: date) -> list[dict[str, Any]]:
    """Every open document past the schedule's first day: its reminders so far (kind: state)
    and what is next (the offset and its day), for ``dunning list``."""
    docs = _open_documents(conn, today, offsets, since)
    sent = _reminders_of(conn, docs)
    out = []
    for doc in docs:
        have = sent.get((doc["doc_type"], int(doc["id"])), {})
        owed = _latest_due(doc["due_date"], today, offsets)
        later = [o for o in sorted(offsets) if doc["due_date"] + timedelta(days=o) > today]
        out.append({
            "document": doc["number"], "doc_type": doc["doc_type"], "account": doc["name"],
            "due_date": doc["due_date"], "days_overdue": (today - doc["due_date"]).days,
            "balance_minor": doc["balance_minor"], "currency": doc["currency"],
            "reminders": ", ".join(f"{k} {r['state']}" for k, r in sorted(have.items())),
            "due_now": reminder_kind(owed) if owed is not None
            and reminder_kind(owed) not in have else "",
            "next": f"reminder_{later[0]} on {doc['due_date'] + timedelta(days=later[0])}"
            if later else ""})
    return out
