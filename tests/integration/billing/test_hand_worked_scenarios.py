"""Billing scenarios worked by hand from docs/BILLING.md, then run through the service
functions on SQLite and PostgreSQL (the ``engine`` fixture), compared to the minor unit.

Every figure in a docstring was worked out from the rule it cites before the test ran; the
code's output was never used to write an expected value. Rule numbers are BILLING.md's."""
from __future__ import annotations

from datetime import UTC, date, datetime

from hand_worked import LADDER, ingest, tax_rate, usage_row
from sqlalchemy import select

from billing_core.adapters.tables import credit_grants, credit_memos, debit_memos, invoices
from billing_core.service.accounts import update_terms
from billing_core.service.credits import grant_credits
from billing_core.service.memos import (
    activate_debit_memo,
    apply_credit_memo,
    create_credit_memo,
    create_debit_memo,
    credit_memo_view,
    unapply_credit_memo,
)
from billing_core.service.orders import change_quantity
from billing_core.service.payments import apply_payment, payment_view, record_payment
from billing_core.service.pricing import set_price
from billing_core.service.subscriptions import end_subscription
from billing_core.service.usage_metrics import set_metric


def _invoice(ledger, inv_id: int) -> dict:
    with ledger.uow() as uow:
        return dict(uow.conn.execute(select(invoices).where(invoices.c.id == inv_id))
                    .mappings().one())


# --- proration -------------------------------------------------------------------------------

def test_mid_period_start_bcd_15_in_a_28_day_february(ledger) -> None:
    """Rules 1, 4, 5. BCD 15: the period [15 Feb 2026, 15 Mar 2026) has 28 days (2026 is not
    a leap year). 5 seats at 12.00 from 20 Feb: [20 Feb, 15 Mar) = 9 + 14 = 23 days.
    15 Mar invoice: 5 x 12.00 x 23/28 = 1380/28 = 49.2857 -> 49.29 (proration),
    then [15 Mar, 15 Apr) in advance: 5 x 12.00 = 60.00. Total 109.29 (no tax location:
    the Ledger helper makes the account exempt)."""
    acc = ledger.account(bcd=15)
    p = ledger.product("12.00")
    ledger.subscribe(acc, p, 5, date(2026, 2, 20))
    ledger.run(date(2026, 3, 15))
    [inv] = ledger.invoices(acc)
    assert (inv["period_start"], inv["period_end"]) == (date(2026, 3, 15), date(2026, 4, 15))
    assert ledger.amounts(inv) == [("proration", 4929), ("recurring", 6000)]
    assert (inv["tax_minor"], inv["total_minor"]) == (0, 10929)


def test_increase_and_decrease_in_a_31_day_period_bcd_10(ledger) -> None:
    """Rules 4, 5 and 'Quantity history'. BCD 10: [10 Mar, 10 Apr) has 31 days.
    4 seats at 25.00 from 10 Mar; the 10 Mar invoice bills 4 x 25.00 = 100.00.
    7 seats from 25 Mar: +3 over [25 Mar, 10 Apr) = 7 + 9 = 16 days:
      3 x 25.00 x 16/31 = 1200/31 = 38.7097 -> 38.71
    2 seats from 5 Apr: 2 - 7 = -5 over [5 Apr, 10 Apr) = 5 days:
      -5 x 25.00 x 5/31 = -625/31 = -20.1613 -> -20.16
    The 10 Apr invoice: 38.71 - 20.16 + [10 Apr, 10 May) at 2 seats 50.00 = 68.55."""
    acc = ledger.account(bcd=10)
    p = ledger.product("25.00")
    sub = ledger.subscribe(acc, p, 4, date(2026, 3, 10))
    ledger.run(date(2026, 3, 10))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 7, date(2026, 3, 25))
        change_quantity(uow, sub, 2, date(2026, 4, 5))
        uow.commit()
    ledger.run(date(2026, 4, 10))
    first, second = ledger.invoices(acc)
    assert first["total_minor"] == 10000
    assert sorted(ledger.amounts(second)) == [("proration", -2016), ("proration", 3871),
                                              ("recurring", 5000)]
    assert second["total_minor"] == 6855


