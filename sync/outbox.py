"""The outbox: what each CRM record should show, with a content hash.

Rules kept here:
- ``refresh`` computes the payload of every account (and handed-off quote) of a connection whose
  billing figures may have moved since the last refresh (a watermark kept as the cursor of the
  pseudo-object ``_outbox``; the first refresh of a day adds every account with a document past
  due, since days passing change overdue days with no event; ``full=True`` or a first refresh
  takes them all), and writes a row only when the hash changed.
- A row whose new hash equals the last acknowledged hash is ``acked`` again (nothing to send);
  any other change is ``pending`` with its attempts reset.
- Payload values are JSON: money and dates as text, decoded by field name at push time.
- Opt-in (``write_hold``): ``credit_hold`` (the CRM's own hold flag) is set only while a reason
  billing places (``credit_limit``, ``overdue``) applies, and cleared only when billing was the
  one that set it (its last acknowledged value); otherwise the field is left out entirely.
- Which accounts moved is read from billing's documents (read-only) by ``changed_accounts``;
  billing offers no "changed since" query of its own yet.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select, union, update

from billing_core.adapters.tables import (
    accounts,
    applications,
    credit_memos,
    debit_memos,
    hold_history,
    invoice_lines,
    invoices,
    one_time_charges,
    orders,
    payments,
    provisioning_requests,
    subscriptions,
)
from billing_core.domain.money import from_minor
from billing_core.service.holds import current_reasons
from billing_core.service.receivables import account_summary
from sync.runs import get_cursor, save_cursor
from sync.tables import handoffs, outbox, sync_records

DECIMAL_FIELDS = frozenset({"open_balance", "available_credit", "exposure"})
DATE_FIELDS = frozenset({"last_invoice_date"})
INT_FIELDS = frozenset({"oldest_overdue_days"})
WATERMARK = "_outbox"


def payload_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def decode(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in DECIMAL_FIELDS:
        return Decimal(value)
    if field in DATE_FIELDS:
        return date.fromisoformat(value)
    if field in INT_FIELDS:
        return int(value)
    return value


BILLING_REASONS = frozenset({"credit_limit", "overdue"})


def account_payload(conn: Connection, account_id: int, on_date: date,
                    grace_days: int = 0, *, write_hold: bool = False,
                    acked: dict[str, Any] | None = None) -> dict[str, Any]:
    s = account_summary(conn, account_id, on_date, grace_days=grace_days)
    cur = s["currency"]
    reasons = sorted(current_reasons(conn, account_id))

    def money(minor: int | None) -> str | None:
        return None if minor is None else str(from_minor(int(minor), cur))

    payload: dict[str, Any] = {
        "billing_hold": bool(reasons), "billing_hold_reasons": ";".join(reasons),
        "open_balance": money(s["open_balance_minor"]),
        "available_credit": money(s["available_credit_minor"]),
        "exposure": money(s["exposure_minor"]),
        "oldest_overdue_days": int(s["oldest_overdue_days"]),
        "last_invoice_number": s["last_invoice_number"],
        "last_invoice_date": s["last_invoice_date"].isoformat() if s["last_invoice_date"]
        else None,
    }
    if write_hold:
        if BILLING_REASONS & set(reasons):
            payload["credit_hold"] = True
        elif acked and "credit_hold" in acked:
            payload["credit_hold"] = False
    return payload


def quote_payload(conn: Connection, order_id: int) -> dict[str, Any]:
    states = [r[0] for r in conn.execute(select(provisioning_requests.c.state).where(
        provisioning_requests.c.order_id == order_id))]
    order_status = conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar()
    if not states:
        prov = "not required"
    elif "awaiting_hold_release" in states or order_status == "held":
        prov = "waiting for hold release"
    elif "failed" in states:
        prov = "failed"
    elif all(s in ("provisioned", "cancelled") for s in states):
        prov = "provisioned" if "provisioned" in states else "cancelled"
    elif all(s in ("provisioned", "dispatched", "cancelled") for s in states):
        prov = "dispatched"
    else:
        prov = "in progress"
    sub_ids = select(subscriptions.c.id).where(subscriptions.c.order_id == order_id)
    inv = conn.execute(select(invoices.c.number).where(
        invoices.c.number.is_not(None), invoices.c.status != "void",
        or_(invoices.c.id.in_(select(invoice_lines.c.invoice_id).where(
            invoice_lines.c.subscription_id.in_(sub_ids))),
            invoices.c.id.in_(select(one_time_charges.c.invoice_id).where(
                one_time_charges.c.order_id == order_id))))
        .order_by(invoices.c.issue_date, invoices.c.id).limit(1)).scalar()
    return {"order_number": f"ORD-{order_id}", "provisioning_status": prov,
            "invoice_number": inv}


def changed_accounts(conn: Connection, since: datetime) -> set[int]:
    parts = [
        select(accounts.c.id.label("a")).where(accounts.c.updated_at >= since),
        select(invoices.c.account_id).where(or_(invoices.c.posted_at >= since,
                                                invoices.c.voided_at >= since)),
        select(payments.c.account_id).where(payments.c.created_at >= since),
        select(applications.c.account_id).where(or_(applications.c.applied_at >= since,
                                                    applications.c.reversed_at >= since)),
        select(credit_memos.c.account_id).where(or_(credit_memos.c.activated_at >= since,
                                                    credit_memos.c.cancelled_at >= since)),
        select(debit_memos.c.account_id).where(or_(debit_memos.c.activated_at >= since,
                                                   debit_memos.c.cancelled_at >= since)),
        select(hold_history.c.account_id).where(hold_history.c.at >= since),
        select(orders.c.account_id).where(or_(orders.c.created_at >= since,
                                              orders.c.activated_at >= since)),
        select(provisioning_requests.c.account_id).where(
            provisioning_requests.c.updated_at >= since),
    ]
    return {int(r[0]) for r in conn.execute(union(*parts))}


def overdue_accounts(conn: Connection, on_date: date) -> set[int]:
    """Accounts with an unpaid document past due: their overdue days grow with no event."""
    parts = [
        select(invoices.c.account_id.label("a")).where(
            invoices.c.status.in_(("posted", "partially_paid")), invoices.c.due_date < on_date),
        select(debit_memos.c.account_id).where(
            debit_memos.c.status.in_(("active", "partially_paid")),
            debit_memos.c.due_date < on_date),
    ]
    return {int(r[0]) for r in conn.execute(union(*parts))}


def _upsert(conn: Connection, connection: str, obj: str, crm_id: str, ledger_id: int,
            payload: dict[str, Any], existing: dict[tuple[str, str], Any], now: datetime) -> bool:
    digest = payload_hash(payload)
    row = existing.get((obj, crm_id))
    text = json.dumps(payload, sort_keys=True)
    if row is None:
        conn.execute(insert(outbox).values(
            connection=connection, object=obj, crm_id=crm_id, ledger_id=ledger_id,
            payload=text, hash=digest, state="pending", attempts=0, next_attempt_at=now,
            updated_at=now))
        return True
    if row["hash"] == digest:
        return False
    state = "acked" if digest == row["acked_hash"] else "pending"
    conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
        payload=text, hash=digest, state=state, attempts=0, next_attempt_at=now,
        last_error=None, dead_at=None, updated_at=now))
    return state == "pending"


def refresh(engine: Engine, connection: str, now: datetime, *, full: bool = False,
            grace_days: int = 0, write_hold: bool = False, only_accounts: Iterable[int] | None = None,
            chunk: int = 500) -> int:
    """Recompute payloads; returns how many rows became pending."""
    with engine.connect() as conn:
        mark = get_cursor(conn, connection, WATERMARK)
    since = datetime.fromisoformat(mark) if mark else None
    take_all = full or since is None
    new_day = since is not None and since.date() != now.date()
    started = now
    pending = 0
    with engine.begin() as conn:
        links = select(sync_records.c.ledger_id, sync_records.c.crm_id).where(
            sync_records.c.connection == connection, sync_records.c.object == "account",
            sync_records.c.deleted_at.is_(None), sync_records.c.ledger_id.is_not(None))
        if only_accounts is not None:
            wanted: set[int] | None = set(only_accounts)
        elif take_all or since is None:
            wanted = None
        else:
            wanted = changed_accounts(conn, since - timedelta(seconds=5))
            if new_day:
                wanted |= overdue_accounts(conn, now.date())
        if wanted is not None:
            links = links.where(sync_records.c.ledger_id.in_(sorted(wanted)))
        rows = [(int(r[0]), r[1]) for r in conn.execute(links)]
        quotes = [(r[0], int(r[1]), int(r[2])) for r in conn.execute(
            select(handoffs.c.quote_crm_id, handoffs.c.order_id, orders.c.account_id)
            .join(orders, orders.c.id == handoffs.c.order_id)
            .where(handoffs.c.connection == connection, handoffs.c.state == "done"))
            if wanted is None or r[2] in wanted]
        for start in range(0, max(len(rows), len(quotes)), chunk):
            part = rows[start:start + chunk]
            qpart = quotes[start:start + chunk]
            keys = [c for _, c in part] + [q for q, _, _ in qpart]
            existing = {(r["object"], r["crm_id"]): r for r in conn.execute(
                select(outbox).where(outbox.c.connection == connection,
                                     outbox.c.crm_id.in_(keys))).mappings()}
            for ledger_id, crm_id in part:
                row = existing.get(("account", crm_id))
                acked = json.loads(row["acked_payload"]) if row is not None \
                    and row["acked_payload"] else None
                pending += _upsert(conn, connection, "account", crm_id, ledger_id,
                                   account_payload(conn, ledger_id, now.date(), grace_days,
                                                   write_hold=write_hold, acked=acked),
                                   existing, now)
            for quote_id, order_id, _ in qpart:
                pending += _upsert(conn, connection, "quote", quote_id, order_id,
                                   quote_payload(conn, order_id), existing, now)
        if only_accounts is None:
            save_cursor(conn, connection, WATERMARK, started.isoformat(), now)
    return pending
