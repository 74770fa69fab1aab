"""Billing scenarios worked by hand from docs/BILLING.md, third part: rounding ties (half up,
negative amounts too), tier boundaries, an annual line cut at a price change, committed
terms (decrease at term end, early termination, renewal at the catalog price), a leap-year
February at bill cycle day 30, and voiding a credit. SQLite and PostgreSQL (``ledger`` runs
on the ``engine`` fixture)."""
from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import count

from hand_worked import LADDER, usage_row
from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import credit_memos
from billing_core.service import gate
from billing_core.service.accounts import update_terms
from billing_core.service.amendments import AmendmentIn, amend_orders
from billing_core.service.documents import void_invoice
from billing_core.service.gate import accept_order
from billing_core.service.orders import OrderIn, SubscriptionItem, change_quantity
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.subscriptions import end_subscription
from billing_core.service.tax import set_tax_rate

_seq = count(1)


def _termed(ledger, price: str, *, renew: bool = True, decrease: str = "at_term_end",
            early: str = "at_term_end", period: str | None = None) -> int:
    with ledger.uow() as uow:
        pid = add_product(uow, ProductIn(
            sku=f"HW{next(_seq)}", name=f"Termed{next(_seq)}", billing_period=period,
            term_months=12, auto_renew=renew, term_decrease=decrease, early_termination=early))
        set_price(uow, pid, "USD", date(2020, 1, 1), price)
        uow.commit()
    return pid


def _early(ledger) -> UnitOfWork:
    """A clock before any invoice falls due (no overdue hold on the account)."""
    return UnitOfWork(ledger.engine, clock=lambda: datetime(2026, 1, 2, tzinfo=UTC))


def _memos(ledger, acc: int) -> list[tuple[int, str]]:
    with ledger.uow() as uow:
        return [tuple(r) for r in uow.conn.execute(
            select(credit_memos.c.amount_minor, credit_memos.c.status)
            .where(credit_memos.c.account_id == acc).order_by(credit_memos.c.id))]


def test_half_up_ties_round_away_from_zero_on_credits_too(ledger) -> None:
    """'One rounding rule: ROUND_HALF_UP'. BCD 1, 0.25 a unit. 2 units from 1 Apr 2026
    (1 Apr: 0.50). 3 from 16 Apr: +1 x 0.25 x 15/30 = 0.125 -> 0.13; a second subscription
    of 2 at 0.25 down to 1 from 16 Apr: -1 x 0.25 x 15/30 = -0.125 -> -0.13 (half up is away
    from zero: not -0.12). 1 May: 0.13 - 0.13 + May 3 x 0.25 + 1 x 0.25 = 1.00 -> 1.00."""
    acc = ledger.account(bcd=1)
    p = ledger.product("0.25")
    up = ledger.subscribe(acc, p, 2, date(2026, 4, 1))
    down = ledger.subscribe(acc, p, 2, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, up, 3, date(2026, 4, 16))
        change_quantity(uow, down, 1, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    _apr, may = ledger.invoices(acc)
    assert sorted(a for k, a in ledger.amounts(may) if k == "proration") == [-13, 13]
    assert may["total_minor"] == 100


def test_volume_tier_boundary_is_inclusive(ledger) -> None:
    """Rule 6 with the docs' ladder '<= 1,000 @ 0.10, <= 5,000 @ 0.08, above @ 0.05'.
    Volume, 1,000 units: all in the first tier, 100.00. 1,001 units: all at 0.08 = 80.08.
    Graduated, 5,001 units: 100.00 + 4000 x 0.08 + 1 x 0.05 = 420.05."""
    out = []
    for model, units in (("volume", "1000"), ("volume", "1001"), ("graduated", "5001")):
        acc = ledger.account(bcd=1)
        pid = ledger.product(None, kind="usage", model=model, tiers=LADDER)
        usage_row(ledger, acc, pid, units, "2026-03-15T00:00:00Z", f"{model}{units}")
        ledger.run(date(2026, 4, 1))
        [inv] = ledger.invoices(acc)
        out.append(inv["total_minor"])
    assert out == [10000, 8008, 42005]


def test_annual_charge_in_advance_is_cut_at_a_known_price_change(ledger) -> None:
    """Rules 2, 4: 'each day at the price in effect that day'. 1 x annual from 1 Apr 2026:
    catalog 1,200.00 a year, 1,320.00 from 1 Oct 2026 (set before the run). The year
    [1 Apr 2026, 1 Apr 2027) has 365 days: [1 Apr, 1 Oct) = 30+31+30+31+31+30 = 183 days,
    [1 Oct, 1 Apr 2027) = 182 days.
      1,200.00 x 183/365 = 601.6438 -> 601.64 ; 1,320.00 x 182/365 = 658.1918 -> 658.19
    1 Apr 2026 invoice: 1,259.83."""
    acc = ledger.account(bcd=1)
    p = ledger.product("1200.00", period="year")
    ledger.price(p, "1320.00", date(2026, 10, 1))
    ledger.subscribe(acc, p, 1, date(2026, 4, 1), frequency="annual")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(inv)) == [60164, 65819]
    assert inv["total_minor"] == 125983


