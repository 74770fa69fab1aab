"""Credit memos, debit memos and invoices over HTTP: success, bad input (422 naming the field),
unknown ids (404), ledger rules (409 with the CLI's code), per-item batches that never
half-apply an item, and cursor pagination."""
from __future__ import annotations

from api_helpers import doc, make_account, post_invoice


def _memo(api, account, amount="40.00", activate=True):
    r = api.post("/billing/credit-memos", {"account_id": account, "amount": amount,
                                            "reason": "goodwill", "activate": activate})
    assert r.status_code == 201, r.text
    return r.json()


def test_create_show_and_list_credit_memos(api, account):
    draft = _memo(api, account, "12.50", activate=False)
    assert draft["status"] == "draft" and draft["number"] is None
    assert draft["amount"] == "12.50" and draft["currency"] == "USD"
    active = _memo(api, account)
    assert active["status"] == "active" and active["number"] == "CM-000001"
    assert api.get("/billing/credit-memos/CM-000001").json()["id"] == active["id"]
    assert api.get(f"/billing/credit-memos/{draft['id']}").json()["status"] == "draft"
    listed = api.get("/billing/credit-memos", params={"account_id": account,
                                                      "status": "active"}).json()
    assert [m["id"] for m in listed["items"]] == [active["id"]]