def test_annual_quantity_increase_prorated_over_the_365_day_year(ledger) -> None:
    """Rules 2, 4, 5. 1 x 1,200.00 a year from 10 Mar 2026, BCD 1: the term
    [10 Mar 2026, 10 Mar 2027) (365 days) is billed whole on 1 Apr 2026: 1,200.00.
    3 from 10 Sep 2026: +2 over [10 Sep 2026, 10 Mar 2027) = 30+31+30+31+31+28 = 181 days of
    the 365-day annual period containing 10 Sep:
      2 x 1,200.00 x 181/365 = 434400/365 = 1190.1370 -> 1,190.14
    on the next regular invoice, 1 Oct 2026 (nothing else recurs monthly)."""
    acc = ledger.account(bcd=1)
    p = ledger.product("1200.00", period="year")
    sub = ledger.subscribe(acc, p, 1, date(2026, 3, 10), frequency="annual")
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 3, date(2026, 9, 10))
        uow.commit()
    ledger.run(date(2026, 10, 1))
    first, second = ledger.invoices(acc)
    assert ledger.amounts(first) == [("recurring", 120000)]
    assert ledger.amounts(second) == [("proration", 119014)]
    assert second["total_minor"] == 119014


def test_bcd_31_mid_period_start_in_february(ledger) -> None:
    """Rule 1: BCD 31 falls on 28 Feb 2026, the period [31 Jan, 28 Feb) has 28 days.
    2 x 9.99 from 10 Feb: [10 Feb, 28 Feb) = 18 days: 2 x 9.99 x 18/28 = 359.64/28 =
    12.8443 -> 12.84; then [28 Feb, 31 Mar) in advance: 19.98. Total 32.82."""
    acc = ledger.account(bcd=31)
    p = ledger.product("9.99")
    ledger.subscribe(acc, p, 2, date(2026, 2, 10))
    ledger.run(date(2026, 2, 28))
    [inv] = ledger.invoices(acc)
    assert (inv["period_start"], inv["period_end"]) == (date(2026, 2, 28), date(2026, 3, 31))
    assert ledger.amounts(inv) == [("proration", 1284), ("recurring", 1998)]
    assert inv["total_minor"] == 3282


# --- cancellations, end dates, below zero ----------------------------------------------------

def test_cancellation_credits_unused_days_and_overflow_becomes_a_credit_memo(ledger) -> None:
    """'Cancellations and end dates', rule 8. BCD 1. 5 seats at 12.00 and 1 x 10.00 from
    1 Mar 2026; the 1 Mar invoice bills 60.00 + 10.00 = 70.00.
    The seats end on 12 Mar (exclusive): [12 Mar, 1 Apr) = 20 of March's 31 days credited:
      -5 x 12.00 x 20/31 = -1200/31 = -38.7097 -> -38.71
    1 Apr: -38.71 + 10.00 (April, the other subscription) = -28.71 < 0: the invoice is 0
    and an active credit memo of 28.71 (origin invoice_overflow) carries the rest.
    1 May: only 10.00 (nothing of the seats, credited once)."""
    acc = ledger.account(bcd=1)
    seat = ledger.product("12.00")
    other = ledger.product("10.00")
    sub = ledger.subscribe(acc, seat, 5, date(2026, 3, 1))
    ledger.subscribe(acc, other, 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 3, 12))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 5, 1))
    march, april, may = ledger.invoices(acc)
    assert march["total_minor"] == 7000
    assert sorted(a for _, a in ledger.amounts(april) if _ != "credit_memo") == [-3871, 1000]
    assert april["total_minor"] == 0
    with ledger.uow() as uow:
        memo = uow.conn.execute(select(credit_memos)).mappings().one()
    assert (memo["amount_minor"], memo["status"], memo["origin"]) == (
        2871, "active", "invoice_overflow")
    assert ledger.amounts(may) == [("recurring", 1000)]


