"""Two bill runs started together on PostgreSQL bill every charge exactly once (issue 13).

The defect: ``bill-run --date 2026-12-06 & bill-run --date 2027-01-06`` billed overlapping
recurring periods and every one-time charge twice; 2026-11-30 with 2026-12-01 too. The service
is called from two threads without the job lock (the database alone must refuse the second
billing), with the two runs forced to read each chunk before either writes it, and once just
started together; the CLI is run as two processes (it takes the daemon's lock and waits).

What is checked against the ledger afterwards: one live line per (subscription, period start)
and no overlapping periods, each one-time charge on one live line, each usage event and credit
draw once, gapless numbers, and per account the same total as one run of the later date (a dry
run before the race): so nothing was billed twice and nothing was lost.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from billing_core.adapters.tables import (
    credit_draws,
    credit_grants,
    invoice_lines,
    invoices,
    one_time_charges,
    usage_events,
)
from billing_core.service import bill_run as bill_run_module
from billing_core.service import billing_io
from billing_core.service.bill_run import BillRunResult, run_bill_run
from billing_core.service.credits import grant_credits
from billing_core.service.orders import change_quantity
from billing_core.service.usage import import_usage
from sync.locks import job_lock

ACCOUNTS = 12
CHUNK = 4
PAIRS = [(date(2026, 12, 6), date(2027, 1, 6)),      # adjacent periods for every cycle day
         (date(2026, 11, 30), date(2026, 12, 1)),    # adjacent for day 1, the same for 6 and 15
         (date(2026, 12, 6), date(2026, 12, 6))]     # the same date


def _book(ledger: Any) -> None:
    """Accounts on cycle days 1, 6 and 15, a chunk of each (so a conflict on an account whose
    period is the same in both runs cannot be what stops the others), nothing billed yet: a
    subscription from 1 November (a quantity change on half of them), one started mid-period,
    two one-time charges, usage in early November, prepaid credit on a third of them (more
    than their usage: two draws of it would fit)."""
    seat, storage = ledger.product("12.50"), ledger.product("3.333")
    setup = ledger.product("99.00", kind="one_time")
    calls = ledger.product("0.02", kind="usage")
    for i in range(ACCOUNTS):
        acc = ledger.account(bcd=(1, 6, 15)[i // CHUNK])   # one cycle day per chunk
        sub = ledger.subscribe(acc, seat, 1 + i % 4, date(2026, 11, 1))
        ledger.subscribe(acc, storage, 2, date(2026, 11, 20))
        ledger.charge(acc, setup, 1, date(2026, 11, 3))
        ledger.charge(acc, setup, 2, date(2026, 11, 4))
        with ledger.uow() as uow:
            if i % 2:
                change_quantity(uow, sub, 5 + i, date(2026, 11, 10))
            if i % 3 == 0:
                grant_credits(uow, acc, "50.00", reason="prepaid")
            import_usage(uow, [{"event_id": f"race-{acc}-{k}", "account": str(acc),
                                "product": str(calls), "quantity": str(100 * (k + 1)),
                                "occurred_at": datetime(2026, 11, 2 + k, 9, tzinfo=UTC)}
                               for k in range(3)])
            uow.commit()


def _reference(ledger: Any, later: date) -> dict[int, int]:
    """Each account's total if one run of the later date billed everything (written nowhere)."""
    dry = run_bill_run(ledger.engine, later, dry_run=True, chunk_size=CHUNK)
    assert dry.invoices_created == ACCOUNTS
    return {p.account_id: p.total_minor for p in dry.invoices}


