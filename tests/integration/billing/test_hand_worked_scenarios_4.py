"""Billing scenarios worked by hand from docs/BILLING.md, fourth part: metered usage against an
expiring grant, cancelling by quantity 0, bill cycle day 31 in a 30-day month, payment terms
changed after a document, and a memo's unapplied balance turned back into credits. SQLite and
PostgreSQL (``ledger`` runs on the ``engine`` fixture)."""
from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select

from billing_core.adapters.tables import credit_grants, credit_memos
from billing_core.service import gate
from billing_core.service.accounts import update_terms
from billing_core.service.credits import convert_memo_to_credits
from billing_core.service.memos import (
    activate_debit_memo,
    apply_credit_memo,
    create_credit_memo,
    create_debit_memo,
)
from billing_core.service.orders import change_quantity
from billing_core.service.usage import import_usage
from billing_core.service.usage_ingest import ingest_events
from billing_core.service.usage_metrics import set_metric


def _grants(ledger, acc: int, *grants: tuple[str, int, date | None]) -> None:
    with ledger.uow() as uow:
        for name, amount, expires in grants:
            uow.conn.execute(credit_grants.insert().values(
                account_id=acc, currency="USD", kind="granted", amount_minor=amount,
                remaining_minor=amount, expires_on=expires, source="test", reason=name,
                created_at=datetime(2026, 1, 1, tzinfo=UTC)))
        uow.commit()


def _left(ledger, acc: int) -> dict[str, int]:
    with ledger.uow() as uow:
        return dict(uow.conn.execute(select(credit_grants.c.reason,
                                            credit_grants.c.remaining_minor)
                                     .where(credit_grants.c.account_id == acc)).all())


def test_metered_line_counts_as_dated_on_its_periods_last_day_for_grants(ledger) -> None:
    """'Metered usage': prepaid credits draw on metered lines like on any usage, 'a line counts
    as dated on its period's last day'; rule 7: a grant pays only for usage dated on or before
    its expiry. Metric sum at 0.10, 100 units on 10 Mar 2026: 10.00, dated 31 Mar for credits.
    Grant A 50.00 expiring 15 Mar pays nothing of it; B 30.00 (no expiry) pays 10.00.
    Invoice: 10.00 - 10.00 = 0; left A 50.00, B 20.00."""
    acc = ledger.account(bcd=1)
    pid = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        set_metric(uow, "req", aggregation="sum", product=pid)
        uow.commit()
    _grants(ledger, acc, ("A", 5000, date(2026, 3, 15)), ("B", 3000, None))
    with ledger.uow() as uow:
        ingest_events(uow, [{"event_id": "r1", "account": str(acc), "metric": "req",
                             "timestamp": "2026-03-10T10:00:00Z", "value": "100"}],
                      source="test")
        uow.commit()
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(ledger.amounts(inv)) == [("credit_draw", -1000), ("usage", 1000)]
    assert _left(ledger, acc) == {"A": 5000, "B": 2000}


