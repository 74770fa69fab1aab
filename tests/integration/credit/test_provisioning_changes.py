"""Provisioning follows every change (issue 14, lifecycle gaps), on SQLite and PostgreSQL: a
request per quantity increase, decrease and end, each with its own idempotency key, dated by
its effective date (not dispatched before it), increases held like new orders, decreases and
ends never held, a subscription's requests sent in order.

Unless a case says otherwise: ``LIC``, a licence at 100.00 a month that needs provisioning;
the clock stands at 2 March 2026, 09:00 UTC; 10 licences ordered from 1 March 2026 and
their ``provision`` request already dispatched."""
from __future__ import annotations

from datetime import UTC, date, datetime

from credit_helpers import RecordingProvisioner, licence_order, make_account, make_products
from sqlalchemy import select

from billing_core.adapters.tables import provisioning_requests, subscriptions
from billing_core.service import gate
from billing_core.service.amendments import AmendmentIn, amend_orders
from billing_core.service.holds import place_manual_hold, release_manual_hold
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.provisioning import dispatch_pending, retry_request

MAR1, MAR2, MAR20, APR1 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 20), date(2026, 4, 1)


def _ordered(ledger, provisioner, lic: int | None = None, term: bool = False):
    """The account, the products, the subscription and order of 10 licences, provisioned."""
    with ledger.tx() as uow:
        acc = make_account(uow)
        products = make_products(uow)
        if term:
            products["LIC"] = add_product(uow, ProductIn(
                sku="LIC12", name="Licence, 12 months", needs_provisioning=True,
                term_months=12, auto_renew=True, term_decrease="at_term_end"))
            set_price(uow, products["LIC"], "USD", date(2020, 1, 1), "100")
        order = gate.accept_order(uow, licence_order(acc, "sf:Q1:rev1", 10, products, MAR1))
        sub = uow.conn.execute(select(subscriptions.c.id).where(
            subscriptions.c.order_id == order)).scalar_one()
    _dispatch(ledger, provisioner)
    assert [(t.change_kind, t.quantity) for t in provisioner.sent] == [("provision", 10)]
    provisioner.sent.clear()
    return acc, products, int(sub), order


def _dispatch(ledger, provisioner) -> list[tuple[str, int, date | None]]:
    before = len(provisioner.sent)
    dispatch_pending(ledger.engine, provisioner, clock=ledger.clock)
    return [(t.change_kind, int(t.quantity), t.effective_date) for t in provisioner.sent[before:]]


def _requests(ledger, sub: int) -> list[tuple[str, str, int, date | None]]:
    pr = provisioning_requests
    with ledger.engine.connect() as conn:
        return [(r.change_kind, r.state, int(r.quantity), r.effective_date) for r in conn.execute(
            select(pr).where(pr.c.subscription_id == sub).order_by(pr.c.id))]


def _at(clock, day: date) -> None:
    clock.now = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)


def test_decrease_increase_and_end_each_get_a_request_with_its_own_key(
        ledger, clock, provisioner: RecordingProvisioner) -> None:
    """10 -> 8 from 2 March: a ``decrease`` to 8 (before: no request kind, sent as a plain
    quantity); 8 -> 12 from 2 March: an ``increase`` to 12; an end on 20 March: a
    ``deprovision`` (quantity 0) dated 20 March, not sent on 2 March, sent on 20 March. Each
    has its own idempotency key, and the webhook body names the change and its date."""
    _, _, sub, _ = _ordered(ledger, provisioner)
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 8, MAR2)
    assert _dispatch(ledger, provisioner) == [("decrease", 8, MAR2)]
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 12, MAR2)
    assert _dispatch(ledger, provisioner) == [("increase", 12, MAR2)]
    with ledger.tx() as uow:
        assert gate.end_subscription(uow, sub, MAR20) == MAR20
    assert _dispatch(ledger, provisioner) == []
    _at(clock, MAR20)
    assert _dispatch(ledger, provisioner) == [("deprovision", 0, MAR20)]
    keys = [t.idempotency_key for t in provisioner.sent]
    assert len(set(keys)) == 3
    body = provisioner.sent[-1].payload()
    assert (body["change"], body["effective_date"], body["quantity"]) == (
        "deprovision", "2026-03-20", "0")


