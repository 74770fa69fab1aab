"""``gate.accept_orders``: a batch decides each order as one at a time would, answers each
order with its id or its own error, and writes nothing of a refused order."""
from __future__ import annotations

from credit_helpers import licence_order, make_account, make_products
from sqlalchemy import func, select

from billing_core.adapters.tables import orders, provisioning_requests, subscriptions
from billing_core.domain.errors import LedgerError, NotFound, ValidationError
from billing_core.service.gate import accept_order, accept_orders
from billing_core.service.orders import OrderIn, SubscriptionItem


def _status(ledger, order_id: int) -> str:
    with ledger.engine.connect() as conn:
        return conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar_one()


def _count(ledger, table) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_batch_decides_each_order_as_one_at_a_time_would(ledger, clock):
    day = clock.today.replace(day=1)
    limited, free, flagged, products = ledger.run(lambda u: (
        make_account(u, "LIM", limit="1000.00"), make_account(u, "FREE"),
        make_account(u, "FLAG", crm_hold=True), make_products(u)))
    known = ledger.run(lambda u: accept_order(
        u, licence_order(free, "sf:Q0:rev1", 1, products, day)))
    batch = [
        licence_order(limited, "sf:Q1:rev1", 12, products, day),    # good standing: active
        licence_order(free, "sf:Q2:rev1", 3, products, day, setup=True),
        OrderIn(account_id=free, source_ref="sf:BAD:rev1", order_date=day,
                subscriptions=[SubscriptionItem(999_999, 1, day)]),  # unknown product
        licence_order(limited, "sf:Q3:rev1", 5, products, day),     # now over 1,000: held
        licence_order(flagged, "sf:Q4:rev1", 1, products, day),     # CRM hold: held
        licence_order(free, "sf:Q2:rev1", 3, products, day, setup=True),   # repeat in batch
        licence_order(free, "sf:Q0:rev1", 1, products, day),        # known before
        OrderIn(account_id=424_242, source_ref="sf:Q5:rev1", order_date=day,
                subscriptions=[SubscriptionItem(products["LIC"], 1, day)]),  # unknown account
        licence_order(free, " ", 1, products, day),                 # no reference
    ]
    results = ledger.run(lambda u: accept_orders(u, batch))

    q1, q2, bad, q3, q4, again, old, stranger, blank = results
    assert isinstance(bad, NotFound) and "999999" in str(bad)
    assert isinstance(stranger, NotFound) and "424242" in str(stranger)
    assert isinstance(blank, ValidationError) and blank.field == "source_ref"
    assert again == q2 and old == known
    assert not any(isinstance(r, LedgerError) for r in (q1, q2, q3, q4))
    assert [_status(ledger, o) for o in (q1, q2, q3, q4)] == ["active", "active", "held", "held"]
    # the first order (1,200) put the account over its limit before the second was decided
    assert ledger.reasons(limited) == {"credit_limit"}
    assert ledger.reasons(flagged) == {"crm"}
    # nothing of the refused orders was written: 5 orders, 5 licence lines
    assert _count(ledger, orders) == 5 and _count(ledger, subscriptions) == 5
    assert ledger.request_states(free) == ["pending", "pending", "pending"]
    assert ledger.request_states(limited) == ["awaiting_hold_release"] * 2
    assert ledger.request_states(flagged) == ["awaiting_hold_release"]


def test_requests_are_created_in_the_order_one_at_a_time_creates_them(ledger, clock):
    """Dispatch releases requests in id order: per order, subscriptions before charges."""
    day = clock.today.replace(day=1)
    a, b, products = ledger.run(lambda u: (make_account(u, "A"), make_account(u, "B"),
                                           make_products(u)))
    ids = ledger.run(lambda u: accept_orders(u, [
        licence_order(a, "sf:A1:rev1", 1, products, day, setup=True),
        licence_order(b, "sf:B1:rev1", 2, products, day, setup=True),
        licence_order(a, "sf:A2:rev1", 3, products, day)]))
    with ledger.engine.connect() as conn:
        made = conn.execute(select(
            provisioning_requests.c.order_id, provisioning_requests.c.subscription_id.is_(None),
            provisioning_requests.c.quantity).order_by(provisioning_requests.c.id)).all()
    assert [(o, charge, int(q)) for o, charge, q in made] == [
        (ids[0], False, 1), (ids[0], True, 1), (ids[1], False, 2), (ids[1], True, 1),
        (ids[2], False, 3)]
