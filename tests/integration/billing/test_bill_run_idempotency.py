"""A bill run bills nothing twice: rerun, overlapping dates, racing runs; a dry run writes nothing."""
from __future__ import annotations

import threading
from datetime import date

import pytest
from sqlalchemy import func, select

from billing_core.adapters.tables import (
    bill_runs,
    invoice_lines,
    invoices,
    number_sequences,
    subscriptions,
    usage_events,
)
from billing_core.service.bill_run import run_bill_run
from billing_core.service.usage import import_usage


def _counts(ledger) -> dict[str, object]:
    with ledger.uow() as uow:
        c = uow.conn
        return {
            "invoices": c.execute(select(func.count()).select_from(invoices)).scalar(),
            "lines": c.execute(select(func.count()).select_from(invoice_lines)).scalar(),
            "runs": c.execute(select(func.count()).select_from(bill_runs)).scalar(),
            "seq": c.execute(select(number_sequences.c.next_number)).scalar(),
            "billed": c.execute(select(func.count()).select_from(subscriptions)
                                .where(subscriptions.c.billed_through.is_not(None))).scalar(),
            "rated": c.execute(select(func.count()).select_from(usage_events)
                               .where(usage_events.c.invoice_id.is_not(None))).scalar(),
        }


def _book(ledger, accounts: int = 5) -> list[int]:
    seat = ledger.product("12.50")
    calls = ledger.product("0.02", kind="usage")
    setup = ledger.product("99.00", kind="one_time")
    out = []
    for i in range(accounts):
        acc = ledger.account(bcd=1 + i % 3)
        ledger.subscribe(acc, seat, 1 + i, date(2026, 2, 10))
        ledger.charge(acc, setup, 1, date(2026, 2, 10))
        with ledger.uow() as uow:
            import_usage(uow, [{"event_id": f"e{acc}-{k}", "account": str(acc),
                                "product": str(calls), "quantity": "150",
                                "occurred_at": f"2026-02-{11 + k}T08:00:00Z"} for k in range(3)])
            uow.commit()
        out.append(acc)
    return out


def test_rerun_and_overlapping_dates_bill_nothing_twice(ledger) -> None:
    _book(ledger)
    first = ledger.run(date(2026, 3, 5))
    assert first.invoices_created == 5
    after_first = _counts(ledger)
    assert after_first["rated"] == 15
    for day in (date(2026, 3, 5), date(2026, 3, 3), date(2026, 3, 1), date(2026, 2, 20)):
        again = ledger.run(day)
        assert again.invoices_created == 0
    assert {k: v for k, v in _counts(ledger).items() if k != "runs"} == {
        k: v for k, v in after_first.items() if k != "runs"}
    assert ledger.run(date(2026, 4, 5)).invoices_created == 5   # the next period bills again


def test_dry_run_writes_nothing_and_shows_the_same_invoices(ledger) -> None:
    _book(ledger)
    before = _counts(ledger)
    dry = ledger.run(date(2026, 3, 5), dry_run=True)
    assert dry.invoices_created == 5 and dry.run_id is None
    assert _counts(ledger) == before
    real = ledger.run(date(2026, 3, 5))
    assert [(p.account_id, p.number, p.total_minor) for p in dry.invoices] == [
        (p.account_id, p.number, p.total_minor) for p in real.invoices]


def test_invoice_totals_are_sums_of_rounded_lines(ledger) -> None:
    _book(ledger)
    ledger.run(date(2026, 3, 5))
    with ledger.uow() as uow:
        rows = uow.conn.execute(select(
            invoices.c.subtotal_minor, invoices.c.tax_minor, invoices.c.total_minor,
            func.sum(invoice_lines.c.amount_minor), func.sum(invoice_lines.c.tax_minor))
            .join(invoice_lines, invoice_lines.c.invoice_id == invoices.c.id)
            .group_by(invoices.c.id, invoices.c.subtotal_minor, invoices.c.tax_minor,
                      invoices.c.total_minor)).all()
    assert rows and all(r[0] == r[3] and r[1] == r[4] and r[2] == r[0] + r[1] for r in rows)


@pytest.mark.postgres
def test_two_racing_bill_runs_on_postgresql(pg_ledger) -> None:
    """Two runs on two connections at once: every account billed once, numbers gapless."""
    ledger, engine = pg_ledger, pg_ledger.engine
    accounts = _book(ledger, accounts=24)
    barrier = threading.Barrier(2)
    results, failures = [], []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(run_bill_run(engine, date(2026, 3, 5), chunk_size=5,
                                        uow_factory=ledger.uow))
        except Exception as exc:  # noqa: BLE001 (a thread cannot raise into the test)
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    # the two runs of one date share one partitioned run: each account read by one of them
    assert len({r.run_id for r in results}) == 1
    assert sum(r.accounts_seen for r in results) == len(accounts), [
        (r.invoices_created, r.already_billed, r.errors, r.retried_chunks, r.accounts_seen)
        for r in results]
    assert sum(r.invoices_created for r in results) == len(accounts)
    with ledger.uow() as uow:
        numbers = sorted(uow.conn.execute(select(invoices.c.number)).scalars())
        per_account = uow.conn.execute(select(invoices.c.account_id, func.count())
                                       .group_by(invoices.c.account_id)).all()
    assert numbers == [f"INV-{n:06d}" for n in range(1, len(accounts) + 1)]
    assert all(c == 1 for _, c in per_account) and len(per_account) == len(accounts)
