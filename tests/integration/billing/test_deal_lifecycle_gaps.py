"""Issue 14, lifecycle gaps, on SQLite and PostgreSQL: a deal with two subscriptions of one
product at one price can be amended (line-by-line matching), and a committed subscription an
amendment adds is co-termed with its deal.

A month is one bill period (bill cycle day 1); a proration is ``quantity x price x days / days
in that month``, rounded once per line (ROUND_HALF_UP)."""
from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import count

from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import amendment_items, subscriptions
from billing_core.domain.terms import make_term, term_on
from billing_core.service.amendments import AmendmentIn, amend_orders
from billing_core.service.gate import accept_order
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.tax import set_tax_rate

JAN1, JAN20, FEB1 = date(2027, 1, 1), date(2027, 1, 20), date(2027, 2, 1)
_seq = count(1)


def _account(ledger, currency: str = "USD") -> int:
    """An account billed at an explicit 0 % tax rate (country ZZ), bill cycle day 1."""
    with ledger.uow() as uow:
        set_tax_rate(uow, "ZZ", "", "0", date(2020, 1, 1))
        uow.commit()
    return ledger.account(currency=currency, bcd=1, country="ZZ")


def _subs(ledger) -> list[tuple[int, int, int]]:
    with ledger.uow() as uow:
        return [(int(i), int(q), int(p)) for i, q, p in uow.conn.execute(select(
            subscriptions.c.id, subscriptions.c.quantity, subscriptions.c.product_id)
            .order_by(subscriptions.c.id))]


def _amend(ledger, acc: int, ref: str, amends: int, lines: list[SubscriptionItem],
           on: date = JAN20, clock: datetime | None = None):
    uow = ledger.uow() if clock is None else UnitOfWork(ledger.engine, clock=lambda: clock)
    with uow:
        [result] = amend_orders(uow, [AmendmentIn(acc, ref, amends, on,
                                                  subscriptions=tuple(lines))])
        uow.commit()
    return result


def test_two_subscriptions_of_one_product_at_one_price_are_amended(ledger) -> None:
    """Regression: the first quote has two lines of the same 12.00 EUR seat (10 seats for one
    team, 5 for another), so the deal holds two subscriptions of one key; every amendment of
    it was quarantined (the diff could not tell them apart). Now lines are matched line by
    line (exact quantity first, then in creation order).

    1 January billed: 10 x 12.00 = 120.00 and 5 x 12.00 = 60.00.
    Revision 2 from 20 January orders lines of 10 and 8: the 10 is unchanged, the 5 becomes 8.
    1 February: 3 x 12.00 x 12/31 = 13.935... -> 13.94 for [20 Jan, 1 Feb), then February
    120.00 + 96.00; total 229.94.
    Revision 3 from 1 February orders one line of 10: the 8 is removed from 1 February, the
    10 stays: the 1 March invoice credits February's 8 seats billed in advance,
    -8 x 12.00 = -96.00, and bills March's 10 seats, 120.00."""
    acc = _account(ledger, "EUR")
    seat = ledger.product("12.00", currency="EUR")
    with ledger.uow() as uow:
        first = accept_order(uow, OrderIn(acc, "crm:Q9:rev1", JAN1, subscriptions=[
            SubscriptionItem(seat, 10, JAN1), SubscriptionItem(seat, 5, JAN1)]))
        uow.commit()
    ledger.run(JAN1)
    second = _amend(ledger, acc, "crm:Q9:rev2", first,
                    [SubscriptionItem(seat, 10, JAN20), SubscriptionItem(seat, 8, JAN20)])
    assert isinstance(second, int), second
    (a, qa, _), (b, qb, _) = _subs(ledger)
    assert (qa, qb) == (10, 8)
    ledger.run(FEB1)
    feb = ledger.invoices(acc)[1]
    assert sorted(ledger.amounts(feb)) == [("proration", 1394), ("recurring", 9600),
                                           ("recurring", 12000)]
    assert feb["total_minor"] == 22994
    third = _amend(ledger, acc, "crm:Q9:rev3", second, [SubscriptionItem(seat, 10, FEB1)],
                   on=FEB1)
    assert isinstance(third, int), third
    ledger.run(date(2027, 3, 1))
    mar = ledger.invoices(acc)[2]
    assert sorted(ledger.amounts(mar)) == [("proration", -9600), ("recurring", 12000)]
    with ledger.uow() as uow:
        assert sorted((r.order_id, r.action, r.subscription_id) for r in uow.conn.execute(
            select(amendment_items))) == [(second, "quantity", b), (third, "removed", b)]


