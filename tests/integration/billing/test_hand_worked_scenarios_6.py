"""Billing scenarios worked by hand from docs/BILLING.md and docs/CREDIT_CONTROL.md, sixth
part: consolidated invoices of mixed subscriptions, memos and payments across several
documents, voids and numbering, 0- and 3-decimal currencies with awkward quantities and
prices, amounts at the documented maximum, exposure and holds to the minor unit. SQLite and
PostgreSQL (``ledger`` runs on the ``engine`` fixture).

Every figure in a docstring was worked out from the rule it cites before the test ran."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hand_worked import tax_rate, usage_row
from sqlalchemy import select

from billing_core.adapters.tables import credit_memos, invoices
from billing_core.domain.credit import CreditPolicy
from billing_core.domain.errors import InvalidAmount, InvalidState, LedgerError
from billing_core.service import ledger_uow
from billing_core.service.accounts import set_credit_limit
from billing_core.service.bill_run import run_bill_run
from billing_core.service.credit_control import reevaluate_all
from billing_core.service.credits import grant_credits, pool_balance_minor
from billing_core.service.documents import void_invoice
from billing_core.service.holds import current_reasons
from billing_core.service.memos import (
    activate_debit_memo,
    apply_credit_memo,
    cancel_credit_memo,
    create_credit_memo,
    create_debit_memo,
    credit_memo_view,
    debit_memo_view,
)
from billing_core.service.orders import (
    OneTimeItem,
    OrderIn,
    SubscriptionItem,
    activate_order,
    cancel_order,
    change_quantity,
    place_order,
)
from billing_core.service.payments import (
    apply_payment,
    payment_view,
    record_payment,
    unapply_payment,
)
from billing_core.service.receivables import exposure_minor, open_balance_minor
from billing_core.service.subscriptions import end_subscription


def _inv(ledger, inv_id: int) -> dict:
    with ledger.uow() as uow:
        return dict(uow.conn.execute(select(invoices).where(invoices.c.id == inv_id))
                    .mappings().one())


def _balance(ledger, acc: int) -> int:
    with ledger.uow() as uow:
        return open_balance_minor(uow.conn, acc)


# --- consolidated invoices -------------------------------------------------------------------

def test_consolidated_invoice_of_three_subscriptions_with_different_starts_and_frequencies(
        ledger) -> None:
    """Rules 1-5. BCD 1, USD, no run before 1 Apr 2026.
    A: 1 x 10.00 monthly from 1 Mar: [1 Mar, 1 May) = March 10.00 + April 10.00 (recurring).
    B: 1 x 120.00 a year (yearly product), annual from 15 Mar: its term [15 Mar 2026,
       15 Mar 2027) starts before 1 Apr: billed whole, 120.00.
    C: 1 x 7.00 monthly from 20 Mar: [20 Mar, 1 Apr) = 12/31: 84/31 = 2.7097 -> 2.71;
       April 7.00.
    Total 10.00 + 10.00 + 120.00 + 2.71 + 7.00 = 149.71. One invoice."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("10.00"), 1, date(2026, 3, 1))
    ledger.subscribe(acc, ledger.product("120.00", period="year"), 1, date(2026, 3, 15),
                     frequency="annual")
    ledger.subscribe(acc, ledger.product("7.00"), 1, date(2026, 3, 20))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(inv)) == [271, 700, 1000, 1000, 12000]
    assert inv["total_minor"] == 14971
    # May: A 10.00, C 7.00, B nothing (its year is billed)
    ledger.run(date(2026, 5, 1))
    _, may = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(may)) == [700, 1000]


def test_monthly_subscription_of_a_yearly_price_and_annual_of_a_monthly_price(ledger) -> None:
    """'Rating': a monthly subscription of a yearly price bills 1/12 of it a month; an annual
    one of a monthly price 12 x a term. BCD 1 from 1 Apr 2026:
    2 x 100.01 a year billed monthly: 200.02 / 12 = 16.6683 -> 16.67.
    3 x 9.99 a month billed annually: 3 x 9.99 x 12 = 359.64.  Total 376.31."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("100.01", period="year"), 2, date(2026, 4, 1))
    ledger.subscribe(acc, ledger.product("9.99"), 3, date(2026, 4, 1), frequency="annual")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(inv)) == [1667, 35964]
    assert inv["total_minor"] == 37631


def test_downgrade_mid_period_credits_the_unused_seats(ledger) -> None:
    """Rule 5. BCD 1, 10 x 15.00 from 1 Apr 2026 (1 Apr: 150.00). 4 from 16 Apr:
    -6 x 15.00 x 15/30 = -45.00; May 4 x 15.00 = 60.00. 1 May total 15.00."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("15.00"), 10, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 4, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    _, may = ledger.invoices(acc)
    assert ledger.amounts(may) == [("proration", -4500), ("recurring", 6000)]
    assert may["total_minor"] == 1500


def test_downgrade_with_tax_shares_the_rate_tax_by_running_base(ledger) -> None:
    """Rule 10, with a negative line. US 8.25 %. The previous figures: -45.00 then 60.00.
    Base 15.00, tax round(1.2375) = 1.24. Line shares: round(-45.00 x 0.0825 = -3.7125) =
    -3.71, then 1.24 - (-3.71) = 4.95. Total 16.24."""
    tax_rate(ledger, "US", "0.0825")
    acc = ledger.account(bcd=1, country="US")
    sub = ledger.subscribe(acc, ledger.product("15.00"), 10, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 4, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert (april["tax_minor"], april["total_minor"]) == (1238, 16238)   # 150 x .0825 = 12.375
    assert [ln["tax_minor"] for ln in may["lines"]] == [-371, 495]
    assert (may["subtotal_minor"], may["tax_minor"], may["total_minor"]) == (1500, 124, 1624)


def test_cancellation_after_billing_with_tax_carries_the_taxed_credit_to_a_memo(ledger) -> None:
    """'Cancellations', rules 8 and 10. GB 20 %, BCD 1. 5 x 12.00 from 1 Mar 2026: 1 Mar
    bills 60.00 + tax 12.00 = 72.00. Ended 12 Mar: -5 x 12.00 x 20/31 = -38.71 on 1 Apr,
    tax round(-7.742) = -7.74: -46.45 < 0 -> the invoice is 0 and a credit memo of 46.45."""
    tax_rate(ledger, "GB", "0.20")
    acc = ledger.account(bcd=1, country="GB")
    sub = ledger.subscribe(acc, ledger.product("12.00"), 5, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 3, 12))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    march, april = ledger.invoices(acc)
    assert march["total_minor"] == 7200
    assert april["total_minor"] == 0
    with ledger.uow() as uow:
        memo = uow.conn.execute(select(credit_memos)).mappings().one()
    assert (memo["amount_minor"], memo["status"], memo["origin"]) == (
        4645, "active", "invoice_overflow")
    # owed: 72.00 - 46.45 = 25.55
    assert _balance(ledger, acc) == 2555


