"""Provisioning requests over HTTP name the change and its date (SQLite and PostgreSQL):
``GET /provisioning`` shows a quantity change's ``increase`` / ``decrease`` request dated by
the change, and an end's ``deprovision`` (quantity 0); a future-dated one stays ``pending``."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import select

from billing_core.adapters.tables import subscriptions
from billing_core.service import gate
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.pricing import ProductIn, add_product, set_price


def test_requests_show_change_kind_and_effective_date(api, account) -> None:
    """5 licences from 1 March 2026; 8 from 1 January 2099 (an increase, dated then);
    an end on 1 February 2099 (a deprovision, quantity 0, dated then)."""
    def setup(uow) -> int:
        lic = add_product(uow, ProductIn(sku="LIC", name="Licence", needs_provisioning=True))
        set_price(uow, lic, "USD", date(2020, 1, 1), "100")
        order = gate.accept_order(uow, OrderIn(account, "q1", date(2026, 3, 1), subscriptions=[
            SubscriptionItem(lic, 5, date(2026, 3, 1))]))
        sub = int(uow.conn.execute(select(subscriptions.c.id).where(
            subscriptions.c.order_id == order)).scalar_one())
        gate.change_quantity(uow, sub, 8, date(2099, 1, 1))
        gate.end_subscription(uow, sub, date(2099, 2, 1))
        return sub
    sub = int(api.run(setup))
    items = api.get("/provisioning").json()["items"]
    assert [(r["change_kind"], Decimal(r["quantity"]), r["effective_date"],
             r["subscription_id"], r["state"]) for r in items] == [
        ("provision", 5, None, sub, "pending"),
        ("increase", 8, "2099-01-01", sub, "pending"),
        ("deprovision", 0, "2099-02-01", sub, "pending")]