def test_quantity_zero_from_a_date_ends_the_subscription(ledger) -> None:
    """'Cancellations': finance cancels by quantity 0 from a date. BCD 1, 3 x 10.00 and
    1 x 40.00 from 1 Apr 2026 (1 Apr: 70.00). Seats to 0 from 11 Apr: [11 Apr, 1 May) = 20 of
    30 days: -3 x 10.00 x 20/30 = -20.00. 1 May: -20.00 + 40.00 = 20.00; 1 Jun: 40.00 only."""
    acc = ledger.account(bcd=1)
    seat = ledger.subscribe(acc, ledger.product("10.00"), 3, date(2026, 4, 1))
    ledger.subscribe(acc, ledger.product("40.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        gate.change_quantity(uow, seat, 0, date(2026, 4, 11))   # the CLI's and API's path
        uow.commit()
    ledger.run(date(2026, 5, 1))
    ledger.run(date(2026, 6, 1))
    apr, may, jun = ledger.invoices(acc)
    assert apr["total_minor"] == 7000
    assert sorted(a for _, a in ledger.amounts(may)) == [-2000, 4000]
    assert may["total_minor"] == 2000
    assert ledger.amounts(jun) == [("recurring", 4000)]


def test_bcd_31_in_a_30_day_month(ledger) -> None:
    """Rule 1: BCD 31 falls on 30 Apr 2026; [31 Mar, 30 Apr) has 30 days. 2 x 45.00 from
    15 Apr: [15 Apr, 30 Apr) = 15 of 30 days: 90.00 x 15/30 = 45.00; the 30 Apr invoice
    (period [30 Apr, 31 May), 31 days) adds 90.00: 135.00."""
    acc = ledger.account(bcd=31)
    ledger.subscribe(acc, ledger.product("45.00"), 2, date(2026, 4, 15))
    ledger.run(date(2026, 4, 30))
    [inv] = ledger.invoices(acc)
    assert (inv["period_start"], inv["period_end"]) == (date(2026, 4, 30), date(2026, 5, 31))
    assert ledger.amounts(inv) == [("proration", 4500), ("recurring", 9000)]


def test_payment_terms_apply_to_documents_issued_from_then_on(ledger) -> None:
    """'accounts update ... --terms N': payment terms for invoices and debit memos issued from
    then on. Terms 30: debit memo dated 2 Mar 2026 due 1 Apr. Terms become 10: a debit memo
    dated 5 Mar is due 15 Mar; the first keeps 1 Apr."""
    acc = ledger.account(bcd=1, terms=30)
    with ledger.uow() as uow:
        first = activate_debit_memo(uow, create_debit_memo(
            uow, acc, "10.00", "fee", issue_date=date(2026, 3, 2)))
        uow.commit()
    with ledger.uow() as uow:
        update_terms(uow, acc, payment_terms_days=10)
        second = activate_debit_memo(uow, create_debit_memo(
            uow, acc, "12.34", "fee", issue_date=date(2026, 3, 5)))
        uow.commit()
    assert (first["due_date"], first["amount_minor"]) == (date(2026, 4, 1), 1000)
    assert (second["due_date"], second["amount_minor"]) == (date(2026, 3, 15), 1234)


def test_memo_unapplied_balance_back_to_credits_pays_usage(ledger) -> None:
    """'Documents': a memo's unapplied balance can go back into the pool; rule 7: the pool pays
    usage only. Invoice 1 Apr: 25.00 recurring. Memo 40.00 applies 25.00 to it; the 15.00
    left goes to the pool. May: 25.00 recurring + 120 units at 0.10 = 12.00 usage (April):
    draw -12.00, total 25.00; 3.00 left in the pool."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("25.00"), 1, date(2026, 4, 1))
    usage = ledger.product("0.10", kind="usage")
    ledger.run(date(2026, 4, 1))
    [apr] = ledger.invoices(acc)
    with ledger.uow() as uow:
        memo = create_credit_memo(uow, acc, "40.00", "goodwill", activate=True)
        apply_credit_memo(uow, memo, [{"target": apr["number"], "amount": "25.00"}])
        convert_memo_to_credits(uow, memo)
        uow.commit()
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": "p1", "account": str(acc), "product": str(usage),
                            "quantity": "120", "occurred_at": "2026-04-20T00:00:00Z"}])
        uow.commit()
    ledger.run(date(2026, 5, 1))
    _apr, may = ledger.invoices(acc)
    assert sorted(ledger.amounts(may)) == [("credit_draw", -1200), ("recurring", 2500),
                                           ("usage", 1200)]
    assert may["total_minor"] == 2500
    with ledger.uow() as uow:
        row = uow.conn.execute(select(credit_memos.c.applied_minor, credit_memos.c.status)
                               .where(credit_memos.c.id == memo)).one()
        left = uow.conn.execute(select(credit_grants.c.remaining_minor)
                                .where(credit_grants.c.account_id == acc)).scalar()
    assert (row.applied_minor, row.status) == (4000, "applied")
    assert left == 300


def test_annual_change_before_the_first_bill_is_part_of_the_billed_range(ledger) -> None:
    """'Quantity history': a change dated in a range not yet billed is part of that range.
    1 x 1,200.00 a year from 10 Mar 2026 (BCD 1), 2 from 20 Mar, recorded before the 1 Apr
    run. The year [10 Mar 2026, 10 Mar 2027) has 365 days:
      [10 Mar, 20 Mar) 10 days at 1: 1,200.00 x 10/365 = 32.8767 -> 32.88
      [20 Mar, 10 Mar 2027) 355 days at 2: 2,400.00 x 355/365 = 2334.2466 -> 2,334.25
    1 Apr 2026: 2,367.13 (whichever lines carry it)."""
    acc = ledger.account(bcd=1)
    p = ledger.product("1200.00", period="year")
    sub = ledger.subscribe(acc, p, 1, date(2026, 3, 10), frequency="annual")
    with ledger.uow() as uow:
        change_quantity(uow, sub, 2, date(2026, 3, 20))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(inv)) == [3288, 233425]
    assert inv["total_minor"] == 236713


def test_expiring_grant_across_two_usage_lines_of_two_price_rows(ledger) -> None:
    """Rules 6, 7. Usage at 0.10 until 15 Mar 2026, 0.20 from 16 Mar (per unit): 100 units on
    10 Mar (line 1: 10.00), 100 on 18 Mar and 100 on 25 Mar (line 2: 200 x 0.20 = 40.00).
    Grant A 100.00 expiring 20 Mar: usage dated up to 20 Mar costs 10.00 x 100/100 +
    40.00 x 100/200 = 10.00 + 20.00 = 30.00; A takes 30.00. Grant B 15.00 (no expiry):
    min(15.00, 50.00 - 30.00) = 15.00. Draw -45.00, total 5.00; left A 70.00, B 0."""
    acc = ledger.account(bcd=1)
    pid = ledger.product("0.10", kind="usage")
    ledger.price(pid, "0.20", date(2026, 3, 16))
    _grants(ledger, acc, ("A", 10000, date(2026, 3, 20)), ("B", 1500, None))
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": f"x{i}", "account": str(acc), "product": str(pid),
                            "quantity": "100", "occurred_at": f"2026-03-{d}T00:00:00Z"}
                           for i, d in enumerate((10, 18, 25))])
        uow.commit()
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(ledger.amounts(inv)) == [("credit_draw", -4500), ("usage", 1000),
                                           ("usage", 4000)]
    assert inv["total_minor"] == 500
    assert _left(ledger, acc) == {"A": 7000, "B": 0}


def test_bill_cycle_day_15_to_1_bills_each_usage_event_once(ledger) -> None:
    """'A new bill cycle day aligns by proration' ('1 March bills February's usage only ...
    No day and no usage event is billed twice'). BCD 15, usage at 1.00 a unit: 5 units on
    10 Feb, 7 on 20 Feb, 11 on 5 Mar, 13 on 20 Mar 2026. 15 Feb bills the 10 Feb units: 5.00.
    The day becomes 1. 1 Mar bills what is dated before 1 Mar and unbilled: 7.00. 1 Apr: the
    March units 11 + 13 = 24.00. Each unit once: 5 + 7 + 24 = 36.00."""
    acc = ledger.account(bcd=15)
    pid = ledger.product("1.00", kind="usage")
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": f"b{d}", "account": str(acc), "product": str(pid),
                            "quantity": q, "occurred_at": f"2026-{d}T12:00:00Z"}
                           for d, q in (("02-10", "5"), ("02-20", "7"), ("03-05", "11"),
                                        ("03-20", "13"))])
        uow.commit()
    ledger.run(date(2026, 2, 15))
    with ledger.uow() as uow:
        update_terms(uow, acc, bill_cycle_day=1)
        uow.commit()
    ledger.run(date(2026, 3, 1))
    ledger.run(date(2026, 4, 1))
    assert [i["total_minor"] for i in ledger.invoices(acc)] == [500, 700, 2400]


def test_annual_with_an_end_date_inside_its_first_year(ledger) -> None:
    """Rules 2, 4 and 'Billing stops at the end date'. 1 x 1,200.00 a year from 10 Mar 2026
    ending 10 Sep 2026 (set on the order), BCD 1. The 1 Apr invoice bills [10 Mar, 10 Sep) =
    22+30+31+30+31+31+9 = 184 of 365 days: 1,200.00 x 184/365 = 604.9315 -> 604.93.
    Nothing later (1 Oct)."""
    acc = ledger.account(bcd=1)
    p = ledger.product("1200.00", period="year")
    ledger.subscribe(acc, p, 1, date(2026, 3, 10), frequency="annual", end=date(2026, 9, 10))
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 10, 1))
    [inv] = ledger.invoices(acc)
    assert [a for _, a in ledger.amounts(inv)] == [60493]


def test_start_and_end_inside_one_unbilled_month(ledger) -> None:
    """Rules 4, 5: 3 x 9.00 from 10 Apr to 20 Apr 2026 (end exclusive), BCD 1: [10 Apr,
    20 Apr) = 10 of 30 days: 27.00 x 10/30 = 9.00, on the 1 May invoice; nothing after."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("9.00"), 3, date(2026, 4, 10), end=date(2026, 4, 20))
    ledger.run(date(2026, 5, 1))
    ledger.run(date(2026, 6, 1))
    [inv] = ledger.invoices(acc)
    assert [a for _, a in ledger.amounts(inv)] == [900]


def test_one_time_charge_in_three_decimal_currency(ledger) -> None:
    """Rule 3 and minor units: a one-time 3.333 BHD x 3 = 9.999 BHD = 9999 fils on the first
    invoice after the order activates (order 15 Mar 2026, invoice 1 Apr)."""
    acc = ledger.account(currency="BHD", bcd=1)
    setup = ledger.product("3.333", currency="BHD", kind="one_time")
    ledger.charge(acc, setup, 3, date(2026, 3, 15))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("one_time", 9999)]
