"""More billing scenarios worked by hand from docs/BILLING.md (see
test_hand_worked_scenarios.py): annual cancellations and leap years, catch-up across billed
periods, quantity history, bill cycle day changes, tax-rate changes, tax-inclusive yen,
prepaid credits and tiered late usage. On SQLite and PostgreSQL (``ledger`` runs on the
``engine`` fixture)."""
from __future__ import annotations

from datetime import UTC, date, datetime

from hand_worked import LADDER, ingest, tax_rate, usage_row
from sqlalchemy import select

from billing_core.adapters.tables import credit_grants, credit_memos
from billing_core.service.accounts import update_terms
from billing_core.service.credits import grant_credits
from billing_core.service.orders import change_quantity
from billing_core.service.pricing import set_price
from billing_core.service.subscriptions import end_subscription
from billing_core.service.usage_metrics import set_metric


def _memos(ledger, acc: int) -> list[tuple[int, str, str]]:
    with ledger.uow() as uow:
        return [tuple(r) for r in uow.conn.execute(
            select(credit_memos.c.amount_minor, credit_memos.c.status, credit_memos.c.origin)
            .where(credit_memos.c.account_id == acc).order_by(credit_memos.c.id))]


def test_annual_cancellation_mid_term_credits_the_unused_days_of_365(ledger) -> None:
    """Rule 2, 'Cancellations'. 1,200.00 a year from 10 Mar 2026 (no term), BCD 1: 1 Apr 2026
    bills the year [10 Mar 2026, 10 Mar 2027) whole, 1,200.00. Ended 10 Sep 2026: the
    billed days [10 Sep 2026, 10 Mar 2027) = 30+31+30+31+31+28 = 181 of 365 credited:
      -1,200.00 x 181/365 = -217200/365 = -595.0685 -> -595.07
    on the next invoice (1 Oct 2026); nothing else to bill -> invoice 0 and an active credit
    memo of 595.07 (invoice_overflow)."""
    acc = ledger.account(bcd=1)
    p = ledger.product("1200.00", period="year")
    sub = ledger.subscribe(acc, p, 1, date(2026, 3, 10), frequency="annual")
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 9, 10))
        uow.commit()
    ledger.run(date(2026, 10, 1))
    first, second = ledger.invoices(acc)
    assert first["total_minor"] == 120000
    assert [a for k, a in ledger.amounts(second) if k != "credit_memo"] == [-59507]
    assert second["total_minor"] == 0
    assert _memos(ledger, acc) == [(59507, "active", "invoice_overflow")]