# --- 0- and 3-decimal currencies ---------------------------------------------------------------

def test_yen_seven_seats_prorated(ledger) -> None:
    """Rule 4, JPY (0 decimals). BCD 1, 7 x 333 yen from 20 Apr 2026: [20 Apr, 1 May) = 11
    of 30 days: 2331 x 11/30 = 854.7 -> 855; May 2,331. Total 3,186."""
    acc = ledger.account(currency="JPY", bcd=1)
    ledger.subscribe(acc, ledger.product("333", currency="JPY"), 7, date(2026, 4, 20))
    ledger.run(date(2026, 5, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("proration", 855), ("recurring", 2331)]
    assert inv["total_minor"] == 3186


def test_kwd_seven_at_0_333_prorated_and_taxed(ledger) -> None:
    """Rule 4, KWD (3 decimals). BCD 1, 7 x 0.333 from 20 Apr 2026: 2.331 x 11/30 =
    0.8547 -> 0.855; May 2.331. KW 5 %: base 3.186, tax 0.1593 -> 0.159. Total 3.345."""
    tax_rate(ledger, "KW", "0.05")
    acc = ledger.account(currency="KWD", bcd=1, country="KW")
    ledger.subscribe(acc, ledger.product("0.333", currency="KWD"), 7, date(2026, 4, 20))
    ledger.run(date(2026, 5, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("proration", 855), ("recurring", 2331)]
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (3186, 159, 3345)


def test_bhd_negotiated_price_with_more_decimals_than_the_currency(ledger) -> None:
    """Rule 4, BHD (3 decimals): a negotiated 0.3335 x 7 = 2.3345 a month -> 2.335 (half
    up); from 16 Apr: 2.3345 x 15/30 = 1.16725 -> 1.167. 1 May: 1.167 + 2.335 = 3.502."""
    acc = ledger.account(currency="BHD", bcd=1)
    ledger.subscribe(acc, ledger.product("1.000", currency="BHD"), 7, date(2026, 4, 16),
                     unit_price="0.3335")
    ledger.run(date(2026, 5, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("proration", 1167), ("recurring", 2335)]
    assert inv["total_minor"] == 3502


def test_usd_price_0_333_times_7_decrease_rounds_half_up_away_from_zero(ledger) -> None:
    """Rules 4, 5. 7 x 0.335 (2.345 a month) from 1 Apr 2026 (1 Apr: 2.345 -> 2.35). 3 from
    16 Apr: -4 x 0.335 x 15/30 = -0.67 exactly. 1 May: -0.67 + 3 x 0.335 = 1.005 -> 1.01.
    Total 0.34."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("0.335"), 7, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 3, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert april["total_minor"] == 235
    assert ledger.amounts(may) == [("proration", -67), ("recurring", 101)]
    assert may["total_minor"] == 34


def test_jpy_one_time_charge_of_seven_at_a_fractional_price(ledger) -> None:
    """Rule 3, JPY: a one-time charge 7 x 142.5 = 997.5 -> 998 (half up), on the invoice of
    the period holding its date."""
    acc = ledger.account(currency="JPY", bcd=1)
    ledger.charge(acc, ledger.product("142.5", currency="JPY", kind="one_time"), 7,
                  date(2026, 4, 10))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("one_time", 998)]


# --- memos and payments across several documents ----------------------------------------------

def _two_invoices(ledger, price: str = "100.00", terms: int = 30) -> tuple[int, dict, dict]:
    acc = ledger.account(bcd=1, terms=terms)
    ledger.subscribe(acc, ledger.product(price), 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    ledger.run(date(2026, 4, 1))
    march, april = ledger.invoices(acc)
    return acc, march, april


def test_credit_memo_applied_across_two_invoices_then_payment_oldest_first(ledger) -> None:
    """'Documents'. Invoices 100.00 (1 Mar) and 100.00 (1 Apr). A 150.00 credit memo applied
    100.00 to March and 50.00 to April: March paid, April partially paid (50.00 open), the
    memo applied. A 60.00 payment applied oldest first: April takes 50.00; 10.00 stays on
    the payment. Open balance: 0 - 10.00 = -10.00."""
    acc, march, april = _two_invoices(ledger)
    with ledger.uow() as uow:
        memo = create_credit_memo(uow, acc, "150.00", "service credit", activate=True)
        view = apply_credit_memo(uow, memo, [{"target": march["number"], "amount": "100.00"},
                                             {"target": april["number"], "amount": "50.00"}])
        pay = record_payment(uow, acc, "60.00", reference="p-1", received_on=date(2026, 4, 9),
                             auto_apply=True)
        pview = payment_view(uow.conn, pay)
        uow.commit()
    assert (view["status"], view["applied_minor"], view["balance_minor"]) == (
        "applied", 15000, 0)
    m, a = _inv(ledger, march["id"]), _inv(ledger, april["id"])
    assert (m["status"], m["applied_minor"]) == ("paid", 10000)
    assert (a["status"], a["applied_minor"]) == ("paid", 10000)
    assert (pview["applied_minor"], pview["balance_minor"]) == (5000, 1000)
    assert _balance(ledger, acc) == -1000


def test_credit_memo_across_documents_is_all_or_nothing(ledger) -> None:
    """'Documents': a memo applied to several targets applies to all or none. Invoices
    100.00 and 100.00, April paid 60.00 (40.00 open). A 150.00 memo of 100.00 to March and
    50.00 to April: April takes at most 40.00 -> refused, and March keeps nothing of it."""
    acc, march, april = _two_invoices(ledger)
    with ledger.uow() as uow:
        pay = record_payment(uow, acc, "60.00", reference="p-2", received_on=date(2026, 4, 9))
        apply_payment(uow, pay, [{"target": april["number"], "amount": "60.00"}])
        memo = create_credit_memo(uow, acc, "150.00", "service credit", activate=True)
        uow.commit()
    with ledger.uow() as uow, pytest.raises(LedgerError):
        apply_credit_memo(uow, memo, [{"target": march["number"], "amount": "100.00"},
                                      {"target": april["number"], "amount": "50.00"}])
    with ledger.uow() as uow:
        view = credit_memo_view(uow.conn, memo)
    assert (view["applied_minor"], view["status"]) == (0, "active")
    assert _inv(ledger, march["id"])["applied_minor"] == 0
    assert _inv(ledger, april["id"])["applied_minor"] == 6000
    # owed 200.00 - 60.00 payment - 150.00 memo = -10.00
    assert _balance(ledger, acc) == -1000


def test_debit_memo_settled_by_a_credit_memo_and_a_payment(ledger) -> None:
    """'Documents'. A debit memo of 25.50 (activated) takes a 10.00 credit memo (partially
    paid, 15.50 open) and a 20.00 payment oldest first: 15.50 -> paid; 4.50 left on the
    payment. No invoice: the balance is -4.50."""
    acc = ledger.account(bcd=1)
    with ledger.uow() as uow:
        dm = create_debit_memo(uow, acc, "25.50", "late fee", issue_date=date(2026, 1, 5))
        activate_debit_memo(uow, dm)
        cm = create_credit_memo(uow, acc, "10.00", "goodwill", activate=True)
        apply_credit_memo(uow, cm, [{"target": f"debit_memo:{dm}", "amount": "10.00"}])
        mid = debit_memo_view(uow.conn, dm)
        pay = record_payment(uow, acc, "20.00", reference="p-3", received_on=date(2026, 1, 9),
                             auto_apply=True)
        pview = payment_view(uow.conn, pay)
        after = debit_memo_view(uow.conn, dm)
        uow.commit()
    assert (mid["status"], mid["balance_minor"]) == ("partially_paid", 1550)
    assert (after["status"], after["balance_minor"]) == ("paid", 0)
    assert (pview["applied_minor"], pview["balance_minor"]) == (1550, 450)
    assert _balance(ledger, acc) == -450


def test_overpayment_left_on_a_payment_applies_to_the_next_invoice(ledger) -> None:
    """'Documents': what is left on a payment stays as credit and applies later. March
    30.00; payment 80.00 auto-applied: 30.00, 50.00 left. April 30.00 billed; applying the
    payment again (oldest first) takes 30.00: 20.00 left. Balance -20.00."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("30.00"), 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    with ledger.uow() as uow:
        pay = record_payment(uow, acc, "80.00", reference="p-4", received_on=date(2026, 3, 3),
                             auto_apply=True)
        uow.commit()
    assert _balance(ledger, acc) == -5000
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        view = apply_payment(uow, pay)
        uow.commit()
    assert (view["applied_minor"], view["balance_minor"]) == (6000, 2000)
    march, april = ledger.invoices(acc)
    assert (march["status"], april["status"]) == ("paid", "paid")
    assert _balance(ledger, acc) == -2000


def test_partial_payments_then_unapply_moves_the_money_back_to_credit(ledger) -> None:
    """Invoices 100.00 and 100.00. Payment 70.00 to April by name (partially paid, 30.00
    open), payment 50.00 oldest first to March (50.00 open). Unapplying the first: April
    back to posted; the 70.00 is credit. Balance: 200.00 - 120.00 = 80.00 throughout."""
    acc, march, april = _two_invoices(ledger)
    with ledger.uow() as uow:
        p1 = record_payment(uow, acc, "70.00", reference="p-5", received_on=date(2026, 4, 2))
        apply_payment(uow, p1, [{"target": april["number"], "amount": "70.00"}])
        record_payment(uow, acc, "50.00", reference="p-6", received_on=date(2026, 4, 3),
                       auto_apply=True)
        uow.commit()
    m, a = _inv(ledger, march["id"]), _inv(ledger, april["id"])
    assert (m["status"], m["applied_minor"], a["status"], a["applied_minor"]) == (
        "partially_paid", 5000, "partially_paid", 7000)
    assert _balance(ledger, acc) == 8000
    with ledger.uow() as uow:
        view = unapply_payment(uow, p1)
        uow.commit()
    assert (view["applied_minor"], view["balance_minor"]) == (0, 7000)
    assert _inv(ledger, april["id"])["status"] == "posted"
    assert _balance(ledger, acc) == 8000


def test_payment_oldest_first_ties_on_due_date_go_by_number(ledger) -> None:
    """'Documents': oldest first is by due date, then number. Two accounts' worth on one:
    invoice 1 Apr (due 1 May with 30 days) and a debit memo issued 1 Apr (due 1 May):
    same due date, DM-000001 sorts before INV-00000x -> a 20.00 payment pays the memo's
    20.00 first."""
    acc = ledger.account(bcd=1, terms=30)
    ledger.subscribe(acc, ledger.product("30.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        dm = create_debit_memo(uow, acc, "20.00", "fee", issue_date=date(2026, 4, 1))
        activate_debit_memo(uow, dm)
        record_payment(uow, acc, "20.00", reference="p-7", received_on=date(2026, 4, 5),
                       auto_apply=True)
        after = debit_memo_view(uow.conn, dm)
        uow.commit()
    [inv] = ledger.invoices(acc)
    assert after["status"] == "paid"
    assert inv["applied_minor"] == 0


# --- voids and numbering ------------------------------------------------------------------------

def test_void_and_rebill_keeps_numbers_gapless_and_balance_right(ledger) -> None:
    """Rule 9. 1 Apr: INV-000001 for 3 x 10.00 = 30.00 and a one-time 5.00 -> 35.00.
    Voided: the balance drops to 0; the number stays with the void invoice. Rebilled on the
    same date: INV-000002, 35.00 again; the balance 35.00. A second run bills nothing."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("10.00"), 3, date(2026, 4, 1))
    ledger.charge(acc, ledger.product("5.00", kind="one_time"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [first] = ledger.invoices(acc)
    assert first["total_minor"] == 3500
    with ledger.uow() as uow:
        void_invoice(uow, first["id"])
        uow.commit()
    assert _balance(ledger, acc) == 0
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    rows = ledger.invoices(acc)
    assert sorted((r["number"], r["status"], r["total_minor"]) for r in rows) == [
        (first["number"], "void", 3500), (_next(first["number"]), "posted", 3500)]
    assert _balance(ledger, acc) == 3500


def _next(number: str) -> str:
    series, n = number.rsplit("-", 1)
    return f"{series}-{int(n) + 1:06d}"


def test_void_refused_while_paid_then_allowed_after_unapply(ledger) -> None:
    """Rule 9: only while nothing is applied. 30.00 invoice paid 30.00: void refused, nothing
    changes. Payment unapplied, void: balance -30.00 (the payment is credit); the rebill
    (30.00) and the payment applied again: balance 0."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("30.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    with ledger.uow() as uow:
        pay = record_payment(uow, acc, "30.00", reference="p-8", received_on=date(2026, 4, 2),
                             auto_apply=True)
        uow.commit()
    with ledger.uow() as uow, pytest.raises(InvalidState):
        void_invoice(uow, inv["id"])
    assert _inv(ledger, inv["id"])["status"] == "paid"
    with ledger.uow() as uow:
        unapply_payment(uow, pay)
        void_invoice(uow, inv["id"])
        uow.commit()
    assert _balance(ledger, acc) == -3000
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        view = apply_payment(uow, pay)
        uow.commit()
    assert view["balance_minor"] == 0
    assert _balance(ledger, acc) == 0


def test_invoice_numbers_stay_gapless_when_one_account_fails(ledger) -> None:
    """'Missing tax rates', rule 9: accounts A (US), B (DE, no rate), C (US) billed in one run:
    A and C take consecutive numbers, B none; once DE has a rate, B takes the next one."""
    tax_rate(ledger, "US", "0")
    p = ledger.product("10.00")
    a = ledger.account(bcd=1, country="US")
    b = ledger.account(bcd=1, country="DE")
    c = ledger.account(bcd=1, country="US")
    for acc in (a, b, c):
        ledger.subscribe(acc, p, 1, date(2026, 4, 1))
    res = ledger.run(date(2026, 4, 1))
    assert [e["account_id"] for e in res.errors] == [b]
    [ia], [ic] = ledger.invoices(a), ledger.invoices(c)
    assert _next(ia["number"]) == ic["number"]
    tax_rate(ledger, "DE", "0.19")
    ledger.run(date(2026, 4, 1))
    [ib] = ledger.invoices(b)
    assert ib["number"] == _next(ic["number"])
    assert (ib["tax_minor"], ib["total_minor"]) == (190, 1190)


# --- bill runs ---------------------------------------------------------------------------------

def test_a_run_for_a_date_inside_a_billed_period_bills_nothing_again(ledger) -> None:
    """Rule 9: 1 Apr billed (20.00); a run on 15 Apr (same period) and one on 1 Apr again
    bill nothing; 1 May bills May only."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("20.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 4, 15))
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 5, 1))
    assert [i["total_minor"] for i in ledger.invoices(acc)] == [2000, 2000]


def test_back_dated_order_is_caught_up_on_the_next_invoice_not_behind_it(ledger) -> None:
    """Rules 5 and 9. BCD 1; 10.00 from 1 Mar billed on 1 Mar and 1 Apr. Then an order of
    5.00 from 10 Feb (back-dated). A run for 1 Mar again bills nothing (newer invoices
    exist). 1 May: 10.00, and the new order from 10 Feb to 1 Jun: [10 Feb, 1 Mar) = 19/28:
    5.00 x 19/28 = 3.3929 -> 3.39; March, April, May 5.00 each. Total 28.39."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("10.00"), 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    ledger.run(date(2026, 4, 1))
    ledger.subscribe(acc, ledger.product("5.00"), 1, date(2026, 2, 10))
    ledger.run(date(2026, 3, 1))
    assert len(ledger.invoices(acc)) == 2
    ledger.run(date(2026, 5, 1))
    *_, may = ledger.invoices(acc)
    assert sorted(a for _, a in ledger.amounts(may)) == [339, 500, 500, 500, 1000]
    assert may["total_minor"] == 2839


# --- amounts at the documented maximum ------------------------------------------------------

def test_payment_at_the_maximum_is_taken_and_one_minor_unit_more_refused(ledger) -> None:
    """Money: a user's amount is at most MAX_MINOR = 10^15 minor units (10,000,000,000,000.00
    USD). Exactly that is recorded; 10,000,000,000,000.01 is refused naming the amount."""
    acc = ledger.account(bcd=1)
    with ledger.uow() as uow:
        pay = record_payment(uow, acc, "10000000000000.00", reference="big")
        uow.commit()
    with ledger.uow() as uow:
        assert payment_view(uow.conn, pay)["amount_minor"] == 10**15
    with ledger.uow() as uow, pytest.raises(InvalidAmount) as err:
        record_payment(uow, acc, "10000000000000.01", reference="bigger")
    assert err.value.field == "amount"


# --- credit exposure and holds -------------------------------------------------------------

def _today() -> datetime:
    """Credit control's clock: 2 April 2026, before any invoice here falls due."""
    return datetime(2026, 4, 2, 9, 0, tzinfo=UTC)


def _credit_ledger(ledger, policy: CreditPolicy | None = None):
    def uow():
        return ledger_uow(ledger.engine, policy=policy or CreditPolicy(), clock=_today)
    return uow


def _reasons(ledger, acc: int) -> set[str]:
    with ledger.uow() as uow:
        return set(current_reasons(uow.conn, acc))


def test_exposure_exactly_at_the_limit_holds_nothing_one_cent_over_holds(ledger) -> None:
    """CREDIT_CONTROL 'Exposure': held while exposure > limit. Limit 100.00. 1 Apr invoice
    3 x 33.33 = 99.99 -> not held. A debit memo of 0.01 -> exposure 100.00 = limit, not held.
    Another 0.01 -> 100.01 > 100.00: credit_limit. A 0.01 credit memo: back to 100.00,
    lifted."""
    uow_of = _credit_ledger(ledger)
    acc = ledger.account(bcd=1)
    with uow_of() as uow:
        set_credit_limit(uow, acc, "100.00")
        uow.commit()
    ledger.subscribe(acc, ledger.product("33.33"), 3, date(2026, 4, 1))
    run_bill_run(ledger.engine, date(2026, 4, 1), uow_factory=uow_of)
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 1)) == 9999
    assert _reasons(ledger, acc) == set()

    def debit(ref: str) -> None:
        with uow_of() as uow:
            dm = create_debit_memo(uow, acc, "0.01", ref)
            activate_debit_memo(uow, dm)
            uow.commit()
    debit("one")
    assert _reasons(ledger, acc) == set()
    debit("two")
    assert _reasons(ledger, acc) == {"credit_limit"}
    with uow_of() as uow:
        create_credit_memo(uow, acc, "0.01", "back", activate=True)
        uow.commit()
    assert _reasons(ledger, acc) == set()


def test_exposure_counts_an_unbilled_order_at_its_rounded_charge(ledger) -> None:
    """'Exposure': a subscription never billed counts one period's charge, rounded once:
    7 x 0.333 = 2.331 -> 2.33; a one-time 7 x 1.005 = 7.035 -> 7.04 (half up). Exposure
    9.37 before the bill run; after it, the invoice 2.33 + 7.04 = 9.37 and nothing unbilled."""
    acc = ledger.account(bcd=1)
    ledger.subscribe(acc, ledger.product("0.333"), 7, date(2026, 4, 1))
    ledger.charge(acc, ledger.product("1.005", kind="one_time"), 7, date(2026, 4, 1))
    with ledger.uow() as uow:
        before = exposure_minor(uow.conn, acc, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    with ledger.uow() as uow:
        after = exposure_minor(uow.conn, acc, date(2026, 4, 1))
    assert (before, inv["total_minor"], after) == (937, 937, 937)


def test_exposure_after_memos_payments_and_a_cancelled_memo(ledger) -> None:
    """'Exposure': invoices 100.00 + 100.00, credit memo 30.00 active (unapplied), payment
    45.00 unapplied, debit memo 12.34 active: 200.00 + 12.34 - 30.00 - 45.00 = 137.34.
    Cancelling the (unapplied) credit memo: 167.34."""
    acc, _, _ = _two_invoices(ledger)
    with ledger.uow() as uow:
        cm = create_credit_memo(uow, acc, "30.00", "x", activate=True)
        record_payment(uow, acc, "45.00", reference="p-9", received_on=date(2026, 4, 2))
        dm = create_debit_memo(uow, acc, "12.34", "fee", issue_date=date(2026, 4, 1))
        activate_debit_memo(uow, dm)
        uow.commit()
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 2)) == 13734
        cancel_credit_memo(uow, cm)
        assert exposure_minor(uow.conn, acc, date(2026, 4, 2)) == 16734


def test_threshold_rounds_down_holding_one_minor_unit_sooner(ledger) -> None:
    """'Policy': held when exposure > limit x threshold, rounded down to a minor unit. Limit
    100.01 at 0.9: 9000.9 -> 9000 minor. Exposure 90.00 -> not held; 90.01 -> held."""
    uow_of = _credit_ledger(ledger, CreditPolicy(limit_threshold=Decimal("0.9")))
    acc = ledger.account(bcd=1)
    with uow_of() as uow:
        set_credit_limit(uow, acc, "100.01")
        dm = create_debit_memo(uow, acc, "90.00", "a")
        activate_debit_memo(uow, dm)
        uow.commit()
    assert _reasons(ledger, acc) == set()
    with uow_of() as uow:
        dm = create_debit_memo(uow, acc, "0.01", "b")
        activate_debit_memo(uow, dm)
        uow.commit()
    assert _reasons(ledger, acc) == {"credit_limit"}


def test_subscription_ended_on_its_start_counts_nothing_in_exposure(ledger) -> None:
    """'Exposure' counts items 'not invoiced yet'; 'Cancellations': an end on or before the
    start bills nothing. 80.00 from 1 May 2026 (ordered and active on 2 Apr) and 30.00 from
    1 Apr: exposure 110.00. The first is cancelled at 2 Apr: its end is its start, 1 May, so
    it will never be invoiced: exposure 30.00, and after the 1 May run (May 30.00 billed;
    April 30.00 billed on 1 Apr) 60.00, not 140.00."""
    acc = ledger.account(bcd=1)
    later = ledger.subscribe(acc, ledger.product("80.00"), 1, date(2026, 5, 1))
    ledger.subscribe(acc, ledger.product("30.00"), 1, date(2026, 4, 1))
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 2)) == 11000
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        assert end_subscription(uow, later, date(2026, 4, 2)) == date(2026, 5, 1)
        uow.commit()
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 2)) == 3000
    ledger.run(date(2026, 5, 1))
    assert [i["total_minor"] for i in ledger.invoices(acc)] == [3000, 3000]
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 5, 1)) == 6000