def test_end_date_inside_the_first_period_bills_only_the_days_before_it(ledger) -> None:
    """'Billing stops at the end date' (exclusive). BCD 1, 1 x 10.00 from 1 Apr 2026 ending
    15 Apr: [1 Apr, 15 Apr) = 14 of April's 30 days: 10.00 x 14/30 = 4.6667 -> 4.67.
    1 May bills nothing more."""
    acc = ledger.account(bcd=1)
    p = ledger.product("10.00")
    ledger.subscribe(acc, p, 1, date(2026, 4, 1), end=date(2026, 4, 15))
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 5, 1))
    [inv] = ledger.invoices(acc)
    assert [a for _, a in ledger.amounts(inv)] == [467]
    assert inv["total_minor"] == 467


# --- tiers and price rows --------------------------------------------------------------------

def _two_rows(ledger, model: str) -> int:
    pid = ledger.product(None, kind="usage", model=model, tiers=LADDER)
    with ledger.uow() as uow:
        set_price(uow, pid, "USD", date(2026, 3, 16), None,
                  tiers=[("1000", "0.12"), ("5000", "0.09"), (None, "0.06")])
        uow.commit()
    return pid


def test_graduated_tiers_across_two_price_rows_with_different_ladders(ledger) -> None:
    """Rule 6. March 2026: 3,001 units on 10 Mar (row 1: <=1000 @0.10, <=5000 @0.08, above
    @0.05) and 4,499 on 20 Mar (row 2 from 16 Mar: 0.12 / 0.09 / 0.06). T = 7,500.
    rate(row1, 7500) = 1000 x 0.10 + 4000 x 0.08 + 2500 x 0.05 = 100 + 320 + 125 = 545.00
    rate(row2, 7500) = 1000 x 0.12 + 4000 x 0.09 + 2500 x 0.06 = 120 + 360 + 150 = 630.00
    row 1 share 545 x 3001/7500 = 218.0727; running 218.0727 -> 218.07 (line 1 218.07)
    row 2 share 630 x 4499/7500 = 377.9160; running 595.9887 -> 595.99, line 2 =
    595.99 - 218.07 = 377.92. Total 595.99."""
    acc = ledger.account(bcd=1)
    pid = _two_rows(ledger, "graduated")
    usage_row(ledger, acc, pid, "3001", "2026-03-10T12:00:00Z", "a")
    usage_row(ledger, acc, pid, "4499", "2026-03-20T12:00:00Z", "b")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 21807), ("usage", 37792)]
    assert inv["total_minor"] == 59599


def test_volume_tiers_across_two_price_rows(ledger) -> None:
    """Rule 6, volume: every unit at the tier T = 7,500 falls in (above 5,000).
    row 1: 7500 x 0.05 = 375.00, share x 3001/7500 = 150.05
    row 2: 7500 x 0.06 = 450.00, share x 4499/7500 = 269.94; running 150.05 + 269.94 = 419.99.
    Lines 150.05 + 269.94 = 419.99."""
    acc = ledger.account(bcd=1)
    pid = _two_rows(ledger, "volume")
    usage_row(ledger, acc, pid, "3001", "2026-03-10T12:00:00Z", "a")
    usage_row(ledger, acc, pid, "4499", "2026-03-20T12:00:00Z", "b")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 15005), ("usage", 26994)]
    assert inv["total_minor"] == 41999


