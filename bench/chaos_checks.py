"""The invariants a chaos trial checks after recovery, in SQL on the ledger and at the CRM and
the webhook receiver. Each check returns a list of violations (plain sentences); empty = holds.

Rules this module keeps:
- Only reads: the ledger through SQLAlchemy (tables read directly: this is a bench), the CRM
  through the sandbox's SOQL endpoint, the receiver through what it recorded.
- A re-delivery with the same idempotency key is not a violation: it is counted apart
  (``redeliveries``); two keys for one request, a delivery of a request billing still holds
  back, or a request marked dispatched that the receiver never saw are violations.
- The CRM is the reference for what must exist: every CRM account once in billing, every
  accepted quote revision ordered exactly once (records billing quarantined are excluded and
  counted, never silently).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from billing_core.adapters.tables import (
    accounts,
    bill_runs,
    hold_reasons,
    invoices,
    number_sequences,
    orders,
    provisioning_requests,
)
from sync.tables import handoffs, outbox, quarantine, sync_runs

Delivery = tuple[str, str]          # (request id as sent, idempotency key)
INVARIANTS = ("one order per quote revision", "accepted quotes ordered once",
              "one live invoice per account and period", "gapless invoice numbers",
              "one dispatch per provisioning request", "CRM accounts once in billing",
              "CRM converged", "no request left dispatching", "no outbox row left sending",
              "no sync run left running", "no bill run left running")
REFUSED = "billing refused the order"
BUDGET_STOPPED = "stopped: API budget"
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _quarantined(conn: Connection, obj: str) -> set[str]:
    return set(conn.execute(select(quarantine.c.crm_id).where(
        quarantine.c.object == obj, quarantine.c.status == "open")).scalars())


def one_order_per_revision(conn: Connection, _crm: Any) -> list[str]:
    dup = conn.execute(select(orders.c.source_ref, func.count()).group_by(
        orders.c.source_ref).having(func.count() > 1)).all()
    return [f"{ref}: {n} orders" for ref, n in dup]


def accepted_ordered_once(conn: Connection, crm: Any) -> list[str]:
    """Hand-offs billing refused on the order's content (e.g. a quote of usage lines only has
    no subscription or charge) wait by rule, killed or not: not owed here, counted apart."""
    held_back = _quarantined(conn, "quote") | _quarantined(conn, "quote_line")
    handoff = {ref: (state, detail or "") for ref, state, detail in conn.execute(select(
        handoffs.c.source_ref, handoffs.c.state, handoffs.c.detail))}
    owed = {f"sf:{q['Id']}:rev{int(q['Revision__c'])}" for q in crm.accepted_quotes()
            if q["Id"] not in held_back}
    refused = {ref for ref in owed if handoff.get(ref, ("", ""))[1].startswith(REFUSED)}
    placed = Counter(conn.execute(select(orders.c.source_ref).where(
        orders.c.source_ref.like("sf:%"))).scalars())
    return [f"{ref}: accepted in the CRM, {placed.get(ref, 0)} orders (hand-off "
            f"{': '.join(handoff.get(ref, ('none', '')))})"
            for ref in sorted(owed - refused) if placed.get(ref, 0) != 1]


def refused_handoffs(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(handoffs).where(
        handoffs.c.detail.like(REFUSED + "%"))).scalar_one())


def budget_stops(conn: Connection) -> int:
    """Sync runs the API budget stopped (a budget-stop trial's strike took if this is > 0)."""
    return int(conn.execute(select(func.count()).select_from(sync_runs).where(
        sync_runs.c.outcome == BUDGET_STOPPED)).scalar_one())


def one_live_invoice(conn: Connection, _crm: Any) -> list[str]:
    dup = conn.execute(select(invoices.c.account_id, invoices.c.period_start, func.count())
                       .where(invoices.c.status != "void")
                       .group_by(invoices.c.account_id, invoices.c.period_start)
                       .having(func.count() > 1)).all()
    return [f"account {a} period {p}: {n} live invoices" for a, p, n in dup]


def gapless_numbers(conn: Connection, _crm: Any) -> list[str]:
    by_series: dict[str, list[int]] = {}
    for series, number in conn.execute(select(invoices.c.series, invoices.c.number).where(
            invoices.c.number.is_not(None))):
        match = _TRAILING_NUMBER.search(number)
        by_series.setdefault(series, []).append(int(match.group(1)) if match else -1)
    nexts = {s: n for s, n in conn.execute(
        select(number_sequences.c.series, number_sequences.c.next_number))}
    out = []
    for series, numbers in by_series.items():
        numbers.sort()
        if numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))[:10]
            out.append(f"series {series}: {len(numbers)} numbers, max {max(numbers)}, "
                       f"missing {missing}")
        if series in nexts and int(nexts[series]) != len(numbers) + 1:
            out.append(f"series {series}: next number {nexts[series]} after "
                       f"{len(numbers)} invoices")
    return out