def test_a_future_dated_change_waits_for_its_date(ledger, clock, provisioner) -> None:
    """15 licences from 1 April, recorded on 2 March: queued (``pending``), not sent on 2 or
    31 March, sent on 1 April. A change recorded afterwards for 20 March (6 licences) goes
    first on 20 March; on 1 April the increase to 15 follows: the receiver ends at 15, the
    quantity billing holds from 1 April."""
    _, _, sub, _ = _ordered(ledger, provisioner)
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 15, APR1)
    assert _dispatch(ledger, provisioner) == []
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 6, MAR20)
    _at(clock, date(2026, 3, 19))
    assert _dispatch(ledger, provisioner) == []
    _at(clock, MAR20)
    assert _dispatch(ledger, provisioner) == [("decrease", 6, MAR20)]
    _at(clock, date(2026, 3, 31))
    assert _dispatch(ledger, provisioner) == []
    _at(clock, APR1)
    assert _dispatch(ledger, provisioner) == [("increase", 15, APR1)]


def test_a_decrease_deferred_to_the_term_end_is_provisioned_there(ledger, clock,
                                                                   provisioner) -> None:
    """Regression: 10 licences on a 12-month term from 1 March 2026 (bill cycle day 1: term
    end 1 March 2027), decreases at term end. 6 licences from 2 March is recorded from
    1 March 2027; its request was sent on 2 March 2026 (the customer lost 4 licences a year
    early). It is dated 1 March 2027 and sent then."""
    _, _, sub, _ = _ordered(ledger, provisioner, term=True)
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 6, MAR2)
    assert _dispatch(ledger, provisioner) == []
    assert _requests(ledger, sub)[-1] == ("decrease", "pending", 6, date(2027, 3, 1))
    _at(clock, date(2027, 2, 28))
    assert _dispatch(ledger, provisioner) == []
    _at(clock, date(2027, 3, 1))
    assert _dispatch(ledger, provisioner) == [("decrease", 6, date(2027, 3, 1))]


def test_on_hold_an_increase_waits_a_decrease_and_an_end_do_not(ledger, clock,
                                                                provisioner) -> None:
    """A manual hold. 10 -> 15 from 2 March: the increase waits (``awaiting_hold_release``),
    as a new order would. Then 10 -> 12 from 3 March: still an increase against the 10
    billing holds (the 15 is pending), waits too. The hold lifts: the 15, then the 12, in
    order. Hold again; 12 -> 6 from 2 March and an end on 20 March: sent on their dates
    while the account is still on hold."""
    acc, _, sub, _ = _ordered(ledger, provisioner)
    with ledger.tx() as uow:
        place_manual_hold(uow, acc, "check", admin="fin")
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 15, MAR2)
        gate.change_quantity(uow, sub, 12, date(2026, 3, 3))
    assert _dispatch(ledger, provisioner) == []
    assert [r[:2] for r in _requests(ledger, sub)[1:]] == [
        ("increase", "awaiting_hold_release"), ("increase", "awaiting_hold_release")]
    with ledger.tx() as uow:
        release_manual_hold(uow, acc, admin="fin")
    assert _dispatch(ledger, provisioner) == [("increase", 15, MAR2)]
    _at(clock, date(2026, 3, 3))
    assert _dispatch(ledger, provisioner) == [("increase", 12, date(2026, 3, 3))]
    with ledger.tx() as uow:
        place_manual_hold(uow, acc, "again", admin="fin")
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 6, date(2026, 3, 3))
        gate.end_subscription(uow, sub, MAR20)
    assert _dispatch(ledger, provisioner) == [("decrease", 6, date(2026, 3, 3))]
    _at(clock, MAR20)
    assert _dispatch(ledger, provisioner) == [("deprovision", 0, MAR20)]
    assert ledger.reasons(acc) == {"manual"}