def test_recurring_price_change_mid_period_in_catch_up_proration(ledger) -> None:
    """Rules 4, 5: a mid-period start cut at a price change. BCD 1, 30.00 until 14 Apr 2026,
    31.00 from 15 Apr. 2 seats from 6 Apr (after the 1 Apr run): [6 Apr, 15 Apr) = 9 days at
    30.00, [15 Apr, 1 May) = 16 days at 31.00, of April's 30:
      2 x 30.00 x 9/30 = 18.00 ; 2 x 31.00 x 16/30 = 992/30 = 33.0667 -> 33.07
    1 May: 18.00 + 33.07 + May 2 x 31.00 = 62.00 -> 113.07."""
    acc = ledger.account(bcd=1)
    p = ledger.product("30.00")
    ledger.price(p, "31.00", date(2026, 4, 15))
    ledger.run(date(2026, 4, 1))
    ledger.subscribe(acc, p, 2, date(2026, 4, 6))
    ledger.run(date(2026, 5, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(ledger.amounts(inv)) == [("proration", 1800), ("proration", 3307),
                                           ("recurring", 6200)]
    assert inv["total_minor"] == 11307


# --- tax -------------------------------------------------------------------------------------

def test_tax_is_rounded_once_per_rate_not_per_line(ledger) -> None:
    """Rule 10. Three lines of 1.05 at 10 %: per line 0.105 -> 0.11 each would be 0.33;
    the rule is per rate: base 3.15 x 0.10 = 0.315 -> 0.32. Line shares = running tax after
    minus before: round(0.105) = 0.11; round(0.21) - 0.11 = 0.10; round(0.315) - 0.21 = 0.11.
    Total 3.15 + 0.32 = 3.47."""
    tax_rate(ledger, "AU", "0.10")
    acc = ledger.account(bcd=1, country="AU")
    for _ in range(3):
        ledger.subscribe(acc, ledger.product("1.05"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (315, 32, 347)
    assert sum(ln["tax_minor"] for ln in inv["lines"]) == 32


def test_tax_on_base_after_prepaid_credit_exclusive_and_inclusive(ledger) -> None:
    """Rules 6, 7, 10 (the docs' own example). 7,500 units graduated on LADDER = 545.00, a
    155.00 grant (no expiry) drawn -> base 390.00 at 8.25 %.
    Exclusive: tax round(390.00 x 0.0825) = round(32.175) = 32.18; total 422.18.
    Inclusive: tax round(390.00 x 0.0825 / 1.0825) = round(29.7229) = 29.72, base 360.28,
    total 390.00."""
    tax_rate(ledger, "US", "0.0825", region="TX")
    out = {}
    for inclusive in (False, True):
        acc = ledger.account(bcd=1, country="US", region="TX")
        pid = ledger.product(None, kind="usage", model="graduated", tiers=LADDER)
        with ledger.uow() as uow:
            grant_credits(uow, acc, "155.00", kind="granted", reason="promo")
            uow.commit()
        usage_row(ledger, acc, pid, "7500", "2026-03-10T00:00:00Z", f"t{inclusive}")
        ledger.run(date(2026, 4, 1), tax_inclusive=inclusive)
        [inv] = ledger.invoices(acc)
        out[inclusive] = (ledger.amounts(inv), inv["subtotal_minor"], inv["tax_minor"],
                          inv["total_minor"])
    assert out[False] == ([("usage", 54500), ("credit_draw", -15500)], 39000, 3218, 42218)
    assert out[True][1:] == (36028, 2972, 39000)


def test_tax_exempt_account_in_a_taxed_country_pays_no_tax(ledger) -> None:
    """'Missing tax rates': the exemption bills without tax whatever the country. DE at 19 %;
    2 x 50.00 from 1 Apr: 100.00, tax 0, total 100.00 (a taxable twin: 19.00, 119.00)."""
    tax_rate(ledger, "DE", "0.19")
    exempt = ledger.account(currency="EUR", bcd=1, country="DE")
    taxable = ledger.account(currency="EUR", bcd=1, country="DE")
    with ledger.uow() as uow:
        update_terms(uow, exempt, tax_exempt=True)
        uow.commit()
    p = ledger.product("50.00", currency="EUR")
    ledger.subscribe(exempt, p, 2, date(2026, 4, 1))
    ledger.subscribe(taxable, p, 2, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [e] = ledger.invoices(exempt)
    [t] = ledger.invoices(taxable)
    assert (e["subtotal_minor"], e["tax_minor"], e["total_minor"]) == (10000, 0, 10000)
    assert (t["tax_minor"], t["total_minor"]) == (1900, 11900)


# --- currencies ------------------------------------------------------------------------------

def test_jpy_zero_decimals_proration_in_february_with_tax(ledger) -> None:
    """JPY has 0 minor units. BCD 1, 3 x 1,980 yen from 11 Feb 2026: [11 Feb, 1 Mar) = 18 of
    28 days: 3 x 1980 x 18/28 = 106920/28 = 3818.571 -> 3,819 yen; March 5,940.
    JP 10 % per rate: (3819 + 5940) x 0.10 = 975.9 -> 976. Total 9,759 + 976 = 10,735."""
    tax_rate(ledger, "JP", "0.10")
    acc = ledger.account(currency="JPY", bcd=1, country="JP")
    p = ledger.product("1980", currency="JPY")
    ledger.subscribe(acc, p, 3, date(2026, 2, 11))
    ledger.run(date(2026, 3, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("proration", 3819), ("recurring", 5940)]
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (9759, 976, 10735)


def test_kwd_three_decimals_proration_with_tax(ledger) -> None:
    """KWD has 3 minor units. BCD 1, 2 x 7.125 KWD from 10 Mar 2026: [10 Mar, 1 Apr) = 22 of
    31 days: 14.250 x 22/31 = 313.5/31 = 10.11290 -> 10.113; April 14.250.
    KW at 5 %: 24.363 x 0.05 = 1.21815 -> 1.218. Total 24.363 + 1.218 = 25.581 = 25581 fils."""
    tax_rate(ledger, "KW", "0.05")
    acc = ledger.account(currency="KWD", bcd=1, country="KW")
    p = ledger.product("7.125", currency="KWD")
    ledger.subscribe(acc, p, 2, date(2026, 3, 10))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("proration", 10113), ("recurring", 14250)]
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (24363, 1218, 25581)


# --- memos and payments ----------------------------------------------------------------------

def test_credit_memo_applied_then_partly_unapplied(ledger) -> None:
    """'Documents'. Invoice 100.00 (1 x 100.00, 1 Apr). Credit memo 60.00 applied 40.00 then
    20.00 (invoice balance 40.00); 30.00 unapplied -> from the newest first: the 20.00 comes
    back whole, 10.00 of the 40.00 (reversed, 30.00 applied again): one live 30.00.
    Memo: applied 30.00, balance 30.00. Invoice: applied 30.00, balance 70.00."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("100.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    with ledger.uow() as uow:
        memo = create_credit_memo(uow, acc, "60.00", "goodwill", activate=True)
        apply_credit_memo(uow, memo, [{"target": inv["number"], "amount": "40.00"}])
        apply_credit_memo(uow, memo, [{"target": inv["number"], "amount": "20.00"}])
        unapply_credit_memo(uow, memo, amount="30.00")
        view = credit_memo_view(uow.conn, memo)
        uow.commit()
    assert (view["applied_minor"], view["balance_minor"]) == (3000, 3000)
    assert [a["amount_minor"] for a in view["applications"]] == [3000]
    after = _invoice(ledger, inv["id"])
    assert (after["applied_minor"], after["total_minor"] - after["applied_minor"]) == (3000, 7000)


def test_overpayment_leaves_the_rest_on_the_payment_as_account_credit(ledger) -> None:
    """'Documents': a payment applies oldest first; what is left stays as account credit.
    Invoice 51.29 (3 x 10.00 from 10 Mar: 3 x 10 x 22/31 = 21.29, April 30.00). Payment 80.00
    auto-applied: 51.29 to the invoice (paid), 28.71 unapplied on the payment."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("10.00"), 3, date(2026, 3, 10))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert inv["total_minor"] == 5129
    with ledger.uow() as uow:
        pay = record_payment(uow, acc, "80.00", reference="wire-1",
                             received_on=date(2026, 4, 5), auto_apply=True)
        view = payment_view(uow.conn, pay)
        uow.commit()
    assert (view["applied_minor"], view["balance_minor"]) == (5129, 2871)
    after = _invoice(ledger, inv["id"])
    assert (after["applied_minor"], after["status"]) == (5129, "paid")


def test_payment_applied_oldest_first_across_debit_memo_and_two_invoices(ledger) -> None:
    """'Documents'. Terms 14 days. Invoices 1 Mar (30.00, due 15 Mar) and 1 Apr (30.00, due
    15 Apr); a debit memo of 25.50 dated 5 Mar (issued 5 Mar, due 19 Mar). Payment 70.00,
    oldest (by due date) first: invoice 1 Mar 30.00 (paid), debit memo 25.50 (paid), invoice
    1 Apr 14.50 (partially paid, balance 15.50). Nothing left on the payment."""
    acc = ledger.account(bcd=1, terms=14)
    ledger.subscribe(acc, ledger.product("30.00"), 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        dm = create_debit_memo(uow, acc, "25.50", "late fee", issue_date=date(2026, 3, 5))
        dm_view = activate_debit_memo(uow, dm)
        pay = record_payment(uow, acc, "70.00", reference="wire-2",
                             received_on=date(2026, 4, 20))
        view = apply_payment(uow, pay)
        uow.commit()
    assert (dm_view["issue_date"], dm_view["due_date"], dm_view["amount_minor"]) == (
        date(2026, 3, 5), date(2026, 3, 19), 2550)
    march, april = ledger.invoices(acc)
    assert (march["due_date"], april["due_date"]) == (date(2026, 3, 15), date(2026, 4, 15))
    assert (march["applied_minor"], march["status"]) == (3000, "paid")
    assert (april["applied_minor"], april["status"]) == (1450, "partially_paid")
    with ledger.uow() as uow:
        memo = uow.conn.execute(select(debit_memos)).mappings().one()
    assert (memo["applied_minor"], memo["status"]) == (2550, "paid")
    assert (view["applied_minor"], view["balance_minor"]) == (7000, 0)


# --- prepaid credits -------------------------------------------------------------------------

def test_prepaid_credit_expiring_mid_period_pays_only_usage_up_to_its_expiry(ledger) -> None:
    """Rule 7. Usage at 0.10: 300 units on 10 Mar 2026 and 500 on 20 Mar: one line
    800 x 0.10 = 80.00. Grant A 50.00 expiring 15 Mar, grant B 100.00 without expiry.
    A first (earliest expiry): the cost of usage up to 15 Mar = 80.00 x 300/800 = 30.00;
    A takes min(50.00, 30.00) = 30.00. B: min(100.00, 80.00 - 30.00) = 50.00.
    Draw -80.00; the invoice 0. Left: A 20.00 (expired), B 50.00."""
    acc = ledger.account(bcd=1)
    pid = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        for name, amount, expires in (("B", 10000, None), ("A", 5000, date(2026, 3, 15))):
            uow.conn.execute(credit_grants.insert().values(
                account_id=acc, currency="USD", kind="granted", amount_minor=amount,
                remaining_minor=amount, expires_on=expires, source="test", reason=name,
                created_at=datetime(2026, 1, 1, tzinfo=UTC)))
        uow.commit()
    usage_row(ledger, acc, pid, "300", "2026-03-10T09:00:00Z", "e1")
    usage_row(ledger, acc, pid, "500", "2026-03-20T09:00:00Z", "e2")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 8000), ("credit_draw", -8000)]
    assert inv["total_minor"] == 0
    with ledger.uow() as uow:
        left = dict(uow.conn.execute(select(credit_grants.c.reason,
                                            credit_grants.c.remaining_minor)).all())
    assert left == {"A": 2000, "B": 5000}


# --- usage, late events ----------------------------------------------------------------------

def test_late_metered_event_is_adjusted_on_the_next_invoice(ledger) -> None:
    """'Late and corrected events'. Metric sum at 0.10. March: 10 units -> 1 Apr bills 1.00.
    Then a late 5 dated 20 Mar, and 3 in April. 1 May: adjustment for March
    rate(15) - 1.00 = 1.50 - 1.00 = 0.50, and April 3 x 0.10 = 0.30. Total 0.80."""
    acc = ledger.account(bcd=1)
    pid = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        set_metric(uow, "calls", aggregation="sum", product=pid)
        uow.commit()

    metric = "calls"

    ingest(ledger, acc, metric, "m1", "2026-03-05T10:00:00Z", "10")
    ledger.run(date(2026, 4, 1))
    ingest(ledger, acc, metric, "m2", "2026-03-20T10:00:00Z", "5")
    ingest(ledger, acc, metric, "m3", "2026-04-10T10:00:00Z", "3")
    ledger.run(date(2026, 5, 1))
    march, april = ledger.invoices(acc)
    assert [a for _, a in ledger.amounts(march)] == [100]
    assert sorted(a for _, a in ledger.amounts(april)) == [30, 50]
    assert april["total_minor"] == 80
