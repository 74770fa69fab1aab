"""What the CRM is shown for the quote of an amendment (``views.order_views``): its deal's
provisioning and first invoice, on SQLite and PostgreSQL.

An amendment changes the first order's subscriptions and queues its provisioning requests
there; the amendment order itself has none. Its quote used to be shown "not required" while
the increase was still pending (regression). Case: 10 licences ordered from 1 March 2026 and
provisioned; revision 2 raises them to 12 from 20 March: the quote of revision 2 shows
``in progress`` until the increase is dispatched (on 20 March), then ``dispatched``; the first order's
quote shows the same deal.
"""
from __future__ import annotations

from datetime import UTC, date, datetime

from credit_helpers import licence_order, make_account, make_products
from sqlalchemy import select

from billing_core.adapters.tables import subscriptions
from billing_core.service import gate
from billing_core.service.amendments import AmendmentIn, amend_orders
from billing_core.service.holds import place_manual_hold
from billing_core.service.orders import SubscriptionItem
from billing_core.service.provisioning import dispatch_pending
from billing_core.service.views import order_views

MAR1, MAR20 = date(2026, 3, 1), date(2026, 3, 20)


def _views(ledger, *ids: int) -> dict[int, str]:
    with ledger.engine.connect() as conn:
        return {i: v.provisioning_status for i, v in order_views(conn, ids).items()}


def test_an_amendments_quote_shows_its_deals_pending_increase(ledger, clock,
                                                              provisioner) -> None:
    with ledger.tx() as uow:
        acc = make_account(uow)
        products = make_products(uow)
        first = gate.accept_order(uow, licence_order(acc, "sf:Q1:rev1", 10, products, MAR1))
    dispatch_pending(ledger.engine, provisioner, clock=ledger.clock)
    assert _views(ledger, first) == {first: "dispatched"}
    with ledger.tx() as uow:
        [second] = amend_orders(uow, [AmendmentIn(
            acc, "sf:Q1:rev2", first, MAR20,
            subscriptions=(SubscriptionItem(products["LIC"], 12, MAR1),))])
        assert isinstance(second, int), second
    assert _views(ledger, first, second) == {first: "in progress", second: "in progress"}
    clock.now = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)     # the increase is dated 20 March
    dispatch_pending(ledger.engine, provisioner, clock=ledger.clock)
    assert [(t.change_kind, int(t.quantity)) for t in provisioner.sent] == [
        ("provision", 10), ("increase", 12)]
    assert _views(ledger, second) == {second: "dispatched"}


def test_a_held_amendment_shows_its_deal_waiting_for_the_hold(ledger, provisioner) -> None:
    """The account on a manual hold before revision 2: the amendment waits (its order held,
    the increase awaiting release): its quote shows ``waiting for hold release``."""
    with ledger.tx() as uow:
        acc = make_account(uow)
        products = make_products(uow)
        first = gate.accept_order(uow, licence_order(acc, "sf:Q1:rev1", 10, products, MAR1))
    dispatch_pending(ledger.engine, provisioner, clock=ledger.clock)
    with ledger.tx() as uow:
        place_manual_hold(uow, acc, "checking", admin="finance")
        [second] = amend_orders(uow, [AmendmentIn(
            acc, "sf:Q1:rev2", first, MAR20,
            subscriptions=(SubscriptionItem(products["LIC"], 12, MAR1),))])
        assert isinstance(second, int), second
        assert uow.conn.execute(select(subscriptions.c.quantity).where(
            subscriptions.c.order_id == first)).scalar_one() == 10
    assert _views(ledger, second) == {second: "waiting for hold release"}