def test_a_decrease_supersedes_an_increase_waiting_for_the_hold(ledger, clock,
                                                                provisioner) -> None:
    """On hold: 10 -> 15 from 2 March waits; then 10 -> 4 from 2 March (recorded later, so
    it wins the day in billing's history: 4 from 2 March). The decrease goes at once and
    supersedes the waiting increase: the receiver goes 10 -> 4 and never to 15; on release
    nothing more is sent."""
    acc, _, sub, _ = _ordered(ledger, provisioner)
    with ledger.tx() as uow:
        place_manual_hold(uow, acc, "check", admin="fin")
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 15, MAR2)
        gate.change_quantity(uow, sub, 4, MAR2)
    assert _dispatch(ledger, provisioner) == [("decrease", 4, MAR2)]
    assert [r[:2] for r in _requests(ledger, sub)[1:]] == [("increase", "superseded"),
                                                           ("decrease", "dispatched")]
    with ledger.tx() as uow:
        release_manual_hold(uow, acc, admin="fin")
    assert _dispatch(ledger, provisioner) == []


def test_a_failed_request_holds_back_the_later_ones_of_its_subscription(
        ledger, clock, provisioner) -> None:
    """10 -> 12 fails at the receiver; 12 -> 14 from 2 March is not sent before it (the
    receiver would end at 12); after ``provisioning retry`` both go, 12 then 14."""
    _, _, sub, _ = _ordered(ledger, provisioner)

    def refuse(task) -> None:
        from billing_core.adapters.provisioners.base import ProvisionError
        if task.quantity == 12:
            raise ProvisionError("HTTP 400", retriable=False)
    failing = RecordingProvisioner(check=refuse)
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 12, MAR2)
    assert _dispatch(ledger, failing) == []
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 14, MAR2)
    assert _dispatch(ledger, provisioner) == []
    pr = provisioning_requests
    with ledger.engine.connect() as conn:
        failed = conn.execute(select(pr.c.id).where(pr.c.state == "failed")).scalar_one()
    with ledger.tx() as uow:
        retry_request(uow, failed)
    assert _dispatch(ledger, provisioner) == [("increase", 12, MAR2), ("increase", 14, MAR2)]


def test_amendments_and_order_cancellations_are_provisioned(ledger, clock, provisioner) -> None:
    """Revision 2 from 20 March: 10 -> 7 licences (a ``decrease`` dated 20 March) and the
    one-time setup not ordered again. Revision 3 from 25 March drops the licences: their
    ``deprovision`` dated 25 March. Nothing is sent before those dates. A second deal's order
    cancelled at 20 March: its licences' ``deprovision`` dated 20 March; its unsent requests
    are cancelled."""
    acc, products, sub, order = _ordered(ledger, provisioner)
    lic = products["LIC"]
    with ledger.tx() as uow:
        [second] = amend_orders(uow, [AmendmentIn(acc, "sf:Q1:rev2", order, MAR20,
                                                  subscriptions=(SubscriptionItem(lic, 7, MAR1),))])
        assert isinstance(second, int), second
        [third] = amend_orders(uow, [AmendmentIn(
            acc, "sf:Q1:rev3", second, date(2026, 3, 25),
            subscriptions=(SubscriptionItem(products["SUPPORT"], 1, date(2026, 3, 25)),))])
        assert isinstance(third, int), third
        other = gate.accept_order(uow, licence_order(acc, "sf:Q2:rev1", 3, products, MAR1))
    assert _dispatch(ledger, provisioner) == [("provision", 3, None)]
    with ledger.tx() as uow:
        gate.cancel_order(uow, other, MAR20)
    assert _dispatch(ledger, provisioner) == []
    _at(clock, MAR20)
    assert sorted(_dispatch(ledger, provisioner), key=str) == [
        ("decrease", 7, MAR20), ("deprovision", 0, MAR20)]
    _at(clock, date(2026, 3, 25))
    assert _dispatch(ledger, provisioner) == [("deprovision", 0, date(2026, 3, 25))]
    assert [r[:2] for r in _requests(ledger, sub)] == [
        ("provision", "dispatched"), ("decrease", "dispatched"), ("deprovision", "dispatched")]