# --- round 2, second batch ---------------------------------------------------------------------

def test_annual_increase_in_a_renewed_leap_year_term_uses_366_days(ledger) -> None:
    """Rules 2, 4, 5. 1 x 1,200.00 a year from 10 Mar 2026 (no term: it goes on), BCD 1:
    1 Apr 2026 bills [10 Mar 2026, 10 Mar 2027) 1,200.00; 1 Apr 2027 bills
    [10 Mar 2027, 10 Mar 2028) 1,200.00 (366 days: 29 Feb 2028). 3 from 10 Sep 2027:
    +2 x 1,200.00 x 182/366 = 1,193.4426 -> 1,193.44 on 1 Oct 2027."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("1200.00", period="year"), 1,
                           date(2026, 3, 10), frequency="annual")
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2027, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 3, date(2027, 9, 10))
        uow.commit()
    ledger.run(date(2027, 10, 1))
    first, second, third = ledger.invoices(acc)
    assert (first["total_minor"], second["total_minor"]) == (120000, 120000)
    assert ledger.amounts(third) == [("proration", 119344)]


def test_bcd_31_increase_inside_february_prorates_over_28_days(ledger) -> None:
    """Rules 1, 4, 5. BCD 31: [31 Jan, 28 Feb) has 28 days, [28 Feb, 31 Mar) 31.
    2 x 10.00 from 31 Jan 2026 (31 Jan: 20.00). 4 from 20 Feb: +2 x 10.00 x 8/28 =
    5.7143 -> 5.71; 28 Feb also bills [28 Feb, 31 Mar) 40.00. Total 45.71."""
    acc = ledger.account(bcd=31)
    sub = ledger.subscribe(acc, ledger.product("10.00"), 2, date(2026, 1, 31))
    ledger.run(date(2026, 1, 31))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 4, date(2026, 2, 20))
        uow.commit()
    ledger.run(date(2026, 2, 28))
    jan, feb = ledger.invoices(acc)
    assert jan["total_minor"] == 2000
    assert (feb["period_start"], feb["period_end"]) == (date(2026, 2, 28), date(2026, 3, 31))
    assert ledger.amounts(feb) == [("proration", 571), ("recurring", 4000)]


def test_void_returns_the_prepaid_draw_and_the_rebill_draws_it_again(ledger) -> None:
    """Rule 7, rule 9, 'Documents'. Usage at 0.10: 800 units in March = 80.00; a 50.00 grant
    without expiry. 1 Apr: 80.00 - 50.00 = 30.00. Void: the 50.00 comes back (a void_return
    grant), the balance 0. Rerun: 80.00 - 50.00 = 30.00 again, the pool 0."""
    acc = ledger.account(bcd=1)
    pid = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        grant_credits(uow, acc, "50.00", kind="granted", reason="welcome")
        uow.commit()
    usage_row(ledger, acc, pid, "800", "2026-03-10T09:00:00Z", "v1")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 8000), ("credit_draw", -5000)]
    with ledger.uow() as uow:
        void_invoice(uow, inv["id"])
        uow.commit()
    with ledger.uow() as uow:
        assert pool_balance_minor(uow.conn, acc, date(2026, 4, 1)) == 5000
    assert _balance(ledger, acc) == 0
    ledger.run(date(2026, 4, 1))
    live = [i for i in ledger.invoices(acc) if i["status"] != "void"]
    assert [ledger.amounts(i) for i in live] == [[("usage", 8000), ("credit_draw", -5000)]]
    with ledger.uow() as uow:
        assert pool_balance_minor(uow.conn, acc, date(2026, 4, 1)) == 0
    assert _balance(ledger, acc) == 3000


def test_void_of_an_invoice_with_an_overflow_memo_numbers_the_next_memo_after_it(ledger) -> None:
    """Rules 8, 9. 5 x 12.00 from 1 Mar billed; ended 12 Mar: 1 Apr credits -38.71 ->
    invoice 0, memo CM-n 38.71. Voiding that invoice cancels the memo (it keeps its number);
    the rerun issues the credit again: a new memo, the next number, 38.71. Balance
    60.00 - 38.71 = 21.29."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("12.00"), 5, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 3, 12))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    _, april = ledger.invoices(acc)
    with ledger.uow() as uow:
        void_invoice(uow, april["id"])
        uow.commit()
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        memos = uow.conn.execute(select(credit_memos.c.number, credit_memos.c.status,
                                        credit_memos.c.amount_minor)
                                 .order_by(credit_memos.c.id)).all()
    assert [(s, a) for _, s, a in memos] == [("cancelled", 3871), ("active", 3871)]
    assert memos[1][0] == _next(memos[0][0])
    assert _balance(ledger, acc) == 2129


