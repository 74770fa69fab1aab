"""Issue 14, item 2 (and item 3's committed terms): terms independent of billing frequency,
decreases and ends inside a committed term, auto-renewal and renewal orders, cent by cent, on
SQLite and PostgreSQL.

Unless a case says otherwise: a seat at 20.00 USD a month, an account with bill cycle day 1,
so a month is one bill period and a proration is ``seats x 20.00 x days / days in that month``,
rounded once per line (ROUND_HALF_UP)."""
from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    invoice_lines,
    invoices,
    orders,
    subscription_changes,
    subscriptions,
)
from billing_core.domain.errors import LedgerError, RuleViolation, ValidationError
from billing_core.domain.terms import make_term, term_on
from billing_core.service import gate
from billing_core.service.amendments import AmendmentIn, amend_orders
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.pricing import ProductIn, add_product, set_price

_seq = count(1)


def _product(ledger, price: str = "20.00", *, term: int | None = 12, renew: bool = True,
             decrease: str = "at_term_end", early: str = "at_term_end",
             period: str | None = None) -> int:
    with ledger.uow() as uow:
        pid = add_product(uow, ProductIn(
            sku=f"TERM{next(_seq)}", name=f"Seat{next(_seq)}", billing_period=period,
            term_months=term, auto_renew=renew, term_decrease=decrease,
            early_termination=early))
        set_price(uow, pid, "USD", date(2020, 1, 1), price)
        uow.commit()
    return pid


def _early(ledger) -> UnitOfWork:
    """A unit of work on a clock before any invoice falls due (no overdue hold)."""
    return UnitOfWork(ledger.engine, clock=lambda: datetime(2026, 1, 2, tzinfo=UTC))


def _change(ledger, sub: int, quantity, day: date) -> None:
    with _early(ledger) as uow:
        gate.change_quantity(uow, sub, quantity, day)
        uow.commit()


def _end(ledger, sub: int, day: date) -> date:
    with _early(ledger) as uow:
        end = gate.end_subscription(uow, sub, day)
        uow.commit()
    return end


def _row(ledger, sub: int):
    with ledger.uow() as uow:
        return uow.conn.execute(select(subscriptions).where(
            subscriptions.c.id == sub)).mappings().one()


def _changes(ledger, sub: int) -> list[tuple[date, int, int]]:
    with ledger.uow() as uow:
        return [(d, int(o), int(n)) for d, o, n in uow.conn.execute(select(
            subscription_changes.c.effective_date, subscription_changes.c.old_quantity,
            subscription_changes.c.new_quantity).where(
            subscription_changes.c.subscription_id == sub).order_by(subscription_changes.c.id))]


def _order_of(ledger, sub: int) -> int:
    return int(_row(ledger, sub)["order_id"])


# --- NCE: a 12-month term billed monthly ------------------------------------------------