def test_annual_decrease_inside_a_leap_year_term_uses_366_days(ledger) -> None:
    """Rules 2, 4. 2 x 1,200.00 a year from 1 Mar 2027, BCD 1: the year [1 Mar 2027,
    1 Mar 2028) has 366 days (29 Feb 2028). 1 Mar 2027 bills 2,400.00. 1 seat from
    1 Sep 2027: -1 over [1 Sep 2027, 1 Mar 2028) = 30+31+30+31+31+29 = 182 days:
      -1 x 1,200.00 x 182/366 = -218400/366 = -596.7213 -> -596.72
    on the 1 Oct 2027 invoice, which has nothing else: 0 and a credit memo of 596.72."""
    acc = ledger.account(bcd=1)
    p = ledger.product("1200.00", period="year")
    sub = ledger.subscribe(acc, p, 2, date(2027, 3, 1), frequency="annual")
    ledger.run(date(2027, 3, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 1, date(2027, 9, 1))
        uow.commit()
    ledger.run(date(2027, 10, 1))
    first, second = ledger.invoices(acc)
    assert first["total_minor"] == 240000
    assert [a for k, a in ledger.amounts(second) if k != "credit_memo"] == [-59672]
    assert _memos(ledger, acc) == [(59672, "active", "invoice_overflow")]


def test_catch_up_across_two_billed_periods_is_cut_at_the_boundary(ledger) -> None:
    """Rules 4, 5. BCD 1, 2 x 10.00 from 1 Mar 2026; 1 Mar and 1 Apr billed (20.00 each).
    Then 5 seats from 15 Mar: +3 over [15 Mar, 1 May), cut at 1 Apr:
      [15 Mar, 1 Apr) 17 of 31 days: 3 x 10.00 x 17/31 = 510/31 = 16.4516 -> 16.45
      [1 Apr, 1 May) 30 of 30 days: 3 x 10.00 = 30.00
    1 May: 16.45 + 30.00 + May 5 x 10.00 = 50.00 -> 96.45."""
    acc = ledger.account(bcd=1)
    p = ledger.product("10.00")
    sub = ledger.subscribe(acc, p, 2, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 5, date(2026, 3, 15))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    mar, apr, may = ledger.invoices(acc)
    assert (mar["total_minor"], apr["total_minor"]) == (2000, 2000)
    assert sum(a for k, a in ledger.amounts(may) if k == "proration") == 4645
    assert sorted(a for _, a in ledger.amounts(may)) == [1645, 3000, 5000]
    assert may["total_minor"] == 9645


def test_quantity_history_docs_example_recorded_out_of_order(ledger) -> None:
    """'Quantity history' (the docs' example). 20.00 a seat, BCD 1, 5 seats from 1 Jan 2026,
    January billed (100.00). 8 seats from 1 Mar recorded first, then 3 seats from 20 Jan:
    1 Feb credits (3 - 5) x 20.00 x 12/31 = -480/31 = -15.4839 -> -15.48 and bills February
    at 3 seats, 60.00 (total 44.52); 1 Mar bills 8 x 20.00 = 160.00."""
    acc = ledger.account(bcd=1)
    p = ledger.product("20.00")
    sub = ledger.subscribe(acc, p, 5, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 8, date(2026, 3, 1))
        uow.commit()
    with ledger.uow() as uow:
        change_quantity(uow, sub, 3, date(2026, 1, 20))
        uow.commit()
    ledger.run(date(2026, 2, 1))
    ledger.run(date(2026, 3, 1))
    jan, feb, mar = ledger.invoices(acc)
    assert jan["total_minor"] == 10000
    assert sorted(ledger.amounts(feb)) == [("proration", -1548), ("recurring", 6000)]
    assert feb["total_minor"] == 4452
    assert ledger.amounts(mar) == [("recurring", 16000)]


def test_cancel_after_an_increase_credits_at_the_quantity_billed(ledger) -> None:
    """'Cancellations': days billed after the end are credited at the quantities billed on
    them. BCD 1, 2 x 15.00 from 1 Apr 2026 (1 Apr: 30.00). 4 seats from 11 Apr:
    1 May: +2 x 15.00 x 20/30 = 20.00 and May 4 x 15.00 = 60.00 -> 80.00.
    Ended 16 May: [16 May, 1 Jun) = 16 of 31 days at 4 seats:
      -4 x 15.00 x 16/31 = -960/31 = -30.9677 -> -30.97
    1 Jun: nothing else -> 0 and a credit memo of 30.97."""
    acc = ledger.account(bcd=1)
    p = ledger.product("15.00")
    sub = ledger.subscribe(acc, p, 2, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 4, date(2026, 4, 11))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 5, 16))
        uow.commit()
    ledger.run(date(2026, 6, 1))
    apr, may, jun = ledger.invoices(acc)
    assert (apr["total_minor"], may["total_minor"]) == (3000, 8000)
    assert [a for k, a in ledger.amounts(jun) if k != "credit_memo"] == [-3097]
    assert jun["total_minor"] == 0
    assert _memos(ledger, acc) == [(3097, "active", "invoice_overflow")]


def test_bill_cycle_day_1_to_15_docs_example(ledger) -> None:
    """'A new bill cycle day aligns by proration' (the docs' example). 5 x 20.00 from 1 Feb
    2026 at BCD 1, billed through 1 Mar; the day becomes 15. The 15 Mar invoice bills
    [1 Mar, 15 Mar), 14 of the 28 days of [15 Feb, 15 Mar): 100.00 x 14/28 = 50.00, then
    [15 Mar, 15 Apr) 100.00. Total 150.00."""
    acc = ledger.account(bcd=1)
    p = ledger.product("20.00")
    ledger.subscribe(acc, p, 5, date(2026, 2, 1))
    ledger.run(date(2026, 2, 1))
    with ledger.uow() as uow:
        update_terms(uow, acc, bill_cycle_day=15)
        uow.commit()
    ledger.run(date(2026, 3, 15))
    feb, mar = ledger.invoices(acc)
    assert feb["total_minor"] == 10000
    assert (mar["period_start"], mar["period_end"]) == (date(2026, 3, 15), date(2026, 4, 15))
    assert sorted(a for _, a in ledger.amounts(mar)) == [5000, 10000]
    assert mar["total_minor"] == 15000