def test_an_order_cancelled_after_an_end_keeps_that_ends_deprovision(ledger, clock,
                                                                     provisioner) -> None:
    """Regression: the licences end on 20 March (a ``deprovision`` dated 20 March, queued);
    on 2 March the whole order is then cancelled at 25 March. The licences already end
    before 25 March, so the cancellation does not end them again, and cancelling the order's
    unsent requests took their queued ``deprovision`` with it: the receiver was never told.
    A cancellation stops what the order would still add (provisions, increases), not what
    reduces: the ``deprovision`` still goes on 20 March."""
    _, _, sub, order = _ordered(ledger, provisioner)
    with ledger.tx() as uow:
        gate.end_subscription(uow, sub, MAR20)
        gate.cancel_order(uow, order, date(2026, 3, 25))
    _at(clock, MAR20)
    assert _dispatch(ledger, provisioner) == [("deprovision", 0, MAR20)]


def test_a_held_order_with_an_end_cancelled_sends_nothing(ledger, clock, provisioner) -> None:
    """On hold, 3 licences ordered from 1 March to 1 May (exclusive): their ``provision``
    waits and their ``deprovision`` is queued for 1 May. The order is cancelled before it
    was ever activated: neither goes, on 1 May nor after the hold lifts."""
    acc, products, _, _ = _ordered(ledger, provisioner)
    with ledger.tx() as uow:
        place_manual_hold(uow, acc, "check", admin="fin")
    with ledger.tx() as uow:
        held = gate.accept_order(uow, OrderIn(acc, "sf:Q3:rev1", MAR1, subscriptions=[
            SubscriptionItem(products["LIC"], 3, MAR1, end_date=date(2026, 5, 1))]))
    pr = provisioning_requests
    with ledger.engine.connect() as conn:
        kinds = [(r.change_kind, r.state) for r in conn.execute(
            select(pr).where(pr.c.order_id == held).order_by(pr.c.id))]
    assert kinds == [("provision", "awaiting_hold_release"), ("deprovision", "pending")]
    with ledger.tx() as uow:
        gate.cancel_order(uow, held, MAR2)
    with ledger.tx() as uow:
        release_manual_hold(uow, acc, admin="fin")
    _at(clock, date(2026, 5, 1))
    assert _dispatch(ledger, provisioner) == []


def test_a_back_dated_change_after_a_later_one_was_sent_is_superseded(ledger, clock,
                                                                       provisioner) -> None:
    """Regression (found by the property test): the licences end on 2 March (sent: the
    receiver holds 0); then a change to 1 licence from 1 March is recorded. It only concerns
    1 March (billing credits that day's 9 licences), but its ``decrease`` to 1 was sent after
    the ``deprovision`` and left the receiver at 1 licence of a subscription that has ended.
    Likewise 8 from 10 March sent on 10 March, then 3 from 5 March recorded: the receiver
    keeps 8 (the quantity from 10 March on). Such a request is ``superseded``."""
    _, _, sub, _ = _ordered(ledger, provisioner)
    with ledger.tx() as uow:
        gate.end_subscription(uow, sub, MAR2)
    assert _dispatch(ledger, provisioner) == [("deprovision", 0, MAR2)]
    with ledger.tx() as uow:
        gate.change_quantity(uow, sub, 1, MAR1)
    assert _dispatch(ledger, provisioner) == []
    assert _requests(ledger, sub)[-1][:2] == ("decrease", "superseded")

    with ledger.tx() as uow:
        other = gate.accept_order(uow, licence_order(
            _requests_account(ledger, sub), "sf:Q4:rev1", 10, {"LIC": _lic_of(ledger, sub)},
            MAR1))
        second = uow.conn.execute(select(subscriptions.c.id).where(
            subscriptions.c.order_id == other)).scalar_one()
    _at(clock, date(2026, 3, 10))
    with ledger.tx() as uow:
        gate.change_quantity(uow, second, 8, date(2026, 3, 10))
    assert _dispatch(ledger, provisioner) == [("provision", 10, None),
                                              ("decrease", 8, date(2026, 3, 10))]
    with ledger.tx() as uow:
        gate.change_quantity(uow, second, 3, date(2026, 3, 5))
    assert _dispatch(ledger, provisioner) == []
    assert _requests(ledger, second)[-1][:2] == ("decrease", "superseded")


def _requests_account(ledger, sub: int) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(subscriptions.c.account_id).where(
            subscriptions.c.id == sub)).scalar_one())


def _lic_of(ledger, sub: int) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(subscriptions.c.product_id).where(
            subscriptions.c.id == sub)).scalar_one())
