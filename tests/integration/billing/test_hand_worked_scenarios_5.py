"""Billing scenarios worked by hand from docs/BILLING.md, fifth part: an end date before
changes already billed, and two changes on one day. SQLite and PostgreSQL (``ledger`` runs on
the ``engine`` fixture)."""
from __future__ import annotations

from datetime import date

from sqlalchemy import select

from billing_core.adapters.tables import credit_memos
from billing_core.service.orders import change_quantity
from billing_core.service.subscriptions import end_subscription


def test_end_before_a_billed_increase_credits_each_quantity_as_billed(ledger) -> None:
    """'Cancellations': days billed after the end are credited at the quantities billed on
    them, by rule 4 (a range cut at periods and quantity changes, rounded once per line).
    BCD 1, 2 x 10.00 from 1 Apr 2026 (1 Apr: 20.00). 5 from 20 Apr: 1 May bills
    +3 x 10.00 x 11/30 = 11.00 and May 5 x 10.00 = 50.00 (61.00). Then the end is set to
    15 Apr. 1 Jun credits:
      [15 Apr, 20 Apr) at 2: -2 x 10.00 x 5/30 = -3.3333 -> -3.33
      [20 Apr, 1 May) at 5: -5 x 10.00 x 11/30 = -18.3333 -> -18.33
      [1 May, 1 Jun) at 5: -50.00
    -71.66 (not a single -71.67: the range is cut at the quantity change). Nothing else:
    invoice 0, a credit memo of 71.66. Over everything: 20.00 + 61.00 - 71.66 = 9.34, about
    [1 Apr, 15 Apr) at 2 = 20.00 x 14/30 = 9.3333."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("10.00"), 2, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 5, date(2026, 4, 20))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 4, 15))
        uow.commit()
    ledger.run(date(2026, 6, 1))
    apr, may, jun = ledger.invoices(acc)
    assert (apr["total_minor"], may["total_minor"]) == (2000, 6100)
    credits = [a for k, a in ledger.amounts(jun) if k != "credit_memo"]
    assert sum(credits) == -7166
    assert jun["total_minor"] == 0
    with ledger.uow() as uow:
        assert uow.conn.execute(select(credit_memos.c.amount_minor)).scalar() == 7166


def test_two_changes_on_one_day_the_later_recorded_wins(ledger) -> None:
    """'Quantity history': the later-recorded change wins on the same day. BCD 1, 4 x 6.00
    from 1 Apr 2026 (1 Apr: 24.00). Recorded: 9 from 16 Apr, then 7 from 16 Apr. 1 May:
    +3 x 6.00 x 15/30 = 9.00 and May 7 x 6.00 = 42.00 -> 51.00."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("6.00"), 4, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 9, date(2026, 4, 16))
        uow.commit()
    with ledger.uow() as uow:
        change_quantity(uow, sub, 7, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    _apr, may = ledger.invoices(acc)
    assert sum(a for k, a in ledger.amounts(may) if k == "proration") == 900
    assert may["total_minor"] == 5100