def test_leap_february_at_bcd_30(ledger) -> None:
    """Rule 1: BCD 30 falls on 29 Feb 2028. The period [30 Jan 2028, 29 Feb 2028) has 30
    days. 4 x 15.00 from 10 Feb 2028: [10 Feb, 29 Feb) = 19 of 30 days:
    60.00 x 19/30 = 38.00; then [29 Feb, 30 Mar) (30 days) 60.00. Total 98.00."""
    acc = ledger.account(bcd=30)
    p = ledger.product("15.00")
    ledger.subscribe(acc, p, 4, date(2028, 2, 10))
    ledger.run(date(2028, 2, 29))
    [inv] = ledger.invoices(acc)
    assert (inv["period_start"], inv["period_end"]) == (date(2028, 2, 29), date(2028, 3, 30))
    assert ledger.amounts(inv) == [("proration", 3800), ("recurring", 6000)]


def test_committed_decrease_waits_for_the_term_end(ledger) -> None:
    """'Decreases' (the docs' example): 12-month term billed monthly, at_term_end. 5 x 20.00
    from 1 Jan 2026, January billed (100.00). 3 seats from 20 Jan: recorded from the term end
    1 Jan 2027, nothing credited: 1 Feb 2026 bills 100.00; 1 Jan 2027 bills 3 x 20.00 = 60.00."""
    acc = ledger.account(bcd=1)
    p = _termed(ledger, "20.00")
    sub = ledger.subscribe(acc, p, 5, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    with _early(ledger) as uow:
        gate.change_quantity(uow, sub, 3, date(2026, 1, 20))
        uow.commit()
    for month in range(2, 13):
        ledger.run(date(2026, month, 1))
    ledger.run(date(2027, 1, 1))
    invs = ledger.invoices(acc)
    assert [i["total_minor"] for i in invs] == [10000] * 12 + [6000]
    assert ledger.amounts(invs[-1]) == [("recurring", 6000)]


def test_early_termination_allowed_credits_like_a_cancellation(ledger) -> None:
    """'Early termination' allowed: the end is kept, billed days after it credited, no fee.
    12-month term, 5 x 20.00 from 1 Jan 2026, January billed. Ended 20 Jan: [20 Jan, 1 Feb) =
    12 of 31: -100.00 x 12/31 = -38.7097 -> -38.71 on 1 Feb; nothing else: invoice 0 and a
    credit memo of 38.71."""
    acc = ledger.account(bcd=1)
    p = _termed(ledger, "20.00", early="allowed")
    sub = ledger.subscribe(acc, p, 5, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    with _early(ledger) as uow:
        end_subscription(uow, sub, date(2026, 1, 20))
        uow.commit()
    ledger.run(date(2026, 2, 1))
    _jan, feb = ledger.invoices(acc)
    assert [a for k, a in ledger.amounts(feb) if k != "credit_memo"] == [-3871]
    assert feb["total_minor"] == 0
    assert _memos(ledger, acc) == [(3871, "active")]


def test_early_termination_default_moves_the_end_to_the_term_end(ledger) -> None:
    """'Early termination' at_term_end (default): 12-month term from 20 Jan 2026 at BCD 1 is
    co-termed to 1 Feb 2027. 1 x 31.00 from 20 Jan; ended 15 Mar 2026 -> the end moves to
    1 Feb 2027: nothing credited; 1 Apr 2026 bills 31.00 (April); the 1 Jan 2027 invoice bills
    January 31.00 and 1 Feb 2027 nothing."""
    acc = ledger.account(bcd=1)
    p = _termed(ledger, "31.00")
    sub = ledger.subscribe(acc, p, 1, date(2026, 1, 20))
    ledger.run(date(2026, 2, 1))
    with _early(ledger) as uow:
        end = end_subscription(uow, sub, date(2026, 3, 15))
        uow.commit()
    assert end == date(2027, 2, 1)
    for month in range(3, 13):
        ledger.run(date(2026, month, 1))
    ledger.run(date(2027, 1, 1))
    ledger.run(date(2027, 2, 1))
    ledger.run(date(2027, 3, 1))
    invs = ledger.invoices(acc)
    # 1 Feb 2026: [20 Jan, 1 Feb) 12/31 of 31.00 = 12.00 and February 31.00 = 43.00; then
    # 31.00 each month March 2026 .. January 2027 (11 invoices); nothing from 1 Feb 2027
    assert [i["total_minor"] for i in invs] == [4300] + [3100] * 11
    assert invs[-1]["period_start"] == date(2027, 1, 1)


def test_auto_renewal_bills_the_next_year_at_the_catalog_price(ledger) -> None:
    """'Auto-renew' (the docs' example): 1,200.00 a year from 10 Mar 2026, 12-month term
    billed annually, auto-renew; catalog 1,320.00 from 10 Mar 2027. 1 Apr 2026 bills 1,200.00,
    1 Apr 2027 the renewed term [10 Mar 2027, 10 Mar 2028) 1,320.00."""
    acc = ledger.account(bcd=1)
    p = _termed(ledger, "1200.00", period="year")
    with ledger.uow() as uow:
        set_price(uow, p, "USD", date(2027, 3, 10), "1320.00")
        uow.commit()
    ledger.subscribe(acc, p, 1, date(2026, 3, 10), frequency="annual")
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2027, 4, 1))
    first, second = ledger.invoices(acc)
    assert ledger.amounts(first) == [("recurring", 120000)]
    assert ledger.amounts(second) == [("recurring", 132000)]