def test_tax_rate_change_is_looked_up_for_the_invoice_period_start(ledger) -> None:
    """'Missing tax rates': the rate is looked up for the period start. DE 19 % until
    31 Mar 2026, 20 % from 1 Apr. 3 x 10.00 from 10 Mar: the 1 Apr invoice (period
    [1 Apr, 1 May)) bills 21.29 (22/31 of March) + 30.00 = 51.29 at the 1 Apr rate, 20 %:
    round(51.29 x 0.20) = round(10.258) = 10.26. Total 61.55."""
    tax_rate(ledger, "DE", "0.19")
    tax_rate(ledger, "DE", "0.20", since=date(2026, 4, 1))
    acc = ledger.account(currency="EUR", bcd=1, country="DE")
    p = ledger.product("10.00", currency="EUR")
    ledger.subscribe(acc, p, 3, date(2026, 3, 10))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("proration", 2129), ("recurring", 3000)]
    assert (inv["tax_minor"], inv["total_minor"]) == (1026, 6155)


def test_tax_inclusive_yen(ledger) -> None:
    """Rule 10, tax-inclusive, 0 minor units. 1,100 yen including JP 10 %, from 10 Mar 2026,
    BCD 1: 1100 x 22/31 = 780.65 -> 781; April 1,100; gross 1,881.
    tax = round(1881 x 0.10 / 1.10) = round(171.0) = 171, base 1,710, total 1,881."""
    tax_rate(ledger, "JP", "0.10")
    acc = ledger.account(currency="JPY", bcd=1, country="JP")
    p = ledger.product("1100", currency="JPY")
    ledger.subscribe(acc, p, 1, date(2026, 3, 10))
    ledger.run(date(2026, 4, 1), tax_inclusive=True)
    [inv] = ledger.invoices(acc)
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (1710, 171, 1881)
    assert sum(ln["tax_minor"] for ln in inv["lines"]) == 171


def test_prepaid_credit_pays_usage_only_then_tax_on_the_rest(ledger) -> None:
    """Rules 7, 10. AU 10 %. 1 x 50.00 recurring from 1 Mar and 200 units of usage at 0.10 in
    March (20.00); grant 100.00. The 1 Apr invoice: April 50.00, usage 20.00, draw -20.00
    (credits pay usage only). Base 50.00, tax 5.00, total 55.00; grant left 80.00."""
    tax_rate(ledger, "AU", "0.10")
    acc = ledger.account(bcd=1, country="AU")
    ledger.subscribe(acc, ledger.product("50.00"), 1, date(2026, 4, 1))
    usage = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        grant_credits(uow, acc, "100.00", kind="purchased", reason="pack")
        uow.commit()
    usage_row(ledger, acc, usage, "200", "2026-03-12T08:00:00Z", "u1")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(ledger.amounts(inv)) == [("credit_draw", -2000), ("recurring", 5000),
                                           ("usage", 2000)]
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (5000, 500, 5500)
    with ledger.uow() as uow:
        assert uow.conn.execute(select(credit_grants.c.remaining_minor)).scalar() == 8000


def test_expiring_grant_share_is_rounded_per_line(ledger) -> None:
    """Rule 7. Usage at 0.013: 333 units on 10 Mar 2026, 667 on 20 Mar: one line
    1000 x 0.013 = 13.00. Grant A 50.00 expiring 15 Mar: usage up to its expiry costs
    13.00 x 333/1000 = 4.329 -> 4.33; A takes 4.33. Grant B 100.00 (no expiry):
    min(100.00, 13.00 - 4.33) = 8.67. Draw -13.00, total 0; left A 45.67, B 91.33."""
    acc = ledger.account(bcd=1)
    pid = ledger.product("0.013", kind="usage")
    with ledger.uow() as uow:
        for name, amount, expires in (("A", 5000, date(2026, 3, 15)), ("B", 10000, None)):
            uow.conn.execute(credit_grants.insert().values(
                account_id=acc, currency="USD", kind="granted", amount_minor=amount,
                remaining_minor=amount, expires_on=expires, source="test", reason=name,
                created_at=datetime(2026, 1, 1, tzinfo=UTC)))
        uow.commit()
    usage_row(ledger, acc, pid, "333", "2026-03-10T09:00:00Z", "e1")
    usage_row(ledger, acc, pid, "667", "2026-03-20T09:00:00Z", "e2")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 1300), ("credit_draw", -1300)]
    with ledger.uow() as uow:
        left = dict(uow.conn.execute(select(credit_grants.c.reason,
                                            credit_grants.c.remaining_minor)).all())
    assert left == {"A": 4567, "B": 9133}