def _billed_once(ledger: Any, reference: dict[int, int]) -> None:
    live = invoices.c.status != "void"
    with ledger.uow() as uow:
        c = uow.conn
        spans = defaultdict(list)
        for sid, start, end in c.execute(
                select(invoice_lines.c.subscription_id, invoice_lines.c.period_start,
                       invoice_lines.c.period_end)
                .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
                .where(live, invoice_lines.c.subscription_id.is_not(None))):
            spans[sid].append((start, end))
        one_time_lines = c.execute(
            select(func.count()).select_from(invoice_lines)
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .where(live, invoice_lines.c.kind == "one_time")).scalar()
        charges_billed = c.execute(
            select(func.count()).select_from(one_time_charges)
            .join(invoices, invoices.c.id == one_time_charges.c.invoice_id).where(live)).scalar()
        charges = c.execute(select(func.count()).select_from(one_time_charges)).scalar()
        usage_billed = c.execute(
            select(func.sum(invoice_lines.c.quantity))
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .where(live, invoice_lines.c.kind == "usage")).scalar()
        usage_total = c.execute(select(func.sum(usage_events.c.quantity))).scalar()
        unbilled_events = c.execute(select(func.count()).select_from(usage_events)
                                    .where(usage_events.c.invoice_id.is_(None))).scalar()
        drawn = c.execute(select(func.coalesce(func.sum(credit_draws.c.amount_minor), 0))
                          .join(invoices, invoices.c.id == credit_draws.c.invoice_id)
                          .where(live)).scalar()
        granted, remaining = c.execute(select(func.sum(credit_grants.c.amount_minor),
                                              func.sum(credit_grants.c.remaining_minor))).one()
        totals = dict(c.execute(select(invoices.c.account_id, func.sum(invoices.c.total_minor))
                                .where(live).group_by(invoices.c.account_id)).all())
        numbers = sorted(c.execute(select(invoices.c.number)).scalars())
    for sid, periods in spans.items():
        periods.sort()
        starts = [s for s, _ in periods]
        assert len(starts) == len(set(starts)), f"subscription {sid} billed twice: {periods}"
        assert all(a[1] <= b[0] for a, b in zip(periods, periods[1:], strict=False)), \
            f"subscription {sid}: overlapping periods {periods}"
    assert (one_time_lines, charges_billed) == (charges, charges) == (2 * ACCOUNTS, 2 * ACCOUNTS)
    assert (usage_billed, unbilled_events) == (usage_total, 0)
    assert drawn == granted - remaining and remaining >= 0
    assert totals == reference
    assert numbers == [f"INV-{n:06d}" for n in range(1, len(numbers) + 1)]