def test_voiding_the_invoice_with_the_credit_credits_it_again_once(ledger) -> None:
    """'Cancellations': voiding an invoice that carried the credit returns the subscription
    to where it was billed; the next run credits it again, once. 3 x 10.00 and 1 x 50.00 from
    1 Mar 2026 (1 Mar: 80.00). The 3 seats end 21 Mar: [21 Mar, 1 Apr) 11 of 31:
    -30.00 x 11/31 = -10.6452 -> -10.65; 1 Apr: -10.65 + 50.00 = 39.35. Voided, run again
    for 1 Apr: 39.35 again; a third run bills nothing."""
    acc = ledger.account(bcd=1)
    seat = ledger.subscribe(acc, ledger.product("10.00"), 3, date(2026, 3, 1))
    ledger.subscribe(acc, ledger.product("50.00"), 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    with ledger.uow() as uow:
        end_subscription(uow, seat, date(2026, 3, 21))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    _mar, apr = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(apr)) == [-1065, 5000]
    with ledger.uow() as uow:
        void_invoice(uow, apr["id"])
        uow.commit()
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 4, 2))
    live = [i for i in ledger.invoices(acc) if i["status"] != "void"]
    assert [i["total_minor"] for i in live] == [8000, 3935]


def test_negotiated_price_ignores_a_catalog_change_and_one_time_charge_is_taxed(ledger) -> None:
    """Rules 3, 4, 10. AU 10 %, BCD 1. 4 seats at a negotiated 8.00 (catalog 10.00, 12.00 from
    16 Apr 2026) from 1 Apr: the negotiated price holds: 4 x 8.00 = 32.00 on 1 Apr, no cut at
    16 Apr. A one-time 99.99 x 1 activated 15 Apr goes on the first invoice after it, 1 May:
    99.99 + May 32.00 = 131.99; tax round(131.99 x 0.10) = round(13.199) = 13.20;
    total 145.19."""
    with ledger.uow() as uow:
        set_tax_rate(uow, "AU", "", "0.10", date(2020, 1, 1))
        uow.commit()
    acc = ledger.account(bcd=1, country="AU")
    seat = ledger.product("10.00")
    ledger.price(seat, "12.00", date(2026, 4, 16))
    setup = ledger.product("99.99", kind="one_time")
    ledger.subscribe(acc, seat, 4, date(2026, 4, 1), unit_price="8.00")
    ledger.run(date(2026, 4, 1))
    ledger.charge(acc, setup, 1, date(2026, 4, 15))
    ledger.run(date(2026, 5, 1))
    apr, may = ledger.invoices(acc)
    assert (apr["subtotal_minor"], apr["tax_minor"]) == (3200, 320)
    assert sorted(a for _, a in ledger.amounts(may)) == [3200, 9999]
    assert (may["subtotal_minor"], may["tax_minor"], may["total_minor"]) == (13199, 1320, 14519)


