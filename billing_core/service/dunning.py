"""Dunning: payment reminders on a schedule of days relative to the due date, sent through the
email outbox (``email_outbox``, kind ``reminder_<offset>``).

Rules kept here
- The schedule is a list of offsets in days from the due date (``-3``: three days before,
  ``7``: a week after). Each account class may have its own (``Schedules``,
  billing_core/domain/dunning.py: ``[dunning.classes.NAME]``); an account without a class, or
  of a class not configured, has the default one (the second is named by ``unknown_classes``).
- A document is dunned while it is open: an invoice ``posted`` or ``partially_paid``, a debit
  memo ``active`` or ``partially_paid`` (paid, credited in full, void or cancelled: never
  again), issued on or after ``since``.
- On day D a document is owed the reminder of the latest offset whose day (due date + offset)
  is D or earlier, if it has none of that kind yet: one reminder per offset, ever (the outbox's
  unique key), and a run after a gap sends only the latest one due, not every one missed.
- A reminder queued while the document was open and settled before it went is ``skipped`` by
  the sender (``email_outbox.still_owed``).
- What was sent, when, to whom is the outbox row (``dunning list`` shows it beside what is
  next); a run that queues writes audit rows (actor: the unit of work's): one ``queued`` per
  reminder (entity ``email``) and one ``run`` (entity ``dunning``: the day and the count).
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts, debit_memos, email_outbox, invoices
from billing_core.domain.dunning import Schedules
from billing_core.service import audit
from billing_core.service.email_outbox import new_row
from billing_core.service.receivables import in_open

Offsets = tuple[int, ...] | Schedules

OPEN = {"invoice": ("posted", "partially_paid"), "debit_memo": ("active", "partially_paid")}
_TABLES = {"invoice": invoices, "debit_memo": debit_memos}


def reminder_kind(offset: int) -> str:
    return f"reminder_{offset}"


def _open_documents(conn: Connection, today: date, schedules: Schedules,
                    since: date) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    earliest = schedules.earliest()
    if earliest is None:
        return out
    latest_due = today - timedelta(days=earliest)    # no offset's day has come before it
    for doc_type, table in _TABLES.items():
        amount = table.c.total_minor if doc_type == "invoice" else table.c.amount_minor
        # sorted by id in Python: an ORDER BY id makes SQLite walk every document in id order
        # instead of the open ones by ``ix_*_open_due``
        rows = conn.execute(
            select(table.c.id, table.c.number, table.c.account_id, table.c.due_date,
                   table.c.currency, (amount - table.c.applied_minor).label("balance_minor"),
                   accounts.c.name, accounts.c.billing_email, accounts.c.account_class)
            .join(accounts, accounts.c.id == table.c.account_id)
            .where(in_open(table.c.status, OPEN[doc_type]), table.c.due_date.is_not(None),
                   table.c.issue_date >= since, table.c.due_date <= latest_due)).mappings()
        out.extend(sorted(({"doc_type": doc_type, **r} for r in rows), key=lambda d: d["id"]))
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


def owed_reminders(conn: Connection, today: date, offsets: Offsets,
                   since: date) -> list[dict[str, Any]]:
    """The reminders owed on ``today`` (module rules): document, account, its class, offset,
    kind. ``offsets``: one schedule for every account, or the ``Schedules`` by class."""
    schedules = Schedules.of_offsets(offsets)
    docs = _open_documents(conn, today, schedules, since)
    sent = _reminders_of(conn, docs)
    out = []
    for doc in docs:
        offset = _latest_due(doc["due_date"], today, schedules.of(doc["account_class"]))
        if offset is None or reminder_kind(offset) in sent.get((doc["doc_type"],
                                                               int(doc["id"])), {}):
            continue
        out.append({**doc, "offset": offset, "kind": reminder_kind(offset),
                    "days_overdue": (today - doc["due_date"]).days})
    return out


def unknown_classes(conn: Connection, schedules: Schedules) -> list[dict[str, Any]]:
    """Accounts whose class is not configured (they get the default schedule): id, name, class
    and the note naming the field and value, for the dunning commands to show."""
    rows = conn.execute(select(accounts.c.id, accounts.c.name, accounts.c.account_class).where(
        accounts.c.account_class.is_not(None)).order_by(accounts.c.id)).mappings()
    return [{**r, "note": schedules.unknown_note(r["account_class"])} for r in rows
            if not schedules.known(r["account_class"])]


def queue_reminders(uow: UnitOfWork, today: date, offsets: Offsets, since: date, *,
                    domain: str = "") -> list[dict[str, Any]]:
    """Queue the reminders owed on ``today`` in the email outbox; returns them. The caller
    commits. (An account without a billing email gets its reminder ``failed``, as any email.)
    Audit: one ``queued`` row per reminder and one ``run`` row for the run."""
    owed = owed_reminders(uow.conn, today, offsets, since)
    now = uow.now()
    rows = [new_row(d["doc_type"], int(d["id"]),
                    {"id": d["account_id"], "name": d["name"],
                     "billing_email": d["billing_email"]}, d["kind"], domain, now)
            for d in owed]
    entries = []
    for d, row in zip(owed, rows, strict=True):
        inserted = uow.conn.execute(email_outbox.insert().values(**row)).inserted_primary_key
        row_id = inserted[0] if inserted else None
        d["email_id"] = row_id
        entries.append(audit.Entry(
            "queued", "email", row_id, d["number"], int(d["account_id"]),
            {"kind": [None, d["kind"]], "state": [None, row["state"]],
             "recipient": [None, row["recipient"]], "document": [None, d["number"]],
             "account_class": [None, d["account_class"]]}))
    entries.append(audit.Entry("run", "dunning", None, today.isoformat(), None,
                               {"date": [None, today.isoformat()],
                                "reminders": [None, len(owed)],
                                "failed": [None, sum(1 for r in rows
                                                     if r["state"] == "failed")]}))
    audit.record_many(uow, entries)
    return owed


def dunning_list(conn: Connection, today: date, offsets: Offsets,
                 since: date) -> list[dict[str, Any]]:
    """Every open document past its schedule's first day: the account's class, its reminders
    so far (kind: state) and what is next (the offset and its day), for ``dunning list``."""
    schedules = Schedules.of_offsets(offsets)
    docs = _open_documents(conn, today, schedules, since)
    sent = _reminders_of(conn, docs)
    out = []
    for doc in docs:
        mine = schedules.of(doc["account_class"])
        if not mine or doc["due_date"] + timedelta(days=mine[0]) > today:
            continue                      # before its own schedule's first day (or none)
        have = sent.get((doc["doc_type"], int(doc["id"])), {})
        owed = _latest_due(doc["due_date"], today, mine)
        later = [o for o in mine if doc["due_date"] + timedelta(days=o) > today]
        out.append({
            "document": doc["number"], "doc_type": doc["doc_type"], "account": doc["name"],
            "account_class": doc["account_class"] or "",
            "due_date": doc["due_date"], "days_overdue": (today - doc["due_date"]).days,
            "balance_minor": doc["balance_minor"], "currency": doc["currency"],
            "reminders": ", ".join(f"{k} {r['state']}" for k, r in sorted(have.items())),
            "due_now": reminder_kind(owed) if owed is not None
            and reminder_kind(owed) not in have else "",
            "next": f"reminder_{later[0]} on {doc['due_date'] + timedelta(days=later[0])}"
            if later else ""})
    return out