def test_late_metered_event_re_rates_the_graduated_ladder(ledger) -> None:
    """'Late and corrected events' with rule 6. Metric sum on LADDER (graduated). March:
    900 units -> 1 Apr bills 900 x 0.10 = 90.00. A late 200 dated 25 Mar: March now 1,100:
    rate(1100) = 1000 x 0.10 + 100 x 0.08 = 108.00; adjustment 108.00 - 90.00 = 18.00 on
    1 May (not 200 x 0.10 = 20.00, nor 200 x 0.08 = 16.00). No April usage."""
    acc = ledger.account(bcd=1)
    pid = ledger.product(None, kind="usage", model="graduated", tiers=LADDER)
    with ledger.uow() as uow:
        set_metric(uow, "gb", aggregation="sum", product=pid)
        uow.commit()

    metric = "gb"

    ingest(ledger, acc, metric, "g1", "2026-03-05T10:00:00Z", "900")
    ledger.run(date(2026, 4, 1))
    ingest(ledger, acc, metric, "g2", "2026-03-25T10:00:00Z", "200")
    ledger.run(date(2026, 5, 1))
    march, april = ledger.invoices(acc)
    assert [a for _, a in ledger.amounts(march)] == [9000]
    assert [a for _, a in ledger.amounts(april)] == [1800]


def test_annual_start_with_bcd_20_billed_whole_on_the_next_period(ledger) -> None:
    """Rule 2. BCD 20; 365.00 a year from 5 May 2026 and a monthly 9.30 from 5 May.
    20 May invoice (period [20 May, 20 Jun)): annual term [5 May 2026, 5 May 2027) whole
    365.00; monthly catch-up [5 May, 20 May) = 15 of the 30 days of [20 Apr, 20 May):
    9.30 x 15/30 = 4.65, and [20 May, 20 Jun) 9.30. Total 378.95."""
    acc = ledger.account(bcd=20)
    annual = ledger.product("365.00", period="year")
    monthly = ledger.product("9.30")
    ledger.subscribe(acc, annual, 1, date(2026, 5, 5), frequency="annual")
    ledger.subscribe(acc, monthly, 1, date(2026, 5, 5))
    ledger.run(date(2026, 5, 20))
    [inv] = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(inv)) == [465, 930, 36500]
    assert inv["total_minor"] == 37895


def test_late_imported_usage_row_re_rates_the_graduated_period_total(ledger) -> None:
    """Rule 6 ('Tiers apply to the usage period's total quantity T') and 'Metered usage' ('a
    CSV import is in effect a sum metric of its product'). `usage import` rows on LADDER,
    graduated. March: 900 units -> 1 Apr bills 90.00. A late row of 200 dated 25 Mar: March's
    T is now 1,100: rate(1100) = 100.00 + 100 x 0.08 = 108.00; 1 May bills 108.00 - 90.00 =
    18.00 for March, beside April's 50 units (5.00): 23.00."""
    acc = ledger.account(bcd=1)
    pid = ledger.product(None, kind="usage", model="graduated", tiers=LADDER)
    usage_row(ledger, acc, pid, "900", "2026-03-05T00:00:00Z", "a")
    ledger.run(date(2026, 4, 1))
    usage_row(ledger, acc, pid, "200", "2026-03-25T00:00:00Z", "b")
    usage_row(ledger, acc, pid, "50", "2026-04-05T00:00:00Z", "c")
    ledger.run(date(2026, 5, 1))
    march, april = ledger.invoices(acc)
    assert march["total_minor"] == 9000
    assert sorted(a for _, a in ledger.amounts(april)) == [500, 1800]
    assert april["total_minor"] == 2300