def test_yen_graduated_usage_with_fractional_unit_prices(ledger) -> None:
    """Rule 6 in JPY (0 decimals): tiers <= 100 @ 0.5 yen, above @ 0.3 yen; 1,003 units in
    March: 100 x 0.5 + 903 x 0.3 = 50 + 270.9 = 320.9 -> 321 yen (rounded once)."""
    acc = ledger.account(currency="JPY", bcd=1)
    pid = ledger.product(None, currency="JPY", kind="usage", model="graduated",
                         tiers=[("100", "0.5"), (None, "0.3")])
    usage_row(ledger, acc, pid, "1003", "2026-03-15T00:00:00Z", "y1")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 321)]


def _reprice(ledger, line_start: date) -> tuple[dict, dict]:
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("15.00", currency="EUR")
    tag = f"HW{next(_seq)}"
    with ledger.uow() as uow:
        first = accept_order(uow, OrderIn(acc, f"crm:{tag}:rev1", date(2027, 1, 1), subscriptions=[
            SubscriptionItem(seat, 5, date(2027, 1, 1), unit_price="12.00")]))
        uow.commit()
    ledger.run(date(2027, 1, 1))
    with ledger.uow() as uow:
        [res] = amend_orders(uow, [AmendmentIn(acc, f"crm:{tag}:rev2", first, date(2027, 1, 20),
                                               subscriptions=(SubscriptionItem(
                                                   seat, 5, line_start, unit_price="10.00"),))])
        uow.commit()
    assert isinstance(res, int), res
    ledger.run(date(2027, 2, 1))
    jan, feb = ledger.invoices(acc)
    return jan, feb


def test_amendment_repricing_ends_the_old_subscription_and_starts_a_new_one(ledger) -> None:
    """'Amendments replace, never stack': a new negotiated price ends the old subscription and
    starts a new one on the amendment's start date. 5 seats at 12.00 EUR (negotiated) from
    1 Jan 2027, BCD 1, January billed (60.00). Revision 2 from 20 Jan: 5 seats at 10.00, the
    line starting 20 Jan (as sync/handoff.py clamps it).
    1 Feb: old credited [20 Jan, 1 Feb) 12/31: -5 x 12.00 x 12/31 = -23.2258 -> -23.23;
    new [20 Jan, 1 Feb): 5 x 10.00 x 12/31 = 19.3548 -> 19.35; February 5 x 10.00 = 50.00.
    Total 46.12."""
    jan, feb = _reprice(ledger, date(2027, 1, 20))
    assert jan["total_minor"] == 6000
    assert sorted(a for _, a in ledger.amounts(feb)) == [-2323, 1935, 5000]
    assert feb["total_minor"] == 4612


def test_amendment_repricing_with_the_lines_original_start_date(ledger) -> None:
    """As above, but the revision's line keeps the deal's original start, 1 Jan 2027 (a
    service caller passing the quote line as it is). 'Nothing of an amendment starts before
    the amendment' and 'a new price ends the old subscription and starts a new one that day':
    the same 46.12 is expected (-23.23 + 19.35 + 50.00)."""
    jan, feb = _reprice(ledger, date(2027, 1, 1))
    assert jan["total_minor"] == 6000
    assert sorted(a for _, a in ledger.amounts(feb)) == [-2323, 1935, 5000]
    assert feb["total_minor"] == 4612


