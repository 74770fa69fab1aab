"""Amendments replace, never stack (issue 14, item 1), on SQLite and PostgreSQL: a new
revision of a deal bills only the difference against what the deal ordered."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing_core.adapters.tables import amendment_items, orders, subscriptions
from billing_core.domain.errors import RuleViolation
from billing_core.service.amendments import AmendmentIn, amend_orders
from billing_core.service.gate import accept_order
from billing_core.service.orders import OneTimeItem, OrderIn, SubscriptionItem

JAN1, JAN20 = date(2027, 1, 1), date(2027, 1, 20)


def _deal(ledger, acc: int, seat: int, setup: int) -> int:
    with ledger.uow() as uow:
        order = accept_order(uow, OrderIn(acc, "crm:Q1:rev1", JAN1, subscriptions=[
            SubscriptionItem(seat, 5, JAN1)], one_time_charges=[OneTimeItem(setup, 1, JAN1)]))
        uow.commit()
    return order


def _amend(ledger, acc: int, ref: str, amends: int, seats: int, seat: int, setup: int,
           extra: list[SubscriptionItem] | None = None) -> int:
    with ledger.uow() as uow:
        [result] = amend_orders(uow, [AmendmentIn(
            acc, ref, amends, JAN20, subscriptions=(SubscriptionItem(seat, seats, JAN1),
                                                    *(extra or [])),
            one_time_charges=(OneTimeItem(setup, 1, JAN1),))])
        uow.commit()
    assert isinstance(result, int), result
    return result


def test_amendment_5_to_8_seats_bills_exactly_the_difference(ledger) -> None:
    """A 12.00 EUR monthly seat, bill cycle day 1; 5 seats and a 50.00 setup from 1 January,
    billed on 1 January: 5 x 12.00 = 60.00 for January, setup 50.00.
    Revision 2 raises the seats to 8 from 20 January (and orders the same setup again).
    The invoice of 1 February: the 3 seats for 20 January - 1 February, 12 of January's 31
    days: 3 x 12.00 x 12/31 = 13.935... -> 13.94; February at 8 seats: 8 x 12.00 = 96.00.
    Nothing else: no second 5 or 8 seats, no second setup. Total 109.94."""
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    setup = ledger.product("50.00", currency="EUR", kind="one_time")
    first = _deal(ledger, acc, seat, setup)
    ledger.run(JAN1)
    second = _amend(ledger, acc, "crm:Q1:rev2", first, 8, seat, setup)
    ledger.run(date(2027, 2, 1))
    jan, feb = ledger.invoices(acc)
    assert ledger.amounts(jan) == [("recurring", 6000), ("one_time", 5000)]
    assert ledger.amounts(feb) == [("proration", 1394), ("recurring", 9600)]
    assert feb["total_minor"] == 10994
    with ledger.uow() as uow:
        assert uow.conn.execute(select(orders.c.amends_order_id).where(
            orders.c.id == second)).scalar() == first
        [item] = uow.conn.execute(select(amendment_items)).mappings().all()
        assert (item["order_id"], item["action"], item["old_quantity"], item["new_quantity"],
                item["effective_date"]) == (second, "quantity", 5, 8, JAN20)
        assert uow.conn.execute(select(subscriptions.c.quantity)).scalars().all() == [8]


def test_unchanged_revision_bills_nothing_and_a_repeat_writes_nothing(ledger) -> None:
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    setup = ledger.product("50.00", currency="EUR", kind="one_time")
    first = _deal(ledger, acc, seat, setup)
    ledger.run(JAN1)
    second = _amend(ledger, acc, "crm:Q1:rev2", first, 5, seat, setup)
    assert _amend(ledger, acc, "crm:Q1:rev2", first, 5, seat, setup) == second
    ledger.run(date(2027, 2, 1))
    feb = ledger.invoices(acc)[1]
    assert ledger.amounts(feb) == [("recurring", 6000)]          # 5 x 12.00, as before
    with ledger.uow() as uow:
        assert uow.conn.execute(select(amendment_items)).first() is None


def test_removed_and_added_items_from_the_start_date(ledger) -> None:
    """Revision 2 drops the seats and adds a 31.00 support plan, both from 20 January
    (billed on 1 January: seats 5 x 12.00 = 60.00 for January).
    1 February: the seats end on 20 January, so the 12 of January's 31 days billed in
    advance come back: -5 x 12.00 x 12/31 = -23.2258... -> -23.23; support 20 January -
    1 February: 31.00 x 12/31 = 12.00, then February 31.00; no February seat line."""
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    support = ledger.product("31.00", currency="EUR")
    setup = ledger.product("50.00", currency="EUR", kind="one_time")
    first = _deal(ledger, acc, seat, setup)
    ledger.run(JAN1)
    with ledger.uow() as uow:
        [second] = amend_orders(uow, [AmendmentIn(
            acc, "crm:Q1:rev2", first, JAN20,
            subscriptions=(SubscriptionItem(support, 1, JAN20),),
            one_time_charges=(OneTimeItem(setup, 1, JAN1),))])
        uow.commit()
    ledger.run(date(2027, 2, 1))
    feb = ledger.invoices(acc)[1]
    assert ledger.amounts(feb) == [("proration", -2323), ("proration", 1200),
                                  ("recurring", 3100)]
    with ledger.uow() as uow:
        ends = dict(uow.conn.execute(select(subscriptions.c.product_id,
                                            subscriptions.c.end_date)).all())
        actions = sorted(uow.conn.execute(select(amendment_items.c.action).where(
            amendment_items.c.order_id == second)).scalars())
    assert ends == {seat: JAN20, support: None}
    assert actions == ["added", "removed"]


def test_an_item_removed_from_its_own_start_date_gives_back_what_was_billed(ledger) -> None:
    """Regression: an amendment removing the seats from 1 January, their own start date, after
    January was billed in advance (5 x 12.00 = 60.00 on 1 January), set the subscription
    ``cancelled`` and credited nothing. The seats end on 1 January by the subscriptions' rule
    instead: the 1 February invoice gives back all 31 of January's days, -5 x 12.00 = -60.00,
    and bills no February seats; the invoice would go below zero, so it is 0 and the 60.00
    becomes a credit memo."""
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    support = ledger.product("0.00", currency="EUR")
    setup = ledger.product("50.00", currency="EUR", kind="one_time")
    first = _deal(ledger, acc, seat, setup)
    ledger.run(JAN1)
    with ledger.uow() as uow:
        amend_orders(uow, [AmendmentIn(
            acc, "crm:Q1:rev2", first, JAN1,
            subscriptions=(SubscriptionItem(support, 1, JAN1),),
            one_time_charges=(OneTimeItem(setup, 1, JAN1),))])
        uow.commit()
    ledger.run(date(2027, 2, 1))
    feb = ledger.invoices(acc)[1]
    assert ("proration", -6000) in ledger.amounts(feb)
    assert not [a for kind, a in ledger.amounts(feb) if kind == "recurring" and a > 0]
    with ledger.uow() as uow:
        ends = dict(uow.conn.execute(select(subscriptions.c.product_id,
                                            subscriptions.c.end_date)).all())
    assert ends[seat] == JAN1


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.integers(1, 12),
       steps=st.lists(st.tuples(st.integers(1, 45), st.integers(1, 12), st.integers(0, 4)),
                      min_size=1, max_size=4))
def test_any_sequence_of_amendments_bills_each_seat_day_once(ledger, first, steps) -> None:
    """A deal of ``first`` seats at 12.00 from 1 January and a 50.00 setup, then amendments
    to new seat counts from later and later dates, each recorded before, between or after the
    monthly bill runs (1 January to 1 May). Whatever the sequence, the recurring and proration
    lines add up to the seat-days billed (quantity in effect each day x 12.00 / the days of
    its month, 1 January to 1 June), within half a cent per line, and the setup is billed
    once."""
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    setup = ledger.product("50.00", currency="EUR", kind="one_time")
    with ledger.uow() as uow:
        order = accept_order(uow, OrderIn(acc, f"deal{acc}:rev1", JAN1, subscriptions=[
            SubscriptionItem(seat, first, JAN1)], one_time_charges=[OneTimeItem(setup, 1, JAN1)]))
        uow.commit()
    schedule, day, slot = [(JAN1, first)], JAN1, 0
    planned: dict[int, list[tuple[date, int]]] = {}
    for gap, quantity, after in steps:
        day += timedelta(days=gap)
        if day >= date(2027, 6, 1):
            break
        slot = max(slot, after)
        schedule.append((day, quantity))
        planned.setdefault(slot, []).append((day, quantity))
    last = order
    for n, run in enumerate([date(2027, m, 1) for m in range(1, 6)]):
        for revision, (when, quantity) in enumerate(planned.get(n, []), start=len(schedule)):
            with ledger.uow() as uow:
                [result] = amend_orders(uow, [AmendmentIn(
                    acc, f"deal{acc}:rev{when}:{revision}", last, when,
                    subscriptions=(SubscriptionItem(seat, quantity, JAN1),),
                    one_time_charges=(OneTimeItem(setup, 1, JAN1),))])
                uow.commit()
            assert isinstance(result, int), result
            last = result
        ledger.run(run)
    lines = [ln for inv in ledger.invoices(acc) for ln in inv["lines"]]
    seat_lines = [ln["amount_minor"] for ln in lines if ln["kind"] in ("recurring", "proration")]
    exact = Decimal(0)
    d = JAN1
    while d < date(2027, 6, 1):
        quantity = [q for since, q in schedule if since <= d][-1]
        days = (date(d.year + d.month // 12, d.month % 12 + 1, 1) - date(d.year, d.month, 1)).days
        exact += Decimal(quantity) * Decimal(1200) / days
        d += timedelta(days=1)
    assert abs(sum(seat_lines) - exact) <= Decimal(len(seat_lines)) / 2
    assert [ln["amount_minor"] for ln in lines if ln["kind"] == "one_time"] == [5000]


def test_a_revision_dated_before_a_scheduled_change_is_refused_not_stacked(ledger) -> None:
    """5 seats from 1 January (billed); revision 2 raises them to 8 from 1 March; revision 3,
    from 1 February, orders 5 again. Taken as the difference on 1 February it planned
    nothing and left revision 2's 8 seats in force from 1 March (96.00 billed every month
    for the 5 ordered): it is refused, naming the change, and writes nothing; a revision from
    1 March on is taken."""
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    with ledger.uow() as uow:
        first = accept_order(uow, OrderIn(acc, "crm:Q9:rev1", JAN1, subscriptions=[
            SubscriptionItem(seat, 5, JAN1)]))
        uow.commit()
    ledger.run(JAN1)

    def amend(ref: str, amends: int, seats: int, on: date) -> object:
        with ledger.uow() as uow:
            [result] = amend_orders(uow, [AmendmentIn(
                acc, ref, amends, on, subscriptions=(SubscriptionItem(seat, seats, JAN1),))])
            uow.commit()
        return result

    second = amend("crm:Q9:rev2", first, 8, date(2027, 3, 1))
    assert isinstance(second, int)
    refused = amend("crm:Q9:rev3", second, 5, date(2027, 2, 1))
    assert isinstance(refused, RuleViolation) and refused.field == "effective_date"
    assert "from 5 to 8 on 2027-03-01" in str(refused)
    with ledger.uow() as uow:
        assert uow.conn.execute(select(orders.c.source_ref).order_by(orders.c.id)
                                ).scalars().all() == ["crm:Q9:rev1", "crm:Q9:rev2"]
    third = amend("crm:Q9:rev3b", second, 5, date(2027, 3, 1))
    assert isinstance(third, int)
    ledger.run(date(2027, 2, 1))
    ledger.run(date(2027, 3, 1))
    assert [ledger.amounts(i) for i in ledger.invoices(acc)] == [
        [("recurring", 6000)], [("recurring", 6000)], [("recurring", 6000)]]


def test_a_revision_dated_before_a_scheduled_removal_is_refused(ledger) -> None:
    """Revision 2 removes the backup from 1 March; revision 3 from 1 February orders it again:
    the removal would stay in force (the backup unbilled and deprovisioned from 1 March)."""
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    backup = ledger.product("40.00", currency="EUR")
    both = (SubscriptionItem(seat, 5, JAN1), SubscriptionItem(backup, 1, JAN1))
    with ledger.uow() as uow:
        first = accept_order(uow, OrderIn(acc, "crm:Q8:rev1", JAN1, subscriptions=list(both)))
        [second] = amend_orders(uow, [AmendmentIn(acc, "crm:Q8:rev2", first, date(2027, 3, 1),
                                                  subscriptions=both[:1])])
        assert isinstance(second, int)
        [refused] = amend_orders(uow, [AmendmentIn(acc, "crm:Q8:rev3", second,
                                                   date(2027, 2, 1), subscriptions=both)])
        uow.commit()
    assert isinstance(refused, RuleViolation) and "on 2027-03-01" in str(refused)


def test_a_revision_dated_into_the_deals_renewal_is_refused(ledger) -> None:
    """5 seats from 1 January (billed), renewed from 1 February at 6 seats for 15.00; then a
    revision of the renewed deal from 10 February orders 7 seats: the renewal bills those
    days, so it is refused naming ``effective_date`` and writes nothing (taken, 7 seats were
    billed beside the renewal's 6). A revision dated before the renewal is taken."""
    acc = ledger.account(currency="EUR", bcd=1)
    seat = ledger.product("12.00", currency="EUR")
    with ledger.uow() as uow:
        first = accept_order(uow, OrderIn(acc, "crm:Q7:rev1", JAN1, subscriptions=[
            SubscriptionItem(seat, 5, JAN1)]))
        uow.commit()
    ledger.run(JAN1)
    feb1 = date(2027, 2, 1)
    with ledger.uow() as uow:
        accept_order(uow, OrderIn(acc, "crm:R7:rev1", feb1, renews_order_id=first,
                                  subscriptions=[SubscriptionItem(seat, 6, feb1, "monthly",
                                                                  Decimal("15.00"))]))
        [refused] = amend_orders(uow, [AmendmentIn(acc, "crm:Q7:rev2", first, date(2027, 2, 10),
                                                   subscriptions=(SubscriptionItem(seat, 7, JAN1),))])
        [taken] = amend_orders(uow, [AmendmentIn(acc, "crm:Q7:rev3", first, JAN20,
                                                 subscriptions=(SubscriptionItem(seat, 7, JAN1),))])
        uow.commit()
    assert isinstance(refused, RuleViolation) and refused.field == "effective_date"
    assert "2027-02-01" in str(refused)
    assert isinstance(taken, int)
    ledger.run(feb1)
    ledger.run(date(2027, 3, 1))
    # 2 more seats for 20-31 January: 2 x 12.00 x 12/31 = 9.29; then the renewal alone
    assert [ledger.amounts(i) for i in ledger.invoices(acc)] == [
        [("recurring", 6000)], [("proration", 929), ("recurring", 9000)],
        [("recurring", 9000)]]
