"""The gate decides with the unit of work's credit policy.

Regression: the sync's hand-off called ``accept_order`` without a policy, so the gate judged
the account by the default policy while the commit hook used the configured one: an order that
the configured policy holds was activated (billing started) before the hook placed the hold.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal

from credit_helpers import licence_order, make_account, make_products, post_invoice
from sqlalchemy import select

from billing_core.adapters.tables import orders
from billing_core.domain.credit import CreditPolicy
from billing_core.service import ledger_uow
from billing_core.service.gate import accept_order


def test_accept_order_uses_the_policy_of_its_unit_of_work(engine) -> None:
    strict = CreditPolicy(limit_threshold=Decimal("0.5"), include_unbilled_orders=False)
    with ledger_uow(engine, policy=strict) as uow:
        account = make_account(uow, limit="1000.00")
        products = make_products(uow)
        # 600.00 owed, not yet due: under the limit by default, over 1000 x 0.5
        post_invoice(uow, account, 60000, issue=date(2026, 11, 1), due=date(2026, 12, 1))
        uow.commit()
    with ledger_uow(engine, policy=strict) as uow:
        order = accept_order(uow, licence_order(account, "q1", 1, products, date(2026, 11, 20)))
        uow.commit()
    with engine.connect() as conn:
        status = conn.execute(select(orders.c.status).where(orders.c.id == order)).scalar_one()
    assert status == "held"
