"""Property (issue 14): for any sequence of quantity changes and a cancellation, recorded in any
order between bill runs, what a subscription's invoices charge for it adds up to the integral
of its effective quantity x price over the days billed, within one minor unit per line, on
SQLite and PostgreSQL.

The integral, day by day: ``quantity on the day x price x (12 for an annual subscription of a
monthly price) / days of the period containing the day`` (periods convention 4), over
``[start, billed_through)``, the quantity read from the history the database holds at the end
(the ordered quantity, then every active change by date and id; 0 from the end date). Each
line is rounded once, by at most half a unit; so the difference is at most half a unit per
line. Nothing billed twice: a second run of the same date bills nothing, and
``billed_through`` never passes the end date."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    invoice_lines,
    invoices,
)
from billing_core.domain.errors import LedgerError
from billing_core.service import gate

BASE = date(2026, 1, 1)
PRICE = Decimal("20.00")
RUNS = [date(2026, month, 28) for month in range(1, 11)]

# (recorded before run k, effective day from the start, quantity; 0 = cancel at that day)
events = st.lists(st.tuples(st.integers(0, len(RUNS) - 1), st.integers(0, 240),
                            st.integers(0, 9)), max_size=6)


def _record(ledger, sub: int, offset: int, quantity: int, start: date) -> None:
    day = start + timedelta(days=offset)
    try:
        with UnitOfWork(ledger.engine, clock=lambda: datetime(2026, 1, 2, tzinfo=UTC)) as uow:
            gate.change_quantity(uow, sub, quantity, day)
            uow.commit()
    except LedgerError:
        pass        # e.g. a change on or after the end date: refused, nothing written


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bcd=st.sampled_from([1, 15, 28, 31]), freq=st.sampled_from(["monthly", "annual"]),
       start_off=st.integers(0, 40), quantity=st.integers(1, 9), recorded=events)
def test_invoiced_recurring_amounts_equal_the_integral_of_the_history(
        ledger, bcd, freq, start_off, quantity, recorded) -> None:
    acc = ledger.account(bcd=bcd)
    start = BASE + timedelta(days=start_off)
    sub = ledger.subscribe(acc, ledger.product(str(PRICE)), quantity, start, frequency=freq)
    for k, run in enumerate(RUNS):
        for when, offset, q in recorded:
            if when == k:
                _record(ledger, sub, offset, q, start)
        ledger.run(run)
        assert ledger.run(run).invoices_created == 0
    expected, billed, end, _ = ledger.recurring_integral(sub, bcd, PRICE)
    assert end is None or billed <= end
    with ledger.uow() as uow:
        amounts = uow.conn.execute(select(invoice_lines.c.amount_minor).join(
            invoices, invoices.c.id == invoice_lines.c.invoice_id).where(
            invoice_lines.c.subscription_id == sub,
            invoice_lines.c.kind.in_(("recurring", "proration")))).scalars().all()
    charged = Decimal(sum(amounts)) / 100
    assert abs(charged - expected) <= Decimal(len(amounts)) / 200, (charged, expected, amounts)
