"""Orders and subscriptions over HTTP (SQLite, then PostgreSQL): list and show, a quantity
change recorded out of date order, a cancellation, the scopes, an idempotent replay, and bad
input answered with the field and value."""
from __future__ import annotations

from datetime import date

from sqlalchemy import select

from billing_core.adapters.tables import subscription_changes
from billing_core.service.orders import OrderIn, SubscriptionItem, activate_order, place_order
from billing_core.service.pricing import ProductIn, add_product, set_price


def _order(api, account: int) -> tuple[int, int]:
    """An active order of 5 seats from 1 January 2026; (order id, subscription id)."""
    def make(uow):
        pid = add_product(uow, ProductIn(sku="SEAT", name="Seat", kind="recurring"))
        set_price(uow, pid, "USD", date(2020, 1, 1), "20.00")
        oid = place_order(uow, OrderIn(account, "sf:Q1", date(2026, 1, 1), subscriptions=[
            SubscriptionItem(pid, 5, date(2026, 1, 1))]))
        activate_order(uow, oid)
        return oid
    order_id = api.run(make)
    [sub] = api.get("/billing/subscriptions", params={"order_id": order_id}).json()["items"]
    return order_id, sub["id"]


def test_list_show_change_and_cancel(api, account):
    order_id, sub = _order(api, account)
    orders = api.get("/billing/orders", params={"account_id": account}).json()
    assert [(o["id"], o["status"], o["source_ref"]) for o in orders["items"]] == [
        (order_id, "active", "sf:Q1")]
    shown = api.get(f"/billing/orders/{order_id}").json()
    assert [(s["id"], s["quantity"], s["state"]) for s in shown["subscriptions"]] == [
        (sub, "5", "active")]

    r = api.post(f"/billing/subscriptions/{sub}:change-quantity",
                 {"quantity": "8", "effective_date": "2026-03-01"})
    assert r.status_code == 200, r.text
    r = api.post(f"/billing/subscriptions/{sub}:change-quantity",
                 {"quantity": "3", "effective_date": "2026-01-20"})
    # recorded second, dated first: the chain is 5 -> 3 (20 Jan) -> 8 (1 Mar)
    assert [(h["effective_date"], h["old_quantity"], h["new_quantity"])
            for h in r.json()["history"]] == [("2026-01-20", "5", "3"), ("2026-03-01", "3", "8")]
    assert r.json()["quantity"] == "8"

    r = api.post(f"/billing/subscriptions/{sub}:cancel", {"at": "2026-02-10"})
    assert r.status_code == 200, r.text
    assert (r.json()["end_date"], r.json()["state"], r.json()["quantity_today"]) == (
        "2026-02-10", "ended", "0")
    later = api.post(f"/billing/subscriptions/{sub}:cancel", {"at": "2026-06-01"})
    assert later.status_code == 409
    assert later.json()["error"] | {"message": None} == {
        "code": "invalid_state", "field": "at", "value": "2026-06-01", "message": None}
    ended = api.get("/billing/subscriptions", params={"state": "ended"}).json()["items"]
    assert [s["id"] for s in ended] == [sub]


def test_cancel_without_a_body_ends_today(api, account):
    _, sub = _order(api, account)
    r = api.post(f"/billing/subscriptions/{sub}:cancel")
    assert r.status_code == 200, r.text
    assert r.json()["end_date"] == api.run(lambda uow: uow.now().date().isoformat())


def test_scopes_idempotency_and_bad_input(api, account):
    _, sub = _order(api, account)
    path = f"/billing/subscriptions/{sub}:change-quantity"
    body = {"quantity": "7", "effective_date": "2026-02-01"}
    assert api.post(path, body, scope="billing:read").status_code == 403
    first = api.post(path, body, key="k-1")
    again = api.post(path, body, key="k-1")
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert api.read(lambda c: len(c.execute(select(subscription_changes)).all())) == 1

    for bad, field in (({"quantity": "-1", "effective_date": "2026-02-01"}, "quantity"),
                       ({"quantity": "abc", "effective_date": "2026-02-01"}, "quantity"),
                       ({"quantity": "2", "effective_date": "2026-02-30"}, "effective_date"),
                       ({"quantity": "2"}, "effective_date")):
        r = api.post(path, bad)
        assert r.status_code == 422, r.text
        assert field in r.json()["error"]["field"]
    r = api.post(path, {"quantity": "2", "effective_date": "2025-12-31"})   # before the start
    assert r.status_code == 422
    assert (r.json()["error"]["field"], r.json()["error"]["value"]) == (
        "effective_date", "2025-12-31")
    assert api.get("/billing/subscriptions/999").status_code == 404
    assert api.post("/billing/subscriptions/999:cancel", {}).status_code == 404
    assert api.get("/billing/orders/0").status_code == 422
    assert api.get("/billing/orders", params={"status": "bogus"}).status_code == 422
