"""A renewal's provisioning (regression: it provisioned the new term at once and never
deprovisioned the renewed one, so a receiver keyed by subscription held both), on SQLite and
PostgreSQL.

Case: 10 licences (``LIC``, monthly, no term, needs provisioning) ordered from 1 March 2026,
provisioned on 2 March; a renewal order recorded on 2 March starts 1 April with 12 licences.
The renewed licences end on 1 April: their ``deprovision`` (quantity 0) is dated 1 April; the
renewal's ``provision`` of 12 is dated 1 April too. Nothing goes on 2 or 31 March; on 1 April
both go, the old term's end and the new term's start.
"""
from __future__ import annotations

from datetime import UTC, date, datetime

from credit_helpers import licence_order, make_account, make_products
from sqlalchemy import select

from billing_core.adapters.tables import provisioning_requests as pr
from billing_core.adapters.tables import subscriptions
from billing_core.service import gate
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.provisioning import dispatch_pending

MAR1, APR1 = date(2026, 3, 1), date(2026, 4, 1)


def _dispatch(ledger, clock, provisioner, day: date) -> list[tuple[str, int, int | None]]:
    clock.now = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)
    before = len(provisioner.sent)
    dispatch_pending(ledger.engine, provisioner, clock=ledger.clock)
    return sorted((t.change_kind, int(t.quantity), t.order_id) for t in provisioner.sent[before:])


def test_a_renewal_ends_the_old_term_and_starts_the_new_on_the_same_day(
        ledger, clock, provisioner) -> None:
    with ledger.tx() as uow:
        acc = make_account(uow)
        products = make_products(uow)
        first = gate.accept_order(uow, licence_order(acc, "sf:Q1:rev1", 10, products, MAR1))
    assert _dispatch(ledger, clock, provisioner, date(2026, 3, 2)) == [("provision", 10, first)]
    with ledger.tx() as uow:
        renewal = gate.accept_order(uow, OrderIn(
            account_id=acc, source_ref="sf:Q2:rev1", order_date=APR1,
            subscriptions=(SubscriptionItem(products["LIC"], 12, APR1),),
            renews_order_id=first))
        old_end = uow.conn.execute(select(subscriptions.c.end_date).where(
            subscriptions.c.order_id == first)).scalar_one()
    assert old_end == APR1
    assert _dispatch(ledger, clock, provisioner, date(2026, 3, 2)) == []
    assert _dispatch(ledger, clock, provisioner, date(2026, 3, 31)) == []
    assert _dispatch(ledger, clock, provisioner, APR1) == [
        ("deprovision", 0, first), ("provision", 12, renewal)]
    with ledger.engine.connect() as conn:
        dated = sorted([(r.change_kind, r.effective_date) for r in conn.execute(
            select(pr.c.change_kind, pr.c.effective_date).where(pr.c.state != "cancelled"))],
            key=str)
    assert dated == [("deprovision", APR1), ("provision", None), ("provision", APR1)]