def test_list_pages_with_a_cursor(api, account):
    ids = [_memo(api, account, f"{i}.00")["id"] for i in range(1, 6)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = api.get("/billing/credit-memos", params=params).json()
        seen += [m["id"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    bad = api.get("/billing/credit-memos", params={"cursor": "bm9wZQ"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"


def test_bad_input_names_the_field(api, account):
    r = api.post("/billing/credit-memos", {"account_id": account, "amount": 12.5,
                                           "reason": "x"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "body.amount"
    r = api.post("/billing/credit-memos", {"account_id": account, "amount": "1.005",
                                           "reason": "x"})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid_amount", "field": "amount", "value": "1.005",
                                 "message": "amount='1.005': has more decimals than USD "
                                            "allows (2)"}
    r = api.post("/billing/credit-memos", {"account_id": account, "amount": "1.00"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.reason"
    r = api.post("/billing/credit-memos", {"account_id": account, "amount": "1.00",
                                           "reason": "x", "currency": "EUR"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "currency_mismatch"
    r = api.client.post("/billing/credit-memos", content=b"{not json",
                        headers={**api.headers("billing:write"),
                                 "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"
    r = api.post("/billing/credit-memos:cancel", {"credit_memos": []})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.credit_memos"


def test_unknown_ids_are_404(api, account):
    assert api.post("/billing/credit-memos", {"account_id": 999, "amount": "1.00",
                                              "reason": "x"}).status_code == 404
    r = api.get("/billing/credit-memos/CM-999999")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert api.get("/billing/debit-memos/77").status_code == 404
    assert api.get("/billing/invoices/INV-000404").status_code == 404


def test_apply_unapply_and_cancel_answer_per_item(api, account, invoice):
    memo = _memo(api, account, "60.00")
    r = api.post("/billing/credit-memos:apply", {"items": [
        {"credit_memo": memo["number"], "applications": [
            {"target": "INV-000001", "amount": "40.00"}]},
        # more than the memo has left: this item fails, the first stays applied
        {"credit_memo": memo["number"], "applications": [
            {"target": "INV-000001", "amount": "10.00"},
            {"target": "INV-000001", "amount": "30.00"}]},
    ]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["ok"] and first["result"]["balance"] == "20.00"
    assert first["result"]["status"] == "partially_applied"
    assert not second["ok"] and second["error"]["code"] == "insufficient_balance"
    assert r.json()["succeeded"] == 1 and r.json()["failed"] == 1
    # the failed item changed nothing (not even its first 10.00)
    assert doc(api, "invoice", invoice)["applied_minor"] == 4000
    assert doc(api, "credit_memo", memo["id"])["applied_minor"] == 4000

    # cancelling an applied memo is the CLI's invalid_state, per item
    r = api.post("/billing/credit-memos:cancel", {"credit_memos": [memo["number"]]})
    assert r.json()["results"][0]["error"]["code"] == "invalid_state"

    r = api.post("/billing/credit-memos:unapply", {"items": [{"credit_memo": memo["number"]}]})
    assert r.json()["results"][0]["result"]["applied"] == "0.00"
    assert doc(api, "invoice", invoice)["applied_minor"] == 0
    r = api.post("/billing/credit-memos:cancel", {"credit_memos": [memo["number"], "404"]})
    ok, missing = r.json()["results"]
    assert ok["result"]["status"] == "cancelled"
    assert missing["error"] == {"code": "not_found", "field": "credit_memo", "value": "404",
                                "message": "credit_memo='404': does not exist"}


def test_activate_credit_memos_numbers_them(api, account):
    drafts = [_memo(api, account, "5.00", activate=False)["id"] for _ in range(2)]
    r = api.post("/billing/credit-memos:activate", {"credit_memos": [str(i) for i in drafts]})
    assert [x["result"]["number"] for x in r.json()["results"]] == ["CM-000001", "CM-000002"]
    again = api.post("/billing/credit-memos:activate", {"credit_memos": [str(drafts[0])]})
    assert again.json()["results"][0]["error"]["code"] == "invalid_state"


def test_debit_memos_lifecycle(api, account):
    r = api.post("/billing/debit-memos", {"account_id": account, "amount": "30.00",
                                          "reason": "late fee"})
    assert r.status_code == 201 and r.json()["status"] == "draft"
    memo_id = r.json()["id"]
    r = api.post("/billing/debit-memos:activate", {"debit_memos": [str(memo_id)]})
    active = r.json()["results"][0]["result"]
    assert active["number"] == "DM-000001" and active["due_date"] is not None
    listed = api.get("/billing/debit-memos", params={"account_id": account}).json()
    assert [m["number"] for m in listed["items"]] == ["DM-000001"]
    assert api.get("/billing/debit-memos/DM-000001").json()["balance"] == "30.00"
    r = api.post("/billing/debit-memos:cancel", {"debit_memos": ["DM-000001", "DM-000001"]})
    first, second = r.json()["results"]
    assert first["result"]["status"] == "cancelled"
    assert second["error"]["code"] == "invalid_state"


def test_void_invoices_per_item(api, account, invoice):
    other = api.run(lambda uow: post_invoice(uow, account, 5000))     # the latest invoice
    memo = _memo(api, account, "10.00")
    api.post("/billing/credit-memos:apply", {"items": [{"credit_memo": memo["number"],
             "applications": [{"target": f"invoice:{other}", "amount": "10.00"}]}]})
    r = api.post("/billing/invoices:void", {"invoices": [str(other)]})
    assert r.json()["results"][0]["error"]["code"] == "invalid_state"    # something applied
    api.post("/billing/credit-memos:unapply", {"items": [{"credit_memo": memo["number"]}]})
    r = api.post("/billing/invoices:void", {"invoices": [str(other), "INV-000001"]})
    assert [x["result"]["status"] for x in r.json()["results"]] == ["void", "void"]
    again = api.post("/billing/invoices:void", {"invoices": ["INV-000001", "INV-404"]})
    refused, missing = again.json()["results"]
    assert refused["error"]["code"] == "invalid_state"
    assert missing["error"]["code"] == "not_found"
    assert api.get("/billing/invoices/INV-000001").json()["status"] == "void"


def test_other_accounts_documents_are_refused(api, account, invoice):
    other = api.run(lambda uow: make_account(uow, "ACC2"))
    memo = api.post("/billing/credit-memos", {"account_id": other, "amount": "5.00",
                                              "reason": "x", "activate": True}).json()
    r = api.post("/billing/credit-memos:apply", {"items": [{"credit_memo": memo["number"],
                 "applications": [{"target": "INV-000001", "amount": "5.00"}]}]})
    assert r.json()["results"][0]["error"]["code"] == "rule_violation"