def test_overdue_after_due_date_plus_grace_to_the_day(ledger) -> None:
    """CREDIT_CONTROL 'Hold reasons': overdue when a balance is left after due date + grace.
    Terms 30: the 1 Apr 2026 invoice is due 1 May. Grace 0: 1 May not overdue, 2 May
    overdue. Grace 3: 4 May not, 5 May overdue."""
    acc = ledger.account(bcd=1, terms=30)
    ledger.subscribe(acc, ledger.product("30.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert inv["due_date"] == date(2026, 5, 1)

    def reasons(on: date, grace: int) -> set[str]:
        with ledger.uow() as uow:
            reevaluate_all(uow, on, CreditPolicy(overdue_grace_days=grace), account_ids=[acc])
            out = set(current_reasons(uow.conn, acc))
        return out      # rolled back: each look starts from no hold
    assert reasons(date(2026, 5, 1), 0) == set()
    assert reasons(date(2026, 5, 2), 0) == {"overdue"}
    assert reasons(date(2026, 5, 4), 3) == set()
    assert reasons(date(2026, 5, 5), 3) == {"overdue"}


def test_order_cancellation_credits_the_billed_days_and_cancels_the_unbilled_charge(
        ledger) -> None:
    """'Cancellations'. One order: 1 x 10.00 monthly from 1 Apr 2026 and a one-time 25.00
    dated 5 May. 1 Apr bills 10.00 only (the charge's date is after April). The order is
    cancelled at 16 Apr: -10.00 x 15/30 = -5.00 on 1 May, the charge cancelled (never
    billed) -> 1 May is 0 with a 5.00 credit memo; exposure 10.00 - 5.00 = 5.00."""
    acc = ledger.account(bcd=1)
    sub_p, fee_p = ledger.product("10.00"), ledger.product("25.00", kind="one_time")
    with ledger.uow() as uow:
        order = place_order(uow, OrderIn(acc, "oc-1", date(2026, 4, 1), subscriptions=[
            SubscriptionItem(sub_p, 1, date(2026, 4, 1))], one_time_charges=[
            OneTimeItem(fee_p, 1, date(2026, 5, 5))]))
        activate_order(uow, order)
        uow.commit()
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 2)) == 3500
        cancel_order(uow, order, date(2026, 4, 16))
        uow.commit()
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 16)) == 1000
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert ledger.amounts(april) == [("recurring", 1000)]
    assert [a for k, a in ledger.amounts(may) if k != "credit_memo"] == [-500]
    assert may["total_minor"] == 0
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 5, 1)) == 500