def test_co_termed_add_on_docs_example(ledger) -> None:
    """'Co-terming an added subscription' (the docs' example). BCD 1, NCE seats (12-month term,
    20.00) from 1 Jan 2026, term to 1 Jan 2027. A 31.00 support plan (12-month term, no
    auto-renew) added by amendment from 20 Mar 2026 joins the deal's term [20 Mar 2026,
    1 Jan 2027): 1 Apr bills 31.00 x 12/31 = 12.00 and April 31.00 (beside the seat's 20.00);
    the 1 Jan 2027 invoice bills no support (the seat's 20.00 only)."""
    acc = ledger.account(bcd=1)
    seat = _termed(ledger, "20.00")
    support = _termed(ledger, "31.00", renew=False)
    with _early(ledger) as uow:
        first = accept_order(uow, OrderIn(acc, "crm:HW2:rev1", date(2026, 1, 1), subscriptions=[
            SubscriptionItem(seat, 1, date(2026, 1, 1))]))
        uow.commit()
    for month in (1, 2, 3):
        ledger.run(date(2026, month, 1))
    with _early(ledger) as uow:
        [res] = amend_orders(uow, [AmendmentIn(
            acc, "crm:HW2:rev2", first, date(2026, 3, 20), subscriptions=(
                SubscriptionItem(seat, 1, date(2026, 1, 1)),
                SubscriptionItem(support, 1, date(2026, 3, 20))))])
        uow.commit()
    assert isinstance(res, int), res
    for month in range(4, 13):
        ledger.run(date(2026, month, 1))
    ledger.run(date(2027, 1, 1))
    invs = ledger.invoices(acc)
    apr = next(i for i in invs if i["period_start"] == date(2026, 4, 1))
    assert sorted(a for _, a in ledger.amounts(apr)) == [1200, 2000, 3100]
    assert ledger.amounts(invs[-1]) == [("recurring", 2000)]


def test_bill_cycle_day_15_to_1_docs_example(ledger) -> None:
    """'A new bill cycle day aligns by proration': day 15 -> 1, billed through 15 Mar 2026
    (5 x 20.00 from 15 Feb at BCD 15). 1 Mar bills nothing of the seats (no invoice);
    1 Apr bills [15 Mar, 1 Apr) at 17/31: 100.00 x 17/31 = 54.8387 -> 54.84, and April
    100.00: 154.84."""
    acc = ledger.account(bcd=15)
    ledger.subscribe(acc, ledger.product("20.00"), 5, date(2026, 2, 15))
    ledger.run(date(2026, 2, 15))
    with ledger.uow() as uow:
        update_terms(uow, acc, bill_cycle_day=1)
        uow.commit()
    ledger.run(date(2026, 3, 1))
    ledger.run(date(2026, 4, 1))
    feb, apr = ledger.invoices(acc)
    assert feb["total_minor"] == 10000
    assert apr["period_start"] == date(2026, 4, 1)
    assert sorted(a for _, a in ledger.amounts(apr)) == [5484, 10000]


def test_cancellation_credit_is_cut_at_a_price_change(ledger) -> None:
    """Rule 4 with 'Cancellations': credited days are priced as billed, cut at the price
    change. BCD 1, catalog 10.00, 13.00 from 20 Mar 2026 (set before the run). 1 x from 1 Mar:
    1 Mar bills 10.00 x 19/31 = 6.1290 -> 6.13 and 13.00 x 12/31 = 5.0323 -> 5.03 (11.16).
    Ended 10 Mar: credit [10 Mar, 20 Mar) -10.00 x 10/31 = -3.2258 -> -3.23 and
    [20 Mar, 1 Apr) -13.00 x 12/31 = -5.03; 1 Apr: -8.26 and nothing else -> credit memo 8.26.
    """
    acc = ledger.account(bcd=1)
    p = ledger.product("10.00")
    ledger.price(p, "13.00", date(2026, 3, 20))
    sub = ledger.subscribe(acc, p, 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 3, 10))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    mar, apr = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(mar)) == [503, 613]
    assert sum(a for k, a in ledger.amounts(apr) if k != "credit_memo") == -826
    assert _memos(ledger, acc) == [(826, "active")]
