"""Finance's hand on the ledger over HTTP (issue 14, item 7), on SQLite and PostgreSQL: the
invoice with its lines, tax per rate with its base, credits drawn and applications; part of a
credit memo unapplied; a dated debit memo; an account's terms. Bad input is a 422 naming the
field, an unknown account a 404.

Figures (bill date 1 March 2027, US at 8.25 %): 5 seats at 20.00 for March, 100.00; 1,000 API
calls at 0.10 in February, 100.00; a 30.00 prepaid grant pays 30.00 of the usage. Taxable base
100.00 + 100.00 - 30.00 = 170.00, tax round(14.025) = 14.03, total 184.03.
"""
from __future__ import annotations

from datetime import date

from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.bill_run import run_bill_run
from billing_core.service.credits import grant_credits
from billing_core.service.orders import OrderIn, SubscriptionItem, activate_order, place_order
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.tax import set_tax_rate
from billing_core.service.usage import import_usage

MAR1 = date(2027, 3, 1)


def _billed(api) -> int:
    def setup(uow) -> int:
        since = date(2020, 1, 1)
        set_tax_rate(uow, "US", "", "0.0825", since)
        acc = create_account(uow, AccountIn(name="Acme", currency="USD", ext_id="A1",
                                            country="US"))
        seat = add_product(uow, ProductIn(sku="SEAT", name="Seat"))
        calls = add_product(uow, ProductIn(sku="API", name="API calls", kind="usage"))
        set_price(uow, seat, "USD", since, "20.00")
        set_price(uow, calls, "USD", since, "0.10")
        order = place_order(uow, OrderIn(acc, "q1", MAR1, subscriptions=[
            SubscriptionItem(seat, 5, MAR1)]))
        activate_order(uow, order)
        import_usage(uow, [{"event_id": "e1", "account": str(acc), "product": "API",
                            "quantity": "1000", "occurred_at": "2027-02-10T12:00:00Z"}])
        grant_credits(uow, acc, "30.00", reason="prepaid")
        return acc
    acc = int(api.run(setup))
    assert run_bill_run(api.engine, MAR1).invoices_created == 1
    return acc


def test_the_invoice_has_its_lines_taxes_credits_and_applications(api) -> None:
    acc = _billed(api)
    r = api.post("/billing/credit-memos", {"account_id": acc, "amount": "50.00",
                                           "reason": "goodwill", "activate": True})
    assert r.status_code == 201, r.text
    r = api.post("/billing/credit-memos:apply", {"items": [{"credit_memo": "CM-000001",
                 "applications": [{"target": "INV-000001", "amount": "50.00"}]}]})
    assert r.json()["succeeded"] == 1, r.text
    r = api.post("/billing/credit-memos:unapply", {"items": [
        {"credit_memo": "CM-000001", "amount": "20.00"},
        {"credit_memo": "CM-000001", "amount": "30.01"}]})
    results = r.json()["results"]
    assert results[0]["ok"] and results[0]["result"]["applied"] == "30.00"
    assert results[1]["error"]["code"] == "insufficient_balance"
    assert results[1]["error"]["field"] == "amount"

    inv = api.get("/billing/invoices/INV-000001").json()
    assert [(ln["kind"], ln["amount"]) for ln in inv["lines"]] == \
        [("recurring", "100.00"), ("usage", "100.00"), ("credit_draw", "-30.00")]
    assert inv["taxes"] == [{"rate": "0.0825", "base": "170.00", "tax": "14.03"}]
    assert (inv["subtotal"], inv["tax"], inv["amount"]) == ("170.00", "14.03", "184.03")
    assert [d["amount"] for d in inv["credit_draws"]] == ["30.00"]
    assert [(a["source_type"], a["amount"]) for a in inv["applications"]] == \
        [("credit_memo", "30.00")]
    assert (inv["applied"], inv["balance"]) == ("30.00", "154.03")
    r = api.post("/billing/credit-memos:unapply", {"items": [
        {"credit_memo": "CM-000001", "amount": "1.5x"}]})
    assert r.status_code == 422 and r.json()["error"]["field"].startswith("body.items")


def test_a_dated_debit_memo_and_an_accounts_terms(api) -> None:
    acc = _billed(api)
    r = api.post("/billing/debit-memos", {"account_id": acc, "amount": "12.00",
                                          "reason": "late fee", "activate": True,
                                          "issue_date": "2026-11-15"})
    assert r.status_code == 201, r.text
    assert (r.json()["issue_date"], r.json()["due_date"]) == ("2026-11-15", "2026-12-15")
    r = api.post("/billing/debit-memos", {"account_id": acc, "amount": "1.00", "reason": "r",
                                          "issue_date": "2999-01-01"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "issue_date"
    r = api.post("/billing/credit-memos", {"account_id": acc, "amount": "1.00", "reason": "r",
                                           "issue_date": "2026-11-15"})
    assert r.status_code == 422            # credit memos take no issue date

    r = api.post("/billing/accounts/A1:update", {"payment_terms_days": 45, "region": "CA",
                                                 "tax_exempt": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["payment_terms_days"], body["region"], body["tax_exempt"]) == (45, "CA", True)
    r = api.post(f"/billing/accounts/{acc}:update", {"region": None})
    assert r.json()["region"] is None and r.json()["payment_terms_days"] == 45
    assert api.get("/billing/accounts/A1").json()["id"] == acc
    r = api.post("/billing/accounts/A1:update", {"payment_terms_days": -1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.payment_terms_days"
    r = api.post("/billing/accounts/A1:update", {"bill_cycle_day": 32})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.bill_cycle_day"
    r = api.post("/billing/accounts/A1:update", {"bill_cycle_day": 15,
                                                 "credit_limit_override": "2500.00"})
    assert (r.json()["bill_cycle_day"], r.json()["credit_limit_override"]) == (15, "2500.00")
    r = api.post("/billing/accounts/A1:update", {"credit_limit_override": None})
    assert r.json()["credit_limit_override"] is None
    r = api.post("/billing/accounts/A1:update", {"credit_limit_override": "abc"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.credit_limit_override"
    r = api.post("/billing/accounts/A1:update", {"credit_limit_override": "1.005"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "credit_limit_override"
    assert api.post("/billing/accounts/NOPE:update", {"tax_exempt": False}).status_code == 404
