"""The seed's story (Work 365 credit hold), end to end on SQLite and PostgreSQL.

A new account with a credit limit of 1,000 orders 1,200 of licences: exposure goes over the
limit, ``credit_limit`` is placed, provisioning waits, the invoice is still issued. A payment of
500 brings exposure to 700: the hold lifts by itself and provisioning is dispatched, once.
Finance then sets the CRM's hold flag: ``crm`` is placed and no payment lifts it; a new order
taken meanwhile is held (not billed, not provisioned). Finance clears the flag: the account is
released, the held order activates and its provisioning goes out.
"""
from __future__ import annotations

from datetime import timedelta

from credit_helpers import licence_order, make_account, make_products, post_invoice
from sqlalchemy import select

from billing_core.adapters.tables import orders, subscriptions
from billing_core.service.accounts import set_crm_hold
from billing_core.service.gate import accept_order
from billing_core.service.holds import current_reasons, history
from billing_core.service.payments import record_payment
from billing_core.service.provisioning import dispatch_pending


def test_credit_hold_story(ledger, clock, provisioner):
    today = clock.today
    acc, products = ledger.run(lambda u: (make_account(u, "NEW1", limit="1000.00"),
                                          make_products(u)))

    # 1. 12 licences at 100.00 = 1,200 against a limit of 1,000.
    start = today.replace(day=1)            # the bill period starts on the 1st: no proration
    order_id = ledger.run(lambda u: accept_order(
        u, licence_order(acc, "sf:Q1:rev1", 12, products, start, setup=True)))
    assert ledger.reasons(acc) == {"credit_limit"}
    assert ledger.request_states(acc) == ["awaiting_hold_release"] * 2
    with ledger.engine.connect() as conn:
        assert conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar() \
            == "active"   # taken in good standing: billed, but not provisioned
        placed = current_reasons(conn, acc)["credit_limit"]
    assert placed.source == "billing"
    assert placed.details["exposure_minor"] == 125000 and placed.details["limit_minor"] == 100000
    assert dispatch_pending(ledger.engine, provisioner, clock=clock).claimed == 0

    # The same quote handed off again is the same order: nothing new.
    again = ledger.run(lambda u: accept_order(
        u, licence_order(acc, "sf:Q1:rev1", 12, products, start, setup=True)))
    assert again == order_id and len(ledger.request_states(acc)) == 2

    # 2. The invoice is still issued (as the bill run posts it: 1,200 + 50 setup).
    ledger.run(lambda u: post_invoice(u, acc, 125000, issue=today, due=today + timedelta(30),
                                      bill_order_id=order_id))
    assert ledger.reasons(acc) == {"credit_limit"}

    # 3. A payment of 500: exposure 750 <= 1,000, the hold lifts by itself.
    ledger.run(lambda u: record_payment(u, acc, "500.00", reference="PAY-1", auto_apply=True))
    assert ledger.reasons(acc) == set()
    assert ledger.request_states(acc) == ["pending"] * 2
    report = dispatch_pending(ledger.engine, provisioner, clock=clock)
    assert report.dispatched and not report.failed
    assert [t.product_sku for t in provisioner.sent] == ["LIC", "SETUP"]
    assert dispatch_pending(ledger.engine, provisioner, clock=clock).claimed == 0
    assert len(provisioner.sent) == 2 and ledger.request_states(acc) == ["dispatched"] * 2

    # 4. Finance sets the CRM hold flag: 'crm', which no payment lifts.
    ledger.run(lambda u: set_crm_hold(u, acc, True))
    assert ledger.reasons(acc) == {"crm"}
    ledger.run(lambda u: record_payment(u, acc, "750.00", reference="PAY-2", auto_apply=True))
    assert ledger.reasons(acc) == {"crm"}

    # A new order while on hold is taken but not activated, billed or provisioned.
    held_id = ledger.run(lambda u: accept_order(
        u, licence_order(acc, "sf:Q2:rev1", 2, products, today)))
    with ledger.engine.connect() as conn:
        assert conn.execute(select(orders.c.status).where(orders.c.id == held_id)).scalar() \
            == "held"
        assert conn.execute(select(subscriptions.c.status).where(
            subscriptions.c.order_id == held_id)).scalar() == "pending"
    assert dispatch_pending(ledger.engine, provisioner, clock=clock).claimed == 0

    # 5. Finance clears the flag: released; the held order activates and is provisioned.
    clock.advance(1)
    ledger.run(lambda u: set_crm_hold(u, acc, False))
    assert ledger.reasons(acc) == set()
    with ledger.engine.connect() as conn:
        assert conn.execute(select(orders.c.status).where(orders.c.id == held_id)).scalar() \
            == "active"
        trail = [(h["reason"], h["action"], h["actor"]) for h in history(conn, acc)]
    dispatch_pending(ledger.engine, provisioner, clock=clock)
    assert len(provisioner.sent) == 3
    assert len({t.idempotency_key for t in provisioner.sent}) == 3
    assert trail == [("credit_limit", "placed", "billing"), ("credit_limit", "lifted", "billing"),
                     ("crm", "placed", "crm:local"), ("crm", "lifted", "crm:local")]
