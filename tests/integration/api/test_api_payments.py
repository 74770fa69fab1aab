"""Payments and credits over HTTP: record (duplicate reference is 409), apply named or
oldest-first, per-item answers; credit grants and conversions both ways."""
from __future__ import annotations

from api_helpers import doc, post_invoice


def test_record_and_auto_apply_a_payment(api, account, invoice):
    r = api.post("/billing/payments", {"account_id": account, "amount": "150.00",
                                       "currency": "USD", "reference": "pi_1",
                                       "method": "card", "auto_apply": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["type"] == "payment" and body["applied"] == "100.00"
    assert body["balance"] == "50.00" and body["status"] == "partially_applied"
    assert doc(api, "invoice", invoice)["status"] == "paid"
    assert api.get(f"/billing/payments/{body['id']}").json()["reference"] == "pi_1"
    assert api.get("/billing/payments/pi_1").json()["id"] == body["id"]
    listed = api.get("/billing/payments", params={"account_id": account}).json()
    assert [p["id"] for p in listed["items"]] == [body["id"]]


def test_duplicate_reference_and_bad_input(api, account):
    payment = {"account_id": account, "amount": "10.00", "reference": "pi_2"}
    assert api.post("/billing/payments", payment).status_code == 201
    r = api.post("/billing/payments", payment)
    assert r.status_code == 409 and r.json()["error"] == {
        "code": "duplicate", "field": "reference", "value": "pi_2",
        "message": "reference='pi_2': already exists"}
    r = api.post("/billing/payments", {**payment, "reference": "pi_3", "amount": "-1"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.amount"
    r = api.post("/billing/payments", {**payment, "reference": "pi_3", "currency": "usd"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.currency"
    r = api.post("/billing/payments", {**payment, "reference": "pi_3", "received_on": "soon"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.received_on"
    r = api.post("/billing/payments", {**payment, "reference": "pi_3", "tip": "1.00"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.tip"
    assert api.post("/billing/payments", {**payment, "account_id": 404}).status_code == 404


def test_apply_payments_named_and_oldest_first(api, account, invoice):
    second = api.run(lambda uow: post_invoice(uow, account, 3000))
    pay = api.post("/billing/payments", {"account_id": account, "amount": "120.00",
                                         "reference": "pi_4"}).json()
    r = api.post("/billing/payments:apply", {"items": [
        {"payment": str(pay["id"]),
         "applications": [{"target": f"invoice:{second}", "amount": "30.00"}]},
        {"payment": "pi_4", "applications": [{"target": "INV-000001", "amount": "999.00"}]},
        {"payment": "pi_4"},
    ]})
    assert r.status_code == 200, r.text
    named, too_much, oldest = r.json()["results"]
    assert named["ok"] and named["result"]["applied"] == "30.00"
    assert too_much["error"]["code"] == "insufficient_balance"
    assert oldest["ok"] and oldest["result"]["applied"] == "120.00"
    assert doc(api, "invoice", invoice)["applied_minor"] == 9000
    missing = api.post("/billing/payments:apply", {"items": [{"payment": "pi_missing"}]})
    assert missing.json()["results"][0]["error"]["code"] == "not_found"


def test_grant_and_convert_credits_both_ways(api, account):
    r = api.post("/billing/credits:grant", {"account_id": account, "amount": "50.00",
                                            "kind": "granted", "reason": "referral"})
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["remaining"] == "50.00" and grant["kind"] == "granted"
    r = api.post("/billing/credits:convert", {"grant_id": grant["id"], "amount": "20.00"})
    assert r.status_code == 200, r.text
    memo = r.json()["credit_memo"]
    assert memo["status"] == "active" and memo["amount"] == "20.00"
    assert memo["origin"] == "credit_conversion"
    r = api.post("/billing/credits:convert", {"credit_memo": memo["number"], "amount": "5.00"})
    back = r.json()["grant"]
    assert back["kind"] == "memo_return" and back["amount"] == "5.00"
    pool = api.get("/billing/credits", params={"account_id": account}).json()
    assert pool["balance"] == "35.00" and len(pool["grants"]) == 2
    r = api.post("/billing/credits:convert", {"grant_id": grant["id"], "amount": "31.00"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "insufficient_balance"
    r = api.post("/billing/credits:convert", {"amount": "1.00"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "grant_id"
    r = api.post("/billing/credits:convert", {"grant_id": 999})
    assert r.status_code == 404
    r = api.post("/billing/credits:grant", {"account_id": account, "amount": "5.00",
                                            "kind": "stolen", "reason": "x"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.kind"


def test_payments_list_pages_with_a_cursor(api, account):
    ids = []
    for i in range(1, 6):
        r = api.post("/billing/payments", {"account_id": account, "amount": f"{i}.00",
                                           "reference": f"page_{i}"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, "account_id": account} | ({"cursor": cursor} if cursor else {})
        body = api.get("/billing/payments", params=params).json()
        seen += [p["id"] for p in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