def test_late_imported_usage_row_re_rates_the_volume_period_total(ledger) -> None:
    """As above, volume: March 900 x 0.10 = 90.00 billed 1 Apr. The late 200 makes T = 1,100,
    every unit at 0.08: 88.00; 1 May adjusts March by 88.00 - 90.00 = -2.00 (no April
    usage, nothing else: the invoice goes below zero, 0 and a credit memo of 2.00)."""
    acc = ledger.account(bcd=1)
    pid = ledger.product(None, kind="usage", model="volume", tiers=LADDER)
    usage_row(ledger, acc, pid, "900", "2026-03-05T00:00:00Z", "a")
    ledger.run(date(2026, 4, 1))
    usage_row(ledger, acc, pid, "200", "2026-03-25T00:00:00Z", "b")
    ledger.run(date(2026, 5, 1))
    march, april = ledger.invoices(acc)
    assert march["total_minor"] == 9000
    assert [a for k, a in ledger.amounts(april) if k != "credit_memo"] == [-200]
    assert _memos(ledger, acc) == [(200, "active", "invoice_overflow")]


def _ladder_row(ledger, pid: int, since: date) -> None:
    with ledger.uow() as uow:
        set_price(uow, pid, "USD", since, None, tiers=LADDER)
        uow.commit()


def test_late_usage_across_two_price_rows_re_rates_the_period(ledger) -> None:
    """Rule 6 with late usage: the same ladder re-entered as a new price row on 16 March.
    March: 3,000 units on 5 March (first row) -> 1 Apr bills 1,000 x 0.10 + 2,000 x 0.08 =
    260.00. A late 4,500 on 20 March (second row): March's total is 7,500, graduated 100.00 +
    4,000 x 0.08 + 2,500 x 0.05 = 545.00, split between the rows by their units (rule 6):
    first row 545.00 x 3,000/7,500 = 218.00, second 327.00. 1 May: the first row 218.00 -
    260.00 billed = -42.00 (0 more units), the second 327.00; 285.00 in all = 545.00 -
    260.00."""
    acc = ledger.account(bcd=1)
    pid = ledger.product(None, kind="usage", model="graduated", tiers=LADDER)
    _ladder_row(ledger, pid, date(2026, 3, 16))
    usage_row(ledger, acc, pid, "3000", "2026-03-05T00:00:00Z", "a")
    ledger.run(date(2026, 4, 1))
    usage_row(ledger, acc, pid, "4500", "2026-03-20T00:00:00Z", "b")
    ledger.run(date(2026, 5, 1))
    march, may = ledger.invoices(acc)
    assert march["total_minor"] == 26000
    assert sorted(a for _, a in ledger.amounts(may)) == [-4200, 32700]
    assert may["total_minor"] == 28500


def test_late_usage_moving_a_volume_tier_re_rates_the_billed_row_too(ledger) -> None:
    """Volume, the same two rows: March's 3,000 (first row) billed at 0.08 = 240.00. The late
    4,500 (second row) makes 7,500, every unit at 0.05: 375.00, split by units 150.00 +
    225.00. 1 May: the first row now costs 150.00 where 240.00 was billed, -90.00 (a line of
    0 more units), and the second row 225.00: 135.00 in all, 375.00 - 240.00."""
    acc = ledger.account(bcd=1)
    pid = ledger.product(None, kind="usage", model="volume", tiers=LADDER)
    _ladder_row(ledger, pid, date(2026, 3, 16))
    usage_row(ledger, acc, pid, "3000", "2026-03-05T00:00:00Z", "a")
    ledger.run(date(2026, 4, 1))
    usage_row(ledger, acc, pid, "4500", "2026-03-20T00:00:00Z", "b")
    ledger.run(date(2026, 5, 1))
    march, may = ledger.invoices(acc)
    assert march["total_minor"] == 24000
    assert sorted(a for _, a in ledger.amounts(may)) == [-9000, 22500]
    assert may["total_minor"] == 13500


def test_usage_of_the_period_just_ended_reads_no_billed_usage(ledger) -> None:
    """Not late: April's usage on 1 May is rated alone (90.00 for 900), whatever March billed
    (the re-rating looks only at periods before the one the run bills)."""
    acc = ledger.account(bcd=1)
    pid = ledger.product(None, kind="usage", model="graduated", tiers=LADDER)
    usage_row(ledger, acc, pid, "3000", "2026-03-05T00:00:00Z", "a")
    ledger.run(date(2026, 4, 1))
    usage_row(ledger, acc, pid, "900", "2026-04-05T00:00:00Z", "b")
    ledger.run(date(2026, 5, 1))
    march, may = ledger.invoices(acc)
    assert [a for _, a in ledger.amounts(may)] == [9000]