def one_dispatch(conn: Connection, deliveries: list[Delivery]) -> tuple[list[str], int]:
    """Violations, and the number of re-deliveries with the same key."""
    rows = {str(r.id): r for r in conn.execute(select(
        provisioning_requests.c.id, provisioning_requests.c.state,
        provisioning_requests.c.idempotency_key))}
    keys: dict[str, set[str]] = {}
    for request_id, key in deliveries:
        keys.setdefault(request_id, set()).add(key)
    out = []
    for request_id, seen in keys.items():
        row = rows.get(request_id)
        if row is None:
            out.append(f"request {request_id}: delivered, unknown to billing")
        elif seen != {row.idempotency_key}:
            out.append(f"request {request_id}: keys {sorted(seen)} (billing: "
                       f"{row.idempotency_key})")
        elif row.state in ("pending", "awaiting_hold_release", "cancelled"):
            out.append(f"request {request_id}: delivered, billing says {row.state}")
    for request_id, row in rows.items():
        if row.state in ("dispatched", "provisioned") and request_id not in keys:
            out.append(f"request {request_id}: {row.state}, never delivered")
    return out, len(deliveries) - len(keys)


def accounts_once(conn: Connection, crm: Any) -> list[str]:
    held_back = _quarantined(conn, "account")
    in_billing = Counter(conn.execute(select(accounts.c.ext_id).where(
        accounts.c.ext_source == "sf")).scalars())
    out = [f"account {i}: {in_billing.get(i, 0)} times in billing"
           for i in crm.account_ids() if i not in held_back and in_billing.get(i, 0) != 1]
    return out


def converged(conn: Connection, crm: Any) -> list[str]:
    """Nothing left to push, and the CRM's billing hold equals billing's. A row left
    ``sending`` is a claim not released (its own invariant): its account is not judged here."""
    out = [f"outbox: {n} rows {state}" for state, n in conn.execute(
        select(outbox.c.state, func.count()).where(
            outbox.c.state.in_(("pending", "dead"))).group_by(outbox.c.state))]
    claimed = set(conn.execute(select(outbox.c.crm_id).where(
        outbox.c.state == "sending")).scalars())
    held = set(conn.execute(select(accounts.c.ext_id).join(
        hold_reasons, hold_reasons.c.account_id == accounts.c.id).where(
        accounts.c.ext_source == "sf")).scalars())
    known = set(conn.execute(select(accounts.c.ext_id).where(
        accounts.c.ext_source == "sf")).scalars())
    for crm_id, crm_hold in crm.billing_holds().items():
        if crm_id in known - claimed and bool(crm_hold) != (crm_id in held):
            out.append(f"account {crm_id}: CRM Billing_Hold__c={crm_hold}, billing "
                       f"{'holds' if crm_id in held else 'does not hold'}")
    return out


def _left(what: str, table: Any, where: Any) -> Callable[[Connection, Any], list[str]]:
    def check(conn: Connection, _crm: Any) -> list[str]:
        n = int(conn.execute(select(func.count()).select_from(table).where(where)).scalar_one())
        return [f"{n} {what} after recovery"] if n else []
    return check


SQL_CHECKS: dict[str, Callable[[Connection, Any], list[str]]] = {
    "one order per quote revision": one_order_per_revision,
    "accepted quotes ordered once": accepted_ordered_once,
    "one live invoice per account and period": one_live_invoice,
    "gapless invoice numbers": gapless_numbers,
    "CRM accounts once in billing": accounts_once,
    "CRM converged": converged,
    "no request left dispatching": _left("provisioning requests dispatching",
                                         provisioning_requests,
                                         provisioning_requests.c.state == "dispatching"),
    "no outbox row left sending": _left("outbox rows sending", outbox,
                                        outbox.c.state == "sending"),
    "no sync run left running": _left("sync runs running", sync_runs,
                                      sync_runs.c.outcome == "running"),
    "no bill run left running": _left("bill runs running", bill_runs,
                                      bill_runs.c.status == "running"),
}


def check_all(conn: Connection, crm: Any,
              deliveries: list[Delivery]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Every invariant's violations (by name), and what is counted apart: re-deliveries with
    the same key, hand-offs billing refused on content, sync runs the API budget stopped, live
    invoices (what the bill-run invariants had to check)."""
    found = {name: check(conn, crm) for name, check in SQL_CHECKS.items()}
    found["one dispatch per provisioning request"], redeliveries = one_dispatch(conn, deliveries)
    live = conn.execute(select(func.count()).select_from(invoices).where(
        invoices.c.status != "void")).scalar_one()
    return found, {"redeliveries": redeliveries, "refused": refused_handoffs(conn),
                   "budget_stops": budget_stops(conn), "invoices": int(live)}
