"""Issue 14, items 3 and 4: the effective-dated quantity history and cancellations, cent by
cent, on SQLite and PostgreSQL.

Every case uses a monthly seat at 20.00 USD on an account with bill cycle day 1, so a month is
one bill period and the proration is ``seats x 20.00 x days / days in that month``, rounded
once per line (ROUND_HALF_UP)."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import credit_memos, subscription_changes, subscriptions
from billing_core.domain.errors import InvalidState, ValidationError
from billing_core.service import gate
from billing_core.service.orders import change_quantity


def _change(ledger, sub: int, quantity, day: date) -> None:
    """Through the gate, on a clock before the invoices fall due (no overdue hold)."""
    with UnitOfWork(ledger.engine, clock=lambda: datetime(2026, 1, 2, tzinfo=UTC)) as uow:
        gate.change_quantity(uow, sub, quantity, day)
        uow.commit()


def _end(ledger, sub: int, day: date | None) -> date:
    with ledger.uow() as uow:
        end = gate.end_subscription(uow, sub, day)
        uow.commit()
    return end


def _seats(ledger, quantity: int = 5, price: str = "20.00") -> tuple[int, int]:
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product(price), quantity, date(2026, 1, 1))
    return acc, sub


def test_out_of_order_change_credits_against_its_own_date(ledger) -> None:
    """The issue's case. 5 seats from 1 January, January billed on 1 January (100.00).
    Recorded: 8 seats from 1 March, then 3 seats from 20 January.

    On 20 January 5 seats were in effect (the March change is later), so the January change
    credits 2 seats for [20 Jan, 1 Feb), 12 of January's 31 days:
    -2 x 20.00 x 12/31 = -15.4838... -> -15.48 (the old code read the current quantity 8 and
    credited 5 seats: -38.71). February at 3 seats: 3 x 20.00 = 60.00. March at 8: 160.00."""
    acc, sub = _seats(ledger)
    ledger.run(date(2026, 1, 1))
    _change(ledger, sub, 8, date(2026, 3, 1))
    _change(ledger, sub, 3, date(2026, 1, 20))
    ledger.run(date(2026, 2, 1))
    ledger.run(date(2026, 3, 1))
    jan, feb, mar = ledger.invoices(acc)
    assert ledger.amounts(feb) == [("proration", -1548), ("recurring", 6000)]
    assert feb["total_minor"] == 4452
    assert ledger.amounts(mar) == [("recurring", 16000)]
    with ledger.uow() as uow:
        chain = uow.conn.execute(select(
            subscription_changes.c.effective_date, subscription_changes.c.old_quantity,
            subscription_changes.c.new_quantity).where(
            subscription_changes.c.subscription_id == sub).order_by(
            subscription_changes.c.effective_date)).all()
        assert [(d, int(o), int(n)) for d, o, n in chain] == [
            (date(2026, 1, 20), 5, 3), (date(2026, 3, 1), 3, 8)]
        assert uow.conn.execute(select(subscriptions.c.quantity).where(
            subscriptions.c.id == sub)).scalar() == 8


def test_later_change_recorded_first_is_corrected_when_an_earlier_one_arrives(ledger) -> None:
    """Both changes fall in months already billed (January to March billed, 5 seats, 100.00
    a month). Recorded: 8 seats from 10 March, then 3 seats from 20 February.

    20 Feb change (5 -> 3), to the end of what is billed:
      [20 Feb, 1 Mar) 9/28:  -2 x 20.00 x 9/28  = -12.857... -> -12.86
      [1 Mar, 1 Apr) whole:  -2 x 20.00          = -40.00
    10 Mar change, against the 3 seats in effect before it (not the 5 it was recorded over):
      [10 Mar, 1 Apr) 22/31: +5 x 20.00 x 22/31 = +70.967... -> +70.97
    April at 8 seats: 160.00. February then costs 100.00 - 12.86 = 87.14
    (= 5 x 20 x 19/28 + 3 x 20 x 9/28 = 67.857 + 19.286), March 100.00 - 40.00 + 70.97 =
    130.97 (= 3 x 20 x 9/31 + 8 x 20 x 22/31 = 17.419 + 113.548)."""
    acc, sub = _seats(ledger)
    for month in (1, 2, 3):
        ledger.run(date(2026, month, 1))
    _change(ledger, sub, 8, date(2026, 3, 10))
    _change(ledger, sub, 3, date(2026, 2, 20))
    ledger.run(date(2026, 4, 1))
    april = ledger.invoices(acc)[-1]
    assert ledger.amounts(april) == [("proration", -1286), ("proration", -4000),
                                     ("proration", 7097), ("recurring", 16000)]


def test_earlier_change_after_the_later_one_was_invoiced_stops_at_it(ledger) -> None:
    """January to March billed at 5 seats. 8 seats from 10 March is recorded and invoiced on
    1 April: +3 x 20.00 x 22/31 = 42.5806... -> 42.58, April 8 x 20.00 = 160.00.
    Then 3 seats from 20 February is recorded. Its days run only to 10 March: from there on
    the 8 seats already billed still hold.
      [20 Feb, 1 Mar) 9/28:  -2 x 20.00 x 9/28 = -12.857... -> -12.86
      [1 Mar, 10 Mar) 9/31:  -2 x 20.00 x 9/31 = -11.612... -> -11.61
    May at 8 seats: 160.00."""
    acc, sub = _seats(ledger)
    for month in (1, 2, 3):
        ledger.run(date(2026, month, 1))
    _change(ledger, sub, 8, date(2026, 3, 10))
    ledger.run(date(2026, 4, 1))
    _change(ledger, sub, 3, date(2026, 2, 20))
    ledger.run(date(2026, 5, 1))
    *_, april, may = ledger.invoices(acc)
    assert ledger.amounts(april) == [("proration", 4258), ("recurring", 16000)]
    assert ledger.amounts(may) == [("proration", -1286), ("proration", -1161),
                                   ("recurring", 16000)]


def test_mid_period_cancellation_credits_the_unused_days_on_the_next_invoice(ledger) -> None:
    """4 seats at 20.00 and a 100.00 support line, January and February billed in advance.
    The seats are cancelled from 10 February: [10 Feb, 1 Mar) is 19 of February's 28 days,
    4 x 20.00 x 19/28 = 54.2857... -> credit -54.29 on the 1 March invoice, which also bills
    support 100.00: total 45.71. From April nothing more of the seats."""
    acc = ledger.account(bcd=1)
    seats = ledger.subscribe(acc, ledger.product("20.00"), 4, date(2026, 1, 1))
    ledger.subscribe(acc, ledger.product("100.00"), 1, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    assert _end(ledger, seats, date(2026, 2, 10)) == date(2026, 2, 10)
    ledger.run(date(2026, 3, 1))
    ledger.run(date(2026, 4, 1))
    *_, mar, apr = ledger.invoices(acc)
    assert sorted(ledger.amounts(mar)) == [("proration", -5429), ("recurring", 10000)]
    assert mar["total_minor"] == 4571
    assert ledger.amounts(apr) == [("recurring", 10000)]
    with ledger.uow() as uow:
        assert uow.conn.execute(select(subscriptions.c.billed_through, subscriptions.c.end_date)
                                .where(subscriptions.c.id == seats)).one() == (
            date(2026, 2, 10), date(2026, 2, 10))


def _memos(ledger, acc: int) -> list[tuple[int, str, str]]:
    with ledger.uow() as uow:
        return [tuple(r) for r in uow.conn.execute(select(
            credit_memos.c.amount_minor, credit_memos.c.status, credit_memos.c.origin).where(
            credit_memos.c.account_id == acc))]


def test_cancelling_the_last_subscription_gives_a_credit_memo(ledger) -> None:
    """Only 4 seats, January and February billed; cancelled from 10 February. The 1 March
    invoice has nothing else to bill: the credit -54.29 (as above) brings it below zero, so
    it carries 54.29 to a credit memo (origin invoice_overflow) and totals 0.00. The 1 April
    run bills nothing."""
    acc, sub = _seats(ledger, quantity=4)
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    _end(ledger, sub, date(2026, 2, 10))
    ledger.run(date(2026, 3, 1))
    assert ledger.run(date(2026, 4, 1)).invoices_created == 0
    *_, mar = ledger.invoices(acc)
    assert ledger.amounts(mar) == [("proration", -5429), ("credit_memo", 5429)]
    assert mar["total_minor"] == 0
    assert _memos(ledger, acc) == [(5429, "active", "invoice_overflow")]


def test_order_cancellation_credits_like_a_subscription_cancellation(ledger) -> None:
    """The same 4 seats, cancelled as an order from 10 February: the same -54.29 credit, and
    the order is cancelled."""
    acc, sub = _seats(ledger, quantity=4)
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    with ledger.uow() as uow:
        order_id = uow.conn.execute(select(subscriptions.c.order_id).where(
            subscriptions.c.id == sub)).scalar_one()
        gate.cancel_order(uow, order_id, date(2026, 2, 10))
        uow.commit()
    ledger.run(date(2026, 3, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("proration", -5429),
                                                       ("credit_memo", 5429)]


def test_quantity_zero_from_a_date_is_the_end_at_that_date(ledger) -> None:
    """Quantity 0 from 10 February through the gate = cancelled from 10 February: -54.29."""
    acc, sub = _seats(ledger, quantity=4)
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    _change(ledger, sub, "0", date(2026, 2, 10))
    ledger.run(date(2026, 3, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1])[0] == ("proration", -5429)


def test_change_then_cancellation_credits_what_was_billed(ledger) -> None:
    """5 seats; January and February billed. 8 seats from 15 February are recorded, then the
    subscription is cancelled from 20 February, both before the 1 March run.
      change [15 Feb, 20 Feb) 5/28:     +3 x 20.00 x 5/28  = +10.714... -> +10.71
      end    [20 Feb, 1 Mar) 9/28 at the 5 seats billed: -5 x 20.00 x 9/28 = -32.142... -> -32.14
    February then costs 5 seats for 14 days (50.00) + 8 seats for 5 days (28.571...) = 78.57
    = 100.00 + 10.71 - 32.14; the invoice is -21.43, carried to a credit memo."""
    acc, sub = _seats(ledger)
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    _change(ledger, sub, 8, date(2026, 2, 15))
    _end(ledger, sub, date(2026, 2, 20))
    ledger.run(date(2026, 3, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [
        ("proration", 1071), ("proration", -3214), ("credit_memo", 2143)]


def test_annual_cancellation_credits_the_rest_of_the_term(ledger) -> None:
    """1,200.00 a year, annual from 10 March 2026, billed whole on 1 April 2026. Cancelled from
    10 September 2026: [10 Sep 2026, 10 Mar 2027) is 21 + 31 + 30 + 31 + 31 + 28 + 9 = 181 of
    the term's 365 days: 1,200.00 x 181/365 = 595.0684... -> credit 595.07 on 1 October."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("1200.00", period="year"), 1,
                           date(2026, 3, 10), frequency="annual")
    ledger.run(date(2026, 4, 1))
    _end(ledger, sub, date(2026, 9, 10))
    ledger.run(date(2026, 10, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("proration", -59507),
                                                       ("credit_memo", 59507)]


def test_bad_ends_and_changes_name_the_field(ledger) -> None:
    _, sub = _seats(ledger)
    _end(ledger, sub, date(2026, 6, 1))
    with pytest.raises(InvalidState) as info:
        _end(ledger, sub, date(2026, 7, 1))           # an end only moves earlier
    assert (info.value.field, info.value.value) == ("at", date(2026, 7, 1))
    with pytest.raises(ValidationError) as info:
        _change(ledger, sub, 3, date(2026, 6, 1))     # on or after the end
    assert info.value.field == "effective_date"
    for bad in ("-1", "abc"):
        with pytest.raises(ValidationError) as info:
            _change(ledger, sub, bad, date(2026, 2, 1))
        assert (info.value.field, info.value.value) == ("quantity", bad)
    with pytest.raises(ValidationError) as info, ledger.uow() as uow:
        change_quantity(uow, sub, 2, date(2025, 12, 31))   # before the start
    assert info.value.field == "effective_date"


def test_two_changes_on_the_same_day_bill_once_the_later_recorded(ledger) -> None:
    """2 seats; 4 then 6 seats both from 10 February, recorded before February is billed. The
    later-recorded one holds from that day; the period is cut once there (the old code cut it
    twice, wrote a 0-day line claiming the same period start and the bill run failed):
      [1 Feb, 10 Feb) 9/28:  2 x 20.00 x 9/28  = 12.857... -> 12.86
      [10 Feb, 1 Mar) 19/28: 6 x 20.00 x 19/28 = 81.428... -> 81.43"""
    acc, sub = _seats(ledger, quantity=2)
    _change(ledger, sub, 4, date(2026, 2, 10))
    _change(ledger, sub, 6, date(2026, 2, 10))
    ledger.run(date(2026, 2, 1))
    [feb] = ledger.invoices(acc)
    assert ledger.amounts(feb)[-2:] == [("proration", 1286), ("proration", 8143)]


def test_ending_a_subscription_never_activated(ledger) -> None:
    """An order taken but not activated (e.g. held): ending its subscription on or before the
    start cancels it outright (nothing was billed); a later end is kept, and once the order
    activates billing stops there: 3 seats from 1 March ended 16 March, billed on 1 April:
    3 x 20.00 x 15/31 = 29.032... -> 29.03 and nothing for April."""
    from billing_core.service.orders import (
        OrderIn,
        SubscriptionItem,
        activate_order,
        place_order,
    )

    acc = ledger.account(bcd=1)
    seat = ledger.product("20.00")
    with ledger.uow() as uow:
        first = place_order(uow, OrderIn(acc, "held-1", date(2026, 3, 1), subscriptions=[
            SubscriptionItem(seat, 3, date(2026, 3, 1))]))
        second = place_order(uow, OrderIn(acc, "held-2", date(2026, 3, 1), subscriptions=[
            SubscriptionItem(seat, 3, date(2026, 3, 1))]))
        subs = dict(uow.conn.execute(select(subscriptions.c.order_id, subscriptions.c.id)).all())
        gate.end_subscription(uow, subs[first], date(2026, 2, 1))
        gate.end_subscription(uow, subs[second], date(2026, 3, 16))
        activate_order(uow, second)
        uow.commit()
    with ledger.uow() as uow:
        assert uow.conn.execute(select(subscriptions.c.status).where(
            subscriptions.c.id == subs[first])).scalar() == "cancelled"
    ledger.run(date(2026, 4, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("proration", 2903)]


def test_voiding_the_second_end_credit_gives_it_again_once(ledger) -> None:
    """4 seats, January and February billed (80.00 each). Ended 20 February: the 1 March
    invoice credits [20 Feb, 1 Mar) 9/28: 4 x 20.00 x 9/28 = 25.714... -> -25.71. Then the end
    moves to 10 February: the 1 April invoice credits [10 Feb, 20 Feb) 10/28:
    4 x 20.00 x 10/28 = 28.571... -> -28.57. Voiding that April invoice gives back only its own
    days (billed through 20 February again, not 1 March), so rerunning 1 April credits -28.57
    once more, not -54.29 (the days from 20 February were credited in March)."""
    from billing_core.service.documents import void_invoice

    acc, sub = _seats(ledger, quantity=4)
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    _end(ledger, sub, date(2026, 2, 20))
    ledger.run(date(2026, 3, 1))
    _end(ledger, sub, date(2026, 2, 10))
    ledger.run(date(2026, 4, 1))
    april = ledger.invoices(acc)[-1]
    assert ledger.amounts(april) == [("proration", -2857), ("credit_memo", 2857)]
    with ledger.uow() as uow:
        void_invoice(uow, april["number"])
        uow.commit()
    ledger.run(date(2026, 4, 1))
    rebilled = [i for i in ledger.invoices(acc) if i["status"] != "void"][-1]
    assert ledger.amounts(rebilled) == [("proration", -2857), ("credit_memo", 2857)]
