"""Read-only figures of the ledger for the edges (``status``, ``/status``, ``/metrics``, CLI
tables), so that no entry point reads the ledger's tables itself.

Rules kept here:
- Reads only: every function takes a ``Connection`` and writes nothing.
- Counts come back as plain ``{key: int}`` dicts (keys as the database stores them); a state
  with no rows is absent, not zero (callers that need a fixed set of keys fill in zeros).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Connection, Table, func, select

from billing_core.adapters import owner
from billing_core.adapters.bulk import id_in
from billing_core.adapters.tables import (
    accounts,
    bill_runs,
    hold_reasons,
    provisioning_requests,
    subscriptions,
)


@dataclass(frozen=True)
class AccountLabel:
    """How people recognise an account: its CRM id and its name."""
    crm_id: str
    name: str


@dataclass(frozen=True)
class BillRunTiming:
    """The newest finished bill run: when it ran and how long it took."""
    run_id: int
    seconds: float
    invoices_created: int


def _count_by(conn: Connection, table: Table, column: Column[str]) -> dict[str, int]:
    return {str(key): int(n) for key, n in conn.execute(
        select(column, func.count()).select_from(table).group_by(column))}


def holds_by_reason(conn: Connection) -> dict[str, int]:
    """Open hold reasons, counted by reason (an account with two reasons counts in both)."""
    return _count_by(conn, hold_reasons, hold_reasons.c.reason)


def provisioning_by_state(conn: Connection) -> dict[str, int]:
    """Provisioning requests, counted by state."""
    return _count_by(conn, provisioning_requests, provisioning_requests.c.state)


def bill_runs_by_status(conn: Connection) -> dict[str, int]:
    """Bill runs, counted by status (running, finished, failed)."""
    return _count_by(conn, bill_runs, bill_runs.c.status)


def bill_runs_abandoned(conn: Connection, started_before: datetime) -> int:
    """Bill runs still ``running`` whose process is known to be gone, or that started before
    ``started_before`` (their process most likely died elsewhere: a bill run closes its row
    however it ends, unless killed). The next bill run closes the first kind."""
    running = conn.execute(select(bill_runs.c.started_at, bill_runs.c.claimed_by).where(
        bill_runs.c.status == "running")).all()
    gone = set(owner.gone_among(r.claimed_by for r in running))
    return sum(r.started_at < started_before or r.claimed_by in gone for r in running)


def last_bill_run(conn: Connection) -> BillRunTiming | None:
    """The newest finished bill run, or None when none has finished yet."""
    row = conn.execute(select(bill_runs.c.id, bill_runs.c.started_at, bill_runs.c.finished_at,
                              bill_runs.c.invoices_created)
                       .where(bill_runs.c.finished_at.is_not(None))
                       .order_by(bill_runs.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return BillRunTiming(int(row.id), (row.finished_at - row.started_at).total_seconds(),
                         int(row.invoices_created))


@dataclass(frozen=True)
class BillRunProgress:
    """The newest bill run and its work units (a partitioned run; 0 units for a run that
    walked every account in one process)."""
    run_id: int
    run_date: str
    status: str
    units: int
    done: int
    claimed: int
    pending: int
    expired: int            # claimed, lease passed: another worker will take them
    reclaimed: int          # units taken over from a worker that died or stalled
    workers: int            # distinct processes holding units now
    accounts: int           # accounts read by the units done
    invoices: int           # invoices created by the units done

    def line(self) -> str:
        """``run 12 for 2026-12-06 running: 30/50 units done, 2 held by 2 workers, ...``"""
        if not self.units:
            return f"run {self.run_id} for {self.run_date} {self.status}"
        return (f"run {self.run_id} for {self.run_date} {self.status}: {self.done}/{self.units}"
                f" units done, {self.claimed} held by {self.workers} worker(s), "
                f"{self.expired} lease(s) passed, {self.reclaimed} taken over; "
                f"{self.accounts:,} accounts, {self.invoices:,} invoices")


def bill_run_progress(conn: Connection, now: datetime) -> BillRunProgress | None:
    """The newest bill run's progress (its ``work_units``), or None when none ran yet."""
    from billing_core.adapters import work_units

    row = conn.execute(select(bill_runs.c.id, bill_runs.c.run_date, bill_runs.c.status)
                       .order_by(bill_runs.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    job = f"bill_run:{row.id}"
    p = work_units.progress(conn, job, now)
    workers = len(work_units.holders(conn, job))
    return BillRunProgress(int(row.id), row.run_date.isoformat(), str(row.status), p.total,
                           p.done, p.claimed, p.pending, p.expired, p.reclaimed, workers,
                           p.totals.get("accounts", 0), p.totals.get("invoices", 0))


def account_labels(conn: Connection, account_ids: Sequence[int]) -> dict[int, AccountLabel]:
    """CRM id and name of each of ``account_ids`` that exists."""
    if not account_ids:
        return {}
    rows = conn.execute(select(accounts.c.id, accounts.c.ext_id, accounts.c.name)
                        .where(id_in(conn, accounts.c.id, list(account_ids))))
    return {int(r.id): AccountLabel(str(r.ext_id), str(r.name)) for r in rows}


def subscription_ids(conn: Connection, account_id: int) -> list[int]:
    """The account's subscriptions, oldest first."""
    return [int(i) for i in conn.execute(select(subscriptions.c.id).where(
        subscriptions.c.account_id == account_id).order_by(subscriptions.c.id)).scalars()]
