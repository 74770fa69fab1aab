"""Credit control over HTTP: the hold answer (reasons, exposure, limit, history), manual holds
(admin only; other reasons refused with the rule that clears them), the provisioning list, and
the story the issue asks for: a payment posted through the API lifts a limit hold and releases
provisioning, in the same transaction."""
from __future__ import annotations

from datetime import date, timedelta

from api_helpers import make_account, post_invoice
from sqlalchemy import select

from billing_core.adapters.tables import hold_reasons, provisioning_requests
from billing_core.service.gate import accept_order
from billing_core.service.orders import OneTimeItem, OrderIn, SubscriptionItem
from billing_core.service.pricing import ProductIn, add_product, set_price


def _licences(uow, account_id: int, quantity: int) -> int:
    lic = add_product(uow, ProductIn(sku="LIC", name="Licence", needs_provisioning=True))
    setup = add_product(uow, ProductIn(sku="SETUP", name="Setup", kind="one_time",
                                       needs_provisioning=True))
    set_price(uow, lic, "USD", date(2020, 1, 1), "100")
    set_price(uow, setup, "USD", date(2020, 1, 1), "50")
    today = uow.now().date()
    return accept_order(uow, OrderIn(
        account_id=account_id, source_ref="sf:Q1:rev1", order_date=today,
        subscriptions=[SubscriptionItem(lic, quantity, today)],
        one_time_charges=[OneTimeItem(setup, 1, today)]))


def _states(api, account_id):
    return api.read(lambda c: [r[0] for r in c.execute(
        select(provisioning_requests.c.state).where(
            provisioning_requests.c.account_id == account_id)
        .order_by(provisioning_requests.c.id))])


def test_payment_through_the_api_lifts_a_limit_hold_and_releases_provisioning(api):
    acc = api.run(lambda uow: make_account(uow, "NEW1", limit="1000.00"))
    api.run(lambda uow: _licences(uow, acc, 12))            # 1,250.00 against 1,000.00
    hold = api.get(f"/accounts/{acc}/hold").json()
    assert hold["on_hold"] and [r["reason"] for r in hold["reasons"]] == ["credit_limit"]
    assert hold["exposure"] == "1250.00" and hold["credit_limit"] == "1000.00"
    assert hold["available_credit"] == "-250.00"
    waiting = api.get("/provisioning", params={"state": "awaiting_hold_release"}).json()
    assert len(waiting["items"]) == 2

    # The bill run posts the invoice (made straight in the schema here).
    def bill(uow):
        from sqlalchemy import update

        from billing_core.adapters.tables import one_time_charges, subscriptions
        invoice_id = post_invoice(uow, acc, 125000, due=uow.now().date() + timedelta(30))
        uow.conn.execute(update(subscriptions).where(subscriptions.c.account_id == acc)
                         .values(billed_through=uow.now().date() + timedelta(30)))
        uow.conn.execute(update(one_time_charges).where(one_time_charges.c.account_id == acc)
                         .values(invoice_id=invoice_id))
    api.run(bill)

    r = api.post("/billing/payments", {"account_id": acc, "amount": "500.00",
                                       "reference": "pi_story", "auto_apply": True},
                 key="story-1")
    assert r.status_code == 201, r.text
    assert api.read(lambda c: c.execute(select(hold_reasons).where(
        hold_reasons.c.account_id == acc)).all()) == []
    assert _states(api, acc) == ["pending", "pending"]
    hold = api.get(f"/accounts/{acc}/hold").json()
    assert not hold["on_hold"] and hold["exposure"] == "750.00"
    assert [(h["reason"], h["action"]) for h in hold["history"]] == [
        ("credit_limit", "placed"), ("credit_limit", "lifted")]
    assert api.get("/provisioning", params={"state": "pending"}).json()["items"][0][
        "state"] == "pending"


def test_manual_hold_place_and_release(api, account):
    r = api.post(f"/accounts/{account}/hold:place", {"note": "disputed"}, scope="admin")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["on_hold"] and body["reasons"][0]["source"] == "admin:test-admin"
    again = api.post(f"/accounts/{account}/hold:place", {"note": "again"}, scope="admin")
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
    r = api.post(f"/accounts/{account}/hold:release", {"reason": "crm"}, scope="admin")
    assert r.status_code == 409 and r.json()["error"]["code"] == "rule_violation"
    assert "only the CRM clears it" in r.json()["error"]["message"]
    r = api.post(f"/accounts/{account}/hold:release", {}, scope="admin")
    assert r.status_code == 200 and not r.json()["on_hold"]
    assert [h["action"] for h in r.json()["history"]] == ["placed", "lifted"]
    r = api.post(f"/accounts/{account}/hold:release", {}, scope="admin")
    assert r.status_code == 409