def test_graduated_recurring_with_a_flat_fee_decrease_and_exposure(ledger) -> None:
    """Rating (graduated, flat fee of every tier holding a unit), rules 4, 5, 'Exposure'.
    Tiers <= 5 @ 10.00, above @ 8.00 + flat 20.00. 8 seats from 1 Apr 2026: exposure
    before billing 5 x 10 + 3 x 8 + 20 = 94.00; 1 Apr bills 94.00. 4 from 16 Apr:
    (rate(4) - rate(8)) x 15/30 = (40.00 - 94.00) / 2 = -27.00; May 40.00. 1 May 13.00."""
    acc = ledger.account(bcd=1)
    p = ledger.product(None, model="graduated", tiers=[("5", "10.00"), (None, "8.00", "20.00")])
    sub = ledger.subscribe(acc, p, 8, date(2026, 4, 1))
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 1)) == 9400
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 4, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert april["total_minor"] == 9400
    assert ledger.amounts(may) == [("proration", -2700), ("recurring", 4000)]
    assert may["total_minor"] == 1300


def test_volume_recurring_tier_crossed_mid_period(ledger) -> None:
    """Rating (volume: every unit at the tier of the total), rules 4, 5. Tiers <= 5 @ 10.00,
    above @ 8.00. 5 seats from 1 Apr (50.00); 6 from 16 Apr: (rate(6) - rate(5)) x 15/30 =
    (48.00 - 50.00) / 2 = -1.00; May 48.00. 1 May 47.00."""
    acc = ledger.account(bcd=1)
    p = ledger.product(None, model="volume", tiers=[("5", "10.00"), (None, "8.00")])
    sub = ledger.subscribe(acc, p, 5, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 6, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert april["total_minor"] == 5000
    assert ledger.amounts(may) == [("proration", -100), ("recurring", 4800)]



# --- round 2, third batch ----------------------------------------------------------------------

def _order_at_the_gate(ledger, acc: int, product: int, quantity: int, ref: str) -> None:
    from billing_core.service.gate import accept_order
    with _credit_ledger(ledger)() as uow:
        accept_order(uow, OrderIn(acc, ref, date(2026, 4, 2), subscriptions=[
            SubscriptionItem(product, quantity, date(2026, 4, 2))]))
        uow.commit()


@pytest.mark.parametrize(("limit", "held"), [("1250.00", set()), ("1249.99", {"credit_limit"})])
def test_an_order_exactly_at_the_limit_passes_one_cent_more_is_held(ledger, limit,
                                                                    held) -> None:
    """'What a hold does': an order taking exposure over the limit places credit_limit.
    12 x 104.1666 (a negotiated-looking catalog price) = 1,249.9992 -> counted 1,250.00
    (rounded once): against 1,250.00 not held, against 1,249.99 held."""
    acc = ledger.account(bcd=1)
    with _credit_ledger(ledger)() as uow:
        set_credit_limit(uow, acc, limit)
        uow.commit()
    _order_at_the_gate(ledger, acc, ledger.product("104.1666"), 12, f"gate-{limit}")
    assert _reasons(ledger, acc) == held
    with ledger.uow() as uow:
        assert exposure_minor(uow.conn, acc, date(2026, 4, 2)) == 125000


def test_usage_dated_with_an_offset_counts_in_its_utc_period(ledger) -> None:
    """Rule 3: usage is dated in UTC. BCD 1, 0.10 a unit: 100 at 2026-03-31T23:30-02:00
    (= 1 Apr 01:30 UTC: April) and 50 at 2026-04-01T00:30+02:00 (= 31 Mar 22:30 UTC:
    March). 1 Apr bills 50 x 0.10 = 5.00; 1 May bills 100 x 0.10 = 10.00."""
    acc = ledger.account(bcd=1)
    pid = ledger.product("0.10", kind="usage")
    usage_row(ledger, acc, pid, "100", "2026-03-31T23:30:00-02:00", "tz1")
    usage_row(ledger, acc, pid, "50", "2026-04-01T00:30:00+02:00", "tz2")
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert ledger.amounts(april) == [("usage", 500)]
    assert ledger.amounts(may) == [("usage", 1000)]


def test_yen_volume_usage_with_a_grant_tax_inclusive(ledger) -> None:
    """Rules 6, 7, 10 in JPY. Volume tiers <= 1,000 @ 1.5, above @ 1.2; 1,001 units in
    March: all at 1.2 = 1,201.2 -> 1,201. Grant 500: draw -500. JP 10 % inclusive: gross
    701, tax round(701 x 0.1 / 1.1 = 63.727) = 64, base 637, total 701."""
    tax_rate(ledger, "JP", "0.10")
    acc = ledger.account(currency="JPY", bcd=1, country="JP")
    pid = ledger.product(None, currency="JPY", kind="usage", model="volume",
                         tiers=[("1000", "1.5"), (None, "1.2")])
    with ledger.uow() as uow:
        grant_credits(uow, acc, "500", kind="granted", reason="trial")
        uow.commit()
    usage_row(ledger, acc, pid, "1001", "2026-03-15T00:00:00Z", "y1")
    ledger.run(date(2026, 4, 1), tax_inclusive=True)
    [inv] = ledger.invoices(acc)
    assert sum(ln["amount_minor"] + ln["tax_minor"] for ln in inv["lines"]) == 701
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (637, 64, 701)


def test_zero_total_invoice_owes_nothing_and_is_never_overdue(ledger) -> None:
    """Rules 7, 8 and 'Hold reasons'. Usage 40.00 fully paid by a 100.00 grant: the invoice
    total is 0; nothing is owed (balance 0) and it is never overdue."""
    acc = ledger.account(bcd=1, terms=10)
    pid = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        grant_credits(uow, acc, "100.00", kind="granted", reason="trial")
        uow.commit()
    usage_row(ledger, acc, pid, "400", "2026-03-15T00:00:00Z", "z1")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert inv["total_minor"] == 0
    assert _balance(ledger, acc) == 0
    with ledger.uow() as uow:
        reevaluate_all(uow, date(2026, 6, 1), CreditPolicy(), account_ids=[acc])
        assert set(current_reasons(uow.conn, acc)) == set()


def test_amendment_upgrade_removal_and_addition_in_one_revision(ledger) -> None:
    """'Amendments replace, never stack', rules 4, 5. EUR, BCD 1. Deal from 1 Jan 2027:
    5 seats at 12.00 and 1 support at 31.00; January billed 60.00 + 31.00 = 91.00.
    Revision 2 from 20 Jan: 8 seats, no support, 1 add-on at 10.00. 1 Feb:
      seats +3 x 12.00 x 12/31 = 13.935 -> 13.94; support -31.00 x 12/31 = -12.00;
      add-on [20 Jan, 1 Feb) 10.00 x 12/31 = 3.871 -> 3.87; February 96.00 + 10.00.
    Total 13.94 - 12.00 + 3.87 + 96.00 + 10.00 = 111.81."""
    from billing_core.service.amendments import AmendmentIn, amend_orders
    from billing_core.service.gate import accept_order
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    support = ledger.product("31.00", currency="EUR")
    addon = ledger.product("10.00", currency="EUR")
    jan1, jan20 = date(2027, 1, 1), date(2027, 1, 20)
    with ledger.uow() as uow:
        first = accept_order(uow, OrderIn(acc, "crm:QA:rev1", jan1, subscriptions=[
            SubscriptionItem(seat, 5, jan1), SubscriptionItem(support, 1, jan1)]))
        uow.commit()
    ledger.run(jan1)
    with ledger.uow() as uow:
        [res] = amend_orders(uow, [AmendmentIn(acc, "crm:QA:rev2", first, jan20, subscriptions=(
            SubscriptionItem(seat, 8, jan1), SubscriptionItem(addon, 1, jan1)))])
        uow.commit()
    assert isinstance(res, int), res
    ledger.run(date(2027, 2, 1))
    jan, feb = ledger.invoices(acc)
    assert jan["total_minor"] == 9100
    assert sorted(a for _, a in ledger.amounts(feb)) == [-1200, 387, 1000, 1394, 9600]
    assert feb["total_minor"] == 11181


def test_bill_run_twice_and_void_through_the_cli(sqlite_engine) -> None:
    """Rule 9 through `ledgerbridge` (SQLite file). BHD, BCD 1: 7 x 0.333 from 1 Apr 2026
    = 2.331. `bill-run --date 2026-04-01` twice: one invoice, 2.331, the second run creates
    0. `void-invoice` it, `bill-run` again: a new number right after it, 2.331;
    `payments record ... 3.000 --apply-oldest`: 2.331 applied, 0.669 left."""
    import json

    from click.testing import CliRunner

    from billing_core.adapters.db import UnitOfWork
    from jobs.cli import main

    url = str(sqlite_engine.url)

    def cli(*args: str) -> str:
        res = CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.stdout
    for args in (["products", "add", "--sku", "BHSEAT", "--name", "Seat"],
                 ["prices", "set", "BHSEAT", "--currency", "BHD", "--from", "2020-01-01",
                  "--price", "0.333"],
                 ["accounts", "add", "--name", "Manama", "--currency", "BHD", "--ext-id",
                  "BH1", "--tax-exempt"]):
        cli(*args)
    acc = json.loads(cli("accounts", "show", "BH1", "--json"))["id"]
    product = json.loads(cli("products", "show", "BHSEAT", "--json"))["id"]
    with UnitOfWork(sqlite_engine) as uow:
        order = place_order(uow, OrderIn(acc, "bh-1", date(2026, 4, 1), subscriptions=[
            SubscriptionItem(product, 7, date(2026, 4, 1))]))
        activate_order(uow, order)
        uow.commit()
    first = json.loads(cli("bill-run", "--date", "2026-04-01", "--json"))
    second = json.loads(cli("bill-run", "--date", "2026-04-01", "--json"))
    assert (first["invoices_created"], second["invoices_created"]) == (1, 0)
    [inv] = json.loads(cli("invoices", "list", "--account", "BH1", "--json"))
    assert inv["total_minor"] == 2331
    cli("void-invoice", inv["number"])
    assert json.loads(cli("bill-run", "--date", "2026-04-01", "--json"))["invoices_created"] == 1
    rows = json.loads(cli("invoices", "list", "--account", "BH1", "--json"))
    assert [(r["number"], r["status"], r["total_minor"]) for r in rows] == [
        (inv["number"], "void", 2331), (_next(inv["number"]), "posted", 2331)]
    pay = json.loads(cli("payments", "record", "BH1", "3.000", "--reference", "bh-wire",
                         "--received-on", "2026-04-03", "--apply-oldest", "--json"))
    assert (pay["applied_minor"], pay["balance_minor"]) == (2331, 669)


def test_a_late_run_issues_the_invoice_on_its_own_date(ledger) -> None:
    """Rule 1: an invoice is issued on the date of the run that bills it and due after the
    payment terms. BCD 1, terms 30, 1 x 100.00 from 1 Apr 2026. A run on 5 Apr (none on
    1 Apr) bills [1 Apr, 1 May), issued 5 Apr, due 5 May; the 1 May run issues 1 May, due
    31 May."""
    acc = ledger.account(bcd=1, terms=30)
    ledger.subscribe(acc, ledger.product("100.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 5))
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert (april["period_start"], april["issue_date"], april["due_date"]) == (
        date(2026, 4, 1), date(2026, 4, 5), date(2026, 5, 5))
    assert (may["issue_date"], may["due_date"]) == (date(2026, 5, 1), date(2026, 5, 31))


def test_an_invoice_above_the_ledger_maximum_is_that_accounts_error(ledger) -> None:
    """Money (MAX_MINOR = 10^15 minor units, 10,000,000,000,000.00 USD) and 'The bill run':
    an account whose invoice cannot be computed is that account's error; the others are
    billed. A: 1 x 10,000,000,000,000.00 = exactly the maximum, billed. B: 1 x
    100,000,000,000,000,000.00 (10^19 minor units, beyond a 64-bit column) and C: 1 x
    10,000,000,000,000.01 (one minor unit above the maximum): each an error naming the
    account, nothing written for it. D: 10.00, billed, numbered right after A."""
    a, b, c, d = (ledger.account(bcd=1) for _ in range(4))
    ledger.subscribe(a, ledger.product("10000000000000.00"), 1, date(2026, 4, 1))
    ledger.subscribe(b, ledger.product("100000000000000000.00"), 1, date(2026, 4, 1))
    ledger.subscribe(c, ledger.product("10000000000000.01"), 1, date(2026, 4, 1))
    ledger.subscribe(d, ledger.product("10.00"), 1, date(2026, 4, 1))
    res = ledger.run(date(2026, 4, 1))
    assert sorted(e["account_id"] for e in res.errors) == [b, c]
    assert all(e["field"] == "account" for e in res.errors)
    [ia], [idd] = ledger.invoices(a), ledger.invoices(d)
    assert (ia["total_minor"], idd["total_minor"]) == (10**15, 1000)
    assert idd["number"] == _next(ia["number"])
    assert ledger.invoices(b) == [] and ledger.invoices(c) == []


@pytest.mark.parametrize(("rate_region", "account_region"), [("CA", "ca"), ("ca", "CA"),
                                                             ("CA", " Ca ")])
def test_a_regions_rate_wins_whatever_the_case_of_its_code(ledger, rate_region,
                                                           account_region) -> None:
    """Rule 10: a region's rate wins over the country's. US 0 %, region CA 7.25 %; the
    account is in 'us' (country codes are read in any case) and the same region written in
    another case: 100.00 -> tax 7.25, total 107.25 (not 0 % in silence)."""
    tax_rate(ledger, "US", "0")
    tax_rate(ledger, "US", "0.0725", region=rate_region)
    acc = ledger.account(bcd=1, country="us", region=account_region)
    ledger.subscribe(acc, ledger.product("100.00"), 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert (inv["tax_minor"], inv["total_minor"]) == (725, 10725)