def test_nce_decrease_is_deferred_to_the_term_end_and_billed_from_there(ledger) -> None:
    """5 seats from 1 January 2026, 12-month term, billed monthly, auto-renew, decreases at
    term end. The term is [1 Jan 2026, 1 Jan 2027) (1 January is a BCD: no co-terming).

    January billed on 1 January: 5 x 20.00 = 100.00. A decrease to 3 from 20 January is
    recorded from 1 January 2027 instead, so nothing is credited: February 100.00; the
    1 December run bills March to December, 10 x 100.00 = 1,000.00; the next term's first
    invoice (1 January 2027) bills 3 x 20.00 = 60.00."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger), 5, date(2026, 1, 1))
    assert _row(ledger, sub)["term_end"] == date(2027, 1, 1)
    ledger.run(date(2026, 1, 1))
    _change(ledger, sub, 3, date(2026, 1, 20))
    assert _changes(ledger, sub) == [(date(2027, 1, 1), 5, 3)]
    ledger.run(date(2026, 2, 1))
    ledger.run(date(2026, 12, 1))
    ledger.run(date(2027, 1, 1))
    jan, feb, dec, jan27 = ledger.invoices(acc)
    assert ledger.amounts(feb) == [("recurring", 10000)]
    assert dec["total_minor"] == 100000 and len(dec["lines"]) == 10
    assert ledger.amounts(jan27) == [("recurring", 6000)]


def test_nce_decrease_refused_increase_prorated(ledger) -> None:
    """The same seats with ``term_decrease=refuse``. 3 seats from 20 January is refused
    (naming the quantity). 8 seats from 20 January is an increase, prorated as always: the
    1 February invoice charges 3 x 20.00 x 12/31 = 23.2258... -> 23.23 for [20 Jan, 1 Feb) and
    February at 8 seats, 160.00. A later 8 -> 5 from 1 March is refused too (it is below the
    8 in effect then), and nothing of the refusals is recorded."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger, decrease="refuse"), 5, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    with pytest.raises(RuleViolation) as info:
        _change(ledger, sub, 3, date(2026, 1, 20))
    assert (info.value.field, str(info.value.value)) == ("quantity", "3")
    assert "2026-01-01 to 2026-12-31" in str(info.value)
    _change(ledger, sub, 8, date(2026, 1, 20))
    with pytest.raises(RuleViolation):
        _change(ledger, sub, 5, date(2026, 3, 1))
    assert _changes(ledger, sub) == [(date(2026, 1, 20), 5, 8)]
    ledger.run(date(2026, 2, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("proration", 2323),
                                                       ("recurring", 16000)]


def test_out_of_order_change_cannot_turn_a_later_one_into_a_mid_term_decrease(ledger) -> None:
    """5 seats, 12-month term from 1 January 2026 (any decrease policy). 6 seats from 1 March
    is recorded (an increase), then 8 seats from 1 February: also an increase against the 5
    in effect then, but the history re-chains and 1 March would become 8 -> 6, a decrease
    inside the term. It is refused, naming the quantity; the history stays 5 -> 6."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger), 5, date(2026, 1, 1))
    _change(ledger, sub, 6, date(2026, 3, 1))
    with pytest.raises(RuleViolation) as info:
        _change(ledger, sub, 8, date(2026, 2, 1))
    assert (info.value.field, str(info.value.value)) == ("quantity", "8")
    assert _changes(ledger, sub) == [(date(2026, 3, 1), 5, 6)]
    _change(ledger, sub, 6, date(2026, 2, 1))           # not above the later 6: fine
    assert _changes(ledger, sub)[-1] == (date(2026, 2, 1), 5, 6)


def test_decrease_at_term_end_of_a_term_that_does_not_renew_is_refused(ledger) -> None:
    """Without auto-renew the subscription ends at its term end (1 January 2027): a decrease
    deferred there would change nothing, so it is refused, naming the quantity."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger, renew=False), 5, date(2026, 1, 1))
    assert _row(ledger, sub)["end_date"] == date(2027, 1, 1)
    with pytest.raises(RuleViolation) as info:
        _change(ledger, sub, 3, date(2026, 4, 1))
    assert info.value.field == "quantity"


def test_no_term_changes_as_before(ledger) -> None:
    """A product with no term: 5 -> 3 seats from 20 January credits at once,
    -2 x 20.00 x 12/31 = -15.4838... -> -15.48; February 60.00."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger, term=None, decrease="refuse",
                                         early="refuse"), 5, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    _change(ledger, sub, 3, date(2026, 1, 20))
    ledger.run(date(2026, 2, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("proration", -1548),
                                                       ("recurring", 6000)]


# --- cancellations inside a committed term ---------------------------------------------

def test_cancellation_allowed_credits_the_unused_days(ledger) -> None:
    """4 seats, 12-month term, ``early_termination=allowed``; January and February billed.
    Cancelled from 10 February: [10 Feb, 1 Mar) is 19 of 28 days, 4 x 20.00 x 19/28 =
    54.2857... -> -54.29 on 1 March, carried to a credit memo (nothing else to bill)."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger, early="allowed"), 4, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    assert _end(ledger, sub, date(2026, 2, 10)) == date(2026, 2, 10)
    ledger.run(date(2026, 3, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("proration", -5429),
                                                       ("credit_memo", 5429)]


def test_cancellation_at_term_end_keeps_billing_to_the_term_end(ledger) -> None:
    """The same, ``early_termination=at_term_end``: the end moves to 1 January 2027, so
    1 March bills March, 4 x 20.00 = 80.00, with no credit; quantity 0 from a date goes the
    same way, and the 1 January 2027 run bills nothing."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger), 4, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    assert _end(ledger, sub, date(2026, 2, 10)) == date(2027, 1, 1)
    _change(ledger, sub, 0, date(2026, 5, 1))            # already ends at the term end
    ledger.run(date(2026, 3, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("recurring", 8000)]
    assert _row(ledger, sub)["end_date"] == date(2027, 1, 1)
    ledger.run(date(2026, 12, 1))
    assert ledger.run(date(2027, 1, 1)).invoices_created == 0


def test_cancellation_refused_changes_nothing(ledger) -> None:
    """``early_termination=refuse``: the end from 10 February is refused naming ``at`` and
    the date; the subscription keeps no end and 1 March bills 80.00. Ending on the renewal
    boundary (1 January 2027) is allowed."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger, early="refuse"), 4, date(2026, 1, 1))
    ledger.run(date(2026, 1, 1))
    ledger.run(date(2026, 2, 1))
    with pytest.raises(RuleViolation) as info:
        _end(ledger, sub, date(2026, 2, 10))
    assert (info.value.field, info.value.value) == ("at", date(2026, 2, 10))
    assert _row(ledger, sub)["end_date"] is None
    ledger.run(date(2026, 3, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("recurring", 8000)]
    assert _end(ledger, sub, date(2027, 1, 1)) == date(2027, 1, 1)


def test_order_cancellation_in_a_term_that_does_not_renew(ledger) -> None:
    """A non-renewing term already ends at its term end; cancelling the order from 10 February
    under ``at_term_end`` keeps that end (no error) and cancels the order."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, _product(ledger, renew=False), 4, date(2026, 1, 1))
    order = _order_of(ledger, sub)
    with _early(ledger) as uow:
        gate.cancel_order(uow, order, date(2026, 2, 10))
        uow.commit()
    assert _row(ledger, sub)["end_date"] == date(2027, 1, 1)
    with ledger.uow() as uow:
        assert uow.conn.execute(select(orders.c.status).where(
            orders.c.id == order)).scalar() == "cancelled"


# --- annual billed annually, auto-renew --------------------------------------------------

def test_annual_term_billed_annually_renews_at_the_catalog_price(ledger) -> None:
    """1,200.00 a year, annual from 10 March 2026, 12-month term, auto-renew: term
    [10 Mar 2026, 10 Mar 2027), billed whole on 1 April 2026 (the first invoice whose period
    starts on or after the term start): 1,200.00. The catalog price becomes 1,320.00 from
    10 March 2027; the renewed term [10 Mar 2027, 10 Mar 2028) is billed on 1 April 2027 at
    it, 1,320.00, once (the 1 April 2027 line is the only one). A cancellation from 1 June 2027
    (``at_term_end``) moves to 10 March 2028: the renewed term is committed."""
    acc = ledger.account(bcd=1)
    pid = _product(ledger, "1200.00", period="year")
    sub = ledger.subscribe(acc, pid, 1, date(2026, 3, 10), frequency="annual")
    assert _row(ledger, sub)["term_end"] == date(2027, 3, 10)
    ledger.price(pid, "1320.00", date(2027, 3, 10))
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2027, 4, 1))
    first, renewed = ledger.invoices(acc)
    assert ledger.amounts(first) == [("recurring", 120000)]
    assert ledger.amounts(renewed) == [("recurring", 132000)]
    assert (renewed["lines"][0]["period_start"], renewed["lines"][0]["period_end"]) == (
        date(2027, 3, 10), date(2028, 3, 10))
    assert _end(ledger, sub, date(2027, 6, 1)) == date(2028, 3, 10)


def test_annual_term_without_auto_renew_stops_at_the_term_end(ledger) -> None:
    """The same year without auto-renew ends on 10 March 2027: the 1 April 2027 run bills
    nothing more. An 18-month term billed annually is refused, naming the item's field."""
    acc = ledger.account(bcd=1)
    pid = _product(ledger, "1200.00", period="year", renew=False)
    ledger.subscribe(acc, pid, 1, date(2026, 3, 10), frequency="annual")
    ledger.run(date(2026, 4, 1))
    assert ledger.run(date(2027, 4, 1)).invoices_created == 0
    with pytest.raises(ValidationError) as info, ledger.uow() as uow:
        gate.accept_order(uow, OrderIn(acc, "annual-18", date(2026, 3, 10), subscriptions=[
            SubscriptionItem(pid, 1, date(2026, 3, 10), "annual", term_months=18)]))
    assert (info.value.field, info.value.value) == ("subscriptions[0].term_months", 18)


# --- renewal orders -----------------------------------------------------------------------

def _renew(ledger, acc: int, renews: int, start: date, product: int, quantity,
           unit_price: str | None = None, ref: str = "renewal") -> int:
    with _early(ledger) as uow:
        order = gate.accept_order(uow, OrderIn(
            acc, ref, start, renews_order_id=renews, subscriptions=[
                SubscriptionItem(product, quantity, start, unit_price=unit_price)]))
        uow.commit()
    return order


def test_renewal_order_starts_the_co_termed_next_term_with_its_own_price_and_quantity(
        ledger) -> None:
    """5 seats from 20 January 2026, 12-month term billed monthly, no auto-renew: co-termed to
    the BCD, the term is [20 Jan 2026, 1 Feb 2027). 1 February 2026 bills
    5 x 20.00 x 12/31 = 38.7096... -> 38.71 for [20 Jan, 1 Feb) and February 100.00.
    A renewal order (8 seats at a negotiated 18.00 from 1 February 2027) takes the next term:
    the 1 February 2027 invoice bills 8 x 18.00 = 144.00 and nothing of the old seats; the new
    subscription's own term ends 1 February 2028. A renewal that does not start at the term
    end is refused naming ``renews_order_id``."""
    acc = ledger.account(bcd=1)
    pid = _product(ledger, renew=False)
    sub = ledger.subscribe(acc, pid, 5, date(2026, 1, 20))
    assert _row(ledger, sub)["term_end"] == date(2027, 2, 1)
    ledger.run(date(2026, 2, 1))
    assert ledger.amounts(ledger.invoices(acc)[0]) == [("proration", 3871), ("recurring", 10000)]
    first = _order_of(ledger, sub)
    with pytest.raises(RuleViolation) as info:
        _renew(ledger, acc, first, date(2027, 1, 1), pid, 8, "18.00", ref="early-renewal")
    assert (info.value.field, info.value.value) == ("renews_order_id", first)
    renewal = _renew(ledger, acc, first, date(2027, 2, 1), pid, 8, "18.00")
    ledger.run(date(2027, 1, 1))
    ledger.run(date(2027, 2, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("recurring", 14400)]
    with ledger.uow() as uow:
        new = uow.conn.execute(select(subscriptions).where(
            subscriptions.c.order_id == renewal)).mappings().one()
        assert uow.conn.execute(select(orders.c.renews_order_id).where(
            orders.c.id == renewal)).scalar() == first
    assert (new["start_date"], new["term_end"], new["end_date"]) == (
        date(2027, 2, 1), date(2028, 2, 1), date(2028, 2, 1))


def test_late_renewal_of_an_auto_renewed_annual_term_bills_the_boundary_once(ledger) -> None:
    """1,200.00 a year from 10 March 2026, auto-renew; both terms billed (1 April 2026 and
    1 April 2027, 1,200.00 each). A renewal order for the term from 10 March 2027 arrives
    after that (2 seats at a negotiated 1,000.00): the old subscription ends on 10 March 2027
    and its billed renewed term comes back in full (-1,200.00, 365/365 days), while the new one
    bills its term, 2 x 1,000.00 = 2,000.00: on 1 May 2027 the net is 800.00, so the term
    from 10 March 2027 costs 2,000.00 once."""
    acc = ledger.account(bcd=1)
    pid = _product(ledger, "1200.00", period="year")
    sub = ledger.subscribe(acc, pid, 1, date(2026, 3, 10), frequency="annual")
    order = _order_of(ledger, sub)
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2027, 4, 1))
    with _early(ledger) as uow:
        gate.accept_order(uow, OrderIn(
            acc, "renewal-late", date(2027, 3, 10), renews_order_id=order,
            subscriptions=[SubscriptionItem(pid, 2, date(2027, 3, 10), "annual",
                                            unit_price="1000.00")]))
        uow.commit()
    ledger.run(date(2027, 5, 1))
    may = ledger.invoices(acc)[-1]
    assert sorted(ledger.amounts(may)) == [("proration", -120000), ("recurring", 200000)]
    assert may["total_minor"] == 80000


def test_amendment_repricing_a_committed_subscription_is_refused(ledger) -> None:
    """A revision that changes the seat's price from 1 March inside the committed term (the
    product moves early ends to the term end) would bill the old and the new subscription
    until then: the amendment is refused, naming ``amends_order_id``; nothing is written."""
    acc = ledger.account(bcd=1)
    pid = _product(ledger)
    sub = ledger.subscribe(acc, pid, 5, date(2026, 1, 1))
    order = _order_of(ledger, sub)
    with _early(ledger) as uow:
        [result] = amend_orders(uow, [AmendmentIn(
            acc, "rev2", order, date(2026, 3, 1), subscriptions=(
                SubscriptionItem(pid, 5, date(2026, 3, 1), unit_price="25.00"),))])
        uow.commit()
    assert isinstance(result, RuleViolation)
    assert result.field == "amends_order_id"
    assert _row(ledger, sub)["end_date"] is None


def test_amendment_decrease_in_a_term_is_recorded_from_the_term_end(ledger) -> None:
    """A revision lowering the seats 5 -> 3 from 1 March inside the term (decreases at term
    end): the change and its amendment_items row are dated 1 January 2027, so the 1 March
    run bills January to March at 5 seats, 3 x 100.00, and nothing is prorated."""
    from billing_core.adapters.tables import amendment_items

    acc = ledger.account(bcd=1)
    pid = _product(ledger)
    sub = ledger.subscribe(acc, pid, 5, date(2026, 1, 1))
    order = _order_of(ledger, sub)
    with _early(ledger) as uow:
        [result] = amend_orders(uow, [AmendmentIn(
            acc, "rev2-down", order, date(2026, 3, 1), subscriptions=(
                SubscriptionItem(pid, 3, date(2026, 3, 1)),))])
        uow.commit()
    assert isinstance(result, int)
    assert _changes(ledger, sub) == [(date(2027, 1, 1), 5, 3)]
    with ledger.uow() as uow:
        assert uow.conn.execute(select(amendment_items.c.effective_date).where(
            amendment_items.c.order_id == result)).scalar_one() == date(2027, 1, 1)
    ledger.run(date(2026, 3, 1))
    assert ledger.amounts(ledger.invoices(acc)[-1]) == [("recurring", 10000)] * 3


def test_product_term_settings_survive_a_crm_update_and_are_checked(ledger) -> None:
    """A CRM update of the product (no term fields) keeps finance's settings; a bad policy is
    refused naming the field and the value."""
    from billing_core.adapters.tables import products
    from billing_core.service.pricing import update_product

    pid = _product(ledger, decrease="refuse", early="allowed")
    with ledger.uow() as uow:
        sku, name = uow.conn.execute(select(products.c.sku, products.c.name).where(
            products.c.id == pid)).one()
        update_product(uow, pid, ProductIn(sku=sku, name=f"{name} renamed"))
        uow.commit()
    with ledger.uow() as uow:
        assert tuple(uow.conn.execute(select(
            products.c.term_months, products.c.auto_renew, products.c.term_decrease,
            products.c.early_termination).where(products.c.id == pid)).one()) == (
            12, True, "refuse", "allowed")
        with pytest.raises(ValidationError) as info:
            update_product(uow, pid, ProductIn(sku=sku, name=name, early_termination="never"))
    assert (info.value.field, info.value.value) == ("early_termination", "never")


# --- property: a committed term never changes what billing owes for the history ---------

_RUNS = [date(2026, month, 28) for month in range(1, 11)]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bcd=st.sampled_from([1, 15, 31]), annual=st.booleans(), start_off=st.integers(0, 40),
       quantity=st.integers(1, 9), early=st.sampled_from(["at_term_end", "allowed", "refuse"]),
       decrease=st.sampled_from(["at_term_end", "refuse"]),
       recorded=st.lists(st.tuples(st.integers(0, len(_RUNS) - 1), st.integers(0, 240),
                                   st.integers(0, 9)), max_size=6))
def test_committed_terms_bill_the_integral_and_keep_their_commitment(
        ledger, bcd, annual, start_off, quantity, early, decrease, recorded) -> None:
    """Any quantity changes and cancellations (0), recorded in any order between ten bill
    runs, on a committed auto-renew subscription (3-month terms billed monthly, or a 12-month
    term billed annually) under any policy: what is invoiced equals the integral of the
    history over the billed days within half a unit per line (as without terms), nothing is
    billed twice, and the history keeps the commitment: no decrease takes effect inside a
    term (after its first day), and an end falls on a term boundary unless the product allows
    early termination."""
    acc = ledger.account(bcd=bcd)
    start = date(2026, 1, 1) + timedelta(days=start_off)
    freq = "annual" if annual else "monthly"
    pid = _product(ledger, "20.00", term=12 if annual else 3, decrease=decrease, early=early)
    sub = ledger.subscribe(acc, pid, quantity, start, frequency=freq)
    for k, run in enumerate(_RUNS):
        for when, offset, q in recorded:
            if when == k:
                with contextlib.suppress(LedgerError):     # refused: nothing written
                    _change(ledger, sub, q, start + timedelta(days=offset))
        ledger.run(run)
        assert ledger.run(run).invoices_created == 0
    expected, billed, _, history = ledger.recurring_integral(sub, bcd, Decimal("20.00"))
    row = _row(ledger, sub)
    assert row["end_date"] is None or billed <= row["end_date"]
    with ledger.uow() as uow:
        amounts = uow.conn.execute(select(invoice_lines.c.amount_minor).join(
            invoices, invoices.c.id == invoice_lines.c.invoice_id).where(
            invoice_lines.c.subscription_id == sub,
            invoice_lines.c.kind.in_(("recurring", "proration")))).scalars().all()
    charged = Decimal(sum(amounts)) / 100
    assert abs(charged - expected) <= Decimal(len(amounts)) / 200, (charged, expected, amounts)
    term = make_term(row["term_months"], start, row["term_end"], True, freq, bcd)
    for when, old, new in history:
        held = term_on(term, when)
        assert new >= old or held is None or held[0] == when, (when, old, new)
    if row["end_date"] is not None and early != "allowed":
        held = term_on(term, row["end_date"])
        assert held is not None and held[0] == row["end_date"] > start, row["end_date"]