def test_hold_bad_input_and_unknown_accounts(api, account):
    r = api.post(f"/accounts/{account}/hold:place", {"note": ""}, scope="admin")
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.note"
    r = api.post(f"/accounts/{account}/hold:release", {"reason": "bogus"}, scope="admin")
    assert r.status_code == 422 and r.json()["error"]["field"] == "reason"
    assert api.get("/accounts/404/hold").status_code == 404
    assert api.get("/accounts/ACC1/hold").json()["account_id"] == account   # by CRM id
    r = api.post("/accounts/404/hold:place", {"note": "x"}, scope="admin")
    assert r.status_code == 404


def test_provisioning_list_filters_and_pages(api):
    acc = api.run(lambda uow: make_account(uow, "P1"))
    api.run(lambda uow: _licences(uow, acc, 1))
    everything = api.get("/provisioning").json()["items"]
    assert [p["state"] for p in everything] == ["pending", "pending"]
    first = api.get("/provisioning", params={"limit": 1}).json()
    rest = api.get("/provisioning", params={"cursor": first["next_cursor"]}).json()
    assert [p["id"] for p in first["items"] + rest["items"]] == [p["id"] for p in everything]
    r = api.get("/provisioning", params={"state": "bogus"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "state"


def test_retry_a_failed_provisioning_request(api):
    from sqlalchemy import update

    acc = api.run(lambda uow: make_account(uow, "P2"))
    api.run(lambda uow: _licences(uow, acc, 1))
    first = api.get("/provisioning").json()["items"][0]["id"]
    r = api.post(f"/provisioning/{first}:retry", {}, scope="admin")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"
    api.run(lambda uow: uow.conn.execute(update(provisioning_requests).where(
        provisioning_requests.c.id == first).values(state="failed", last_error="timeout")))
    r = api.post(f"/provisioning/{first}:retry", {}, scope="admin")
    assert r.status_code == 200 and r.json()["state"] == "pending"
    assert api.post("/provisioning/999:retry", {}, scope="admin").status_code == 404
    assert api.post(f"/provisioning/{first}:retry", {}, scope="billing:write").status_code == 403


def test_the_provisioning_system_confirms_a_dispatched_request(api):
    from sqlalchemy import update

    acc = api.run(lambda uow: make_account(uow, "P3"))
    api.run(lambda uow: _licences(uow, acc, 1))
    first = api.get("/provisioning").json()["items"][0]["id"]
    r = api.post(f"/provisioning/{first}:provisioned", {})
    assert r.status_code == 409 and "pending" in r.json()["error"]["message"]
    api.run(lambda uow: uow.conn.execute(update(provisioning_requests).where(
        provisioning_requests.c.id == first).values(state="dispatched")))
    r = api.post(f"/provisioning/{first}:provisioned", {})
    assert r.status_code == 200 and r.json()["state"] == "provisioned"
    assert api.post(f"/provisioning/{first}:provisioned", {}).json()["state"] == "provisioned"
    assert api.post("/provisioning/999:provisioned", {}).status_code == 404
    assert api.post(f"/provisioning/{first}:provisioned", {},
                    scope="billing:read").status_code == 403
    assert [p["state"] for p in api.get("/provisioning").json()["items"]] == [
        "provisioned", "pending"]


def test_hold_answer_exposure_follows_include_unbilled_orders(engine):
    """CREDIT_CONTROL 'Exposure': unbilled orders count only with ``include_unbilled_orders``.
    Turned off, limit 1,000.00: an invoice of 500.00 and an order of 12 x 100.00 + 50.00 not
    billed yet. Credit control holds nothing (exposure 500.00), and the hold answer says the
    same: exposure 500.00, available 500.00 (not 1,750.00 and -750.00)."""
    from api_helpers import Api, FakeSyncRunner, SchedulerState, TestClient

    from billing_core.domain.credit import CreditPolicy
    from billing_core.service import ledger_uow
    from config.settings import Settings
    from jobs.api.app import build_app
    from jobs.api.auth import create_token

    policy = CreditPolicy(include_unbilled_orders=False)
    with ledger_uow(engine, policy=policy) as uow:
        _, token = create_token(uow, "test-read", ["billing:read"])
        acc = make_account(uow, "NOUNB", limit="1000.00")
        post_invoice(uow, acc, 50000)
        _licences(uow, acc, 12)
        uow.commit()
    app = build_app(engine, Settings(credit=policy), sync_runner=FakeSyncRunner(),
                    scheduler_state=SchedulerState())
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, engine, {"billing:read": token}, FakeSyncRunner(), SchedulerState())
        hold = api.get(f"/accounts/{acc}/hold").json()
    assert not hold["on_hold"]
    assert (hold["exposure"], hold["credit_limit"], hold["available_credit"]) == (
        "500.00", "1000.00", "500.00")