def _term_product(ledger, price: str, renew: bool) -> int:
    with ledger.uow() as uow:
        pid = add_product(uow, ProductIn(sku=f"CT{next(_seq)}", name=f"Coterm{next(_seq)}",
                                         term_months=12, auto_renew=renew))
        set_price(uow, pid, "USD", date(2020, 1, 1), price)
        uow.commit()
    return pid


def test_a_subscription_added_by_an_amendment_is_co_termed_with_its_deal(ledger) -> None:
    """An NCE deal: 5 seats at 20.00 a month, 12-month term from 1 January 2026, auto-renew,
    bill cycle day 1: its term is [1 Jan 2026, 1 Jan 2027). Revision 2 adds, from 20 March
    2026, a 31.00 support plan whose product has a 12-month term without auto-renew, and a
    10.00 add-on with a 12-month term that renews.

    Before: the support plan got a term of its own, 20 March 2026 + 12 months -> the next bill
    cycle day 1 April 2027, and billed until then. Co-termed: its first term is the prorated
    [20 Mar 2026, 1 Jan 2027), so it ends on 1 January 2027 with the deal; the add-on's first
    term ends there too and renews for 12 months, [1 Jan 2027, 1 Jan 2028).

    Invoices: 1 April 2026 bills support 31.00 x 12/31 = 12.00 for [20 Mar, 1 Apr), add-on
    10.00 x 12/31 = 3.870... -> 3.87, then April: seats 100.00, support 31.00, add-on 10.00.
    1 January 2027 bills seats 100.00 and the add-on 10.00, no support (it ended)."""
    acc = _account(ledger)
    seat = _term_product(ledger, "20.00", renew=True)
    support = _term_product(ledger, "31.00", renew=False)
    addon = _term_product(ledger, "10.00", renew=True)
    clock = datetime(2026, 1, 2, tzinfo=UTC)
    with UnitOfWork(ledger.engine, clock=lambda: clock) as uow:
        first = accept_order(uow, OrderIn(acc, "crm:NCE:rev1", date(2026, 1, 1), subscriptions=[
            SubscriptionItem(seat, 5, date(2026, 1, 1))]))
        uow.commit()
    for month in (1, 2, 3):
        ledger.run(date(2026, month, 1))
    mar20 = date(2026, 3, 20)
    second = _amend(ledger, acc, "crm:NCE:rev2", first, [
        SubscriptionItem(seat, 5, date(2026, 1, 1)), SubscriptionItem(support, 1, mar20),
        SubscriptionItem(addon, 1, mar20)], on=mar20, clock=clock)
    assert isinstance(second, int), second
    with ledger.uow() as uow:
        rows = {r["product_id"]: r for r in uow.conn.execute(select(subscriptions))
                .mappings()}
    assert (rows[support]["term_end"], rows[support]["end_date"]) == (date(2027, 1, 1),
                                                                        date(2027, 1, 1))
    assert (rows[addon]["term_end"], rows[addon]["end_date"]) == (date(2027, 1, 1), None)
    r = rows[addon]
    assert term_on(make_term(r["term_months"], r["start_date"], r["term_end"],
                             r["auto_renew"], r["frequency"], 1), date(2027, 6, 1)) == (
        date(2027, 1, 1), date(2028, 1, 1))
    ledger.run(date(2026, 4, 1))
    apr = ledger.invoices(acc)[-1]
    assert sorted(ledger.amounts(apr)) == sorted([
        ("proration", 1200), ("proration", 387), ("recurring", 10000), ("recurring", 3100),
        ("recurring", 1000)])
    ledger.run(date(2026, 12, 1))
    ledger.run(date(2027, 1, 1))
    jan27 = ledger.invoices(acc)[-1]
    assert sorted(ledger.amounts(jan27)) == [("recurring", 1000), ("recurring", 10000)]