def _race(ledger: Any, dates: tuple[date, date], *,
          forced: bool, monkeypatch: pytest.MonkeyPatch) -> list[BillRunResult]:
    """Both runs at once, each in its own thread, no lock. ``forced``: each run reads every
    chunk, then waits for the other to have read it too before writing (a race every chunk)."""
    if forced:
        real, seen = bill_run_module.load_chunk, set()
        met = threading.Barrier(2, timeout=60)

        def load_then_meet(conn: Any, catalog: Any, run_date: date, after_id: int,
                           size: int, **kw: Any) -> Any:
            data = real(conn, catalog, run_date, after_id, size, **kw)
            key = (threading.get_ident(), after_id)
            if data.account_ids and key not in seen:   # the first reading of each chunk
                seen.add(key)
                met.wait()
            return data
        monkeypatch.setattr(bill_run_module, "load_chunk", load_then_meet)
    start = threading.Barrier(2, timeout=60)
    results: dict[date | int, BillRunResult] = {}
    failures: list[BaseException] = []

    def run(key: date | int, day: date) -> None:
        try:
            start.wait()
            # share=False: two uncoordinated runs (the partitioned run would share the work)
            results[key] = run_bill_run(ledger.engine, day, chunk_size=CHUNK, share=False)
        except BaseException as exc:  # noqa: BLE001 (a thread cannot raise into the test)
            failures.append(exc)

    keys = list(dates) if dates[0] != dates[1] else [0, 1]
    threads = [threading.Thread(target=run, args=(k, d)) for k, d in zip(keys, dates, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    return [results[k] for k in keys]


@pytest.mark.postgres
@pytest.mark.parametrize("dates", PAIRS, ids=lambda p: f"{p[0]}+{p[1]}")
def test_two_runs_forced_to_race_bill_each_charge_once(pg_ledger, dates, monkeypatch) -> None:
    _book(pg_ledger)
    reference = _reference(pg_ledger, dates[1])
    results = _race(pg_ledger, dates, forced=True, monkeypatch=monkeypatch)
    _billed_once(pg_ledger, reference)
    # every run accounts for every account: billed it, or found it billed by the other
    assert [r.invoices_created + r.already_billed for r in results] == [ACCOUNTS, ACCOUNTS], [
        (r.run_date, r.invoices_created, r.already_billed, r.retried_chunks) for r in results]
    if dates == PAIRS[0]:
        assert results[1].invoices_created == ACCOUNTS     # the later period is always billed
    # each chunk was read by both runs before either wrote it: the loser retried every one
    assert sum(r.retried_chunks for r in results) >= ACCOUNTS // CHUNK


@pytest.mark.postgres
def test_two_runs_started_together_bill_each_charge_once(pg_ledger, monkeypatch) -> None:
    _book(pg_ledger)
    dates = PAIRS[0]
    reference = _reference(pg_ledger, dates[1])
    results = _race(pg_ledger, dates, forced=False, monkeypatch=monkeypatch)
    _billed_once(pg_ledger, reference)
    assert results[1].invoices_created == ACCOUNTS
    assert results[0].invoices_created + results[0].already_billed == ACCOUNTS


@pytest.mark.postgres
def test_an_account_billed_while_its_chunk_is_read_counts_as_already_billed(
        pg_ledger, monkeypatch) -> None:
    """READ COMMITTED reads each statement anew: another run that commits between a chunk's
    first look at the invoices and its reads of the charges leaves it nothing to bill; the run
    says those accounts were already billed (it said nothing of them before)."""
    _book(pg_ledger)
    day = PAIRS[0][0]
    real, other = billing_io._latest_periods, []

    def then_another_run_bills_it_all(conn: Any, lo: int, hi: int) -> dict[int, date]:
        seen = real(conn, lo, hi)
        if not other:
            other.append(None)
            t = threading.Thread(target=lambda: other.append(
                run_bill_run(pg_ledger.engine, day, chunk_size=CHUNK, share=False)))
            t.start()
            t.join()
        return seen
    monkeypatch.setattr(billing_io, "_latest_periods", then_another_run_bills_it_all)
    late = run_bill_run(pg_ledger.engine, day, chunk_size=CHUNK, share=False)
    assert other[1].invoices_created == ACCOUNTS
    assert (late.invoices_created, late.already_billed, late.errors) == (0, ACCOUNTS, [])


def _cli(url: str, day: date, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGERBRIDGE_CONFIG"}
    return subprocess.Popen(
        [sys.executable, "-c", "from jobs.cli import main; main()", "--database-url", url,
         "bill-run", "--date", day.isoformat(), "--chunk-size", str(CHUNK), "--json"],
        cwd=cwd, env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _url(engine: Engine, request: pytest.FixtureRequest) -> str:
    if engine.dialect.name == "sqlite":
        return str(engine.url)
    schema = request.getfixturevalue("pg_schema_url")
    server = engine.url.render_as_string(hide_password=False)
    return f"{server}?options=-csearch_path%3D{schema}"


@pytest.mark.postgres
def test_two_cli_bill_runs_for_adjacent_dates(pg_ledger, request, tmp_path) -> None:
    """The issue's command line: both runs end well, the charges billed once."""
    _book(pg_ledger)
    dates = PAIRS[0]
    reference = _reference(pg_ledger, dates[1])
    url = _url(pg_ledger.engine, request)
    procs = [_cli(url, day, tmp_path) for day in dates]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    _billed_once(pg_ledger, reference)


def test_cli_bill_run_waits_for_the_job_lock(ledger, request, tmp_path) -> None:
    """The CLI takes the daemon's lock: while another holds it, it bills nothing and says it
    waits; once the lock is free it runs."""
    _book(ledger)
    url = _url(ledger.engine, request)
    with job_lock(ledger.engine, "bill-run") as got:
        assert got
        proc = _cli(url, PAIRS[0][0], tmp_path)
        assert proc.stderr is not None
        said = []
        while not said or "waiting" not in said[-1]:
            said.append(proc.stderr.readline())
            assert said[-1], f"the CLI ended without waiting: {said} {proc.communicate()}"
        with ledger.uow() as uow:
            assert uow.conn.execute(select(func.count()).select_from(invoices)).scalar() == 0
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    with ledger.uow() as uow:
        assert uow.conn.execute(select(func.count()).select_from(invoices)).scalar() == ACCOUNTS
