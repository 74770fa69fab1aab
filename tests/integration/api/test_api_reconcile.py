"""Vendor reconciliation over HTTP, on SQLite and PostgreSQL: the CSV as the body of ``POST
/reconciliation/vendor?period=`` (billing:write), the stored report (billing:read), mappings,
and the figures in ``/metrics``.

The ledger: account ACC1 (USD) billed 10 x 12.00 = 120.00 of CFQ7TTC0LH18:0001 for March 2026;
the vendor charged 10 for 100.00 (matched, margin 20.00) and 50.00 for an unknown customer
(unmatched).
"""
from __future__ import annotations

from datetime import date

from api_helpers import Api
from prometheus_client.parser import text_string_to_metric_families

from billing_core.service.bill_run import run_bill_run
from billing_core.service.orders import OrderIn, SubscriptionItem, activate_order, place_order
from billing_core.service.pricing import ProductIn, add_product, set_price

TENANT = "aaaa0a0a-1111-4a4a-8a8a-aaaaaaaaaaaa"
CSV = ("PartnerId,CustomerId,CustomerName,ProductId,SkuId,SkuName,ChargeType,UnitPrice,"
       "Quantity,Subtotal,TaxTotal,Total,Currency,SubscriptionId,BillableQuantity\n"
       f"p,{TENANT},Acme,CFQ7TTC0LH18,0001,Basic,cycleCharge,10,10,100.00,0,100.00,USD,s1,10\n"
       "p,ffff,Other,CFQ7TTC0LH18,0001,Basic,cycleCharge,10,5,50.00,0,50.00,USD,s2,5\n")


def _billed(api: Api, account: int) -> None:
    def prep(uow):
        pid = add_product(uow, ProductIn(sku="CFQ7TTC0LH18:0001", name="Basic",
                                         kind="recurring", billing_period="month"))
        set_price(uow, pid, "USD", date(2020, 1, 1), "12.00")
        order = place_order(uow, OrderIn(account, "q1", date(2026, 3, 1), subscriptions=[
            SubscriptionItem(pid, 10, date(2026, 3, 1), "monthly")]))
        activate_order(uow, order)
    api.run(prep)
    run_bill_run(api.engine, date(2026, 3, 1))


def _post_csv(api: Api, body: str, period: str = "2026-03", scope: str = "billing:write",
              key: str | None = None):
    return api.client.post(f"/reconciliation/vendor?period={period}", content=body.encode(),
                           headers={**api.headers(scope, key), "Content-Type": "text/csv"})


def test_post_file_map_report_and_metrics(api: Api, account: int) -> None:
    _billed(api, account)
    assert _post_csv(api, CSV, scope="billing:read").status_code == 403
    res = api.post("/reconciliation/vendor-mappings", {"kind": "customer", "vendor_key": TENANT,
                                                        "target": "ACC1"})
    assert res.status_code == 200, res.text
    assert (res.json()["account_id"], res.json()["kind"]) == (account, "customer")
    res = _post_csv(api, CSV, key="r-1")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["unchanged"] is False
    assert [(g["status"], g["our_quantity"], g["vendor_quantity"], g["billed_minor"],
             g["cost_minor"], g["margin_minor"]) for g in body["groups"]] == [
        ("matched", "10", "10", 12000, 10000, 2000)]
    assert [(u["row"], u["reason"], u["cost_minor"]) for u in body["unmatched"]] == [
        (3, "no_account", 5000)]
    assert body["exceptions"] == 1
    again = _post_csv(api, CSV)
    assert again.json()["unchanged"] is True and again.json()["import_id"] == body["import_id"]
    stored = api.get("/reconciliation/vendor?period=2026-03")
    assert stored.status_code == 200
    assert stored.json()["summary"] == body["summary"]
    assert api.get("/reconciliation/vendor?period=2026-04").status_code == 404
    families = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    items = {(s.labels["period"], s.labels["status"]): s.value
             for s in families["ledgerbridge_vendor_reconciliation_items"].samples}
    assert items == {("2026-03", "matched"): 1, ("2026-03", "mismatched"): 0,
                     ("2026-03", "unmatched"): 1, ("2026-03", "ours_only"): 0}
    cost = {(s.labels["status"], s.labels["currency"]): s.value
            for s in families["ledgerbridge_vendor_reconciliation_cost_minor"].samples}
    assert cost == {("matched", "USD"): 10000, ("unmatched", "USD"): 5000}
    listed = api.get("/reconciliation/vendor-mappings?kind=customer").json()
    assert [(m["vendor_key"], m["account_id"]) for m in listed] == [(TENANT, account)]
    res = api.post("/reconciliation/vendor-mappings:remove", {"kind": "customer",
                                                               "vendor_key": TENANT})
    assert res.status_code == 200 and res.json()["removed"] is True
    assert api.get("/reconciliation/vendor-mappings").json() == []


def test_bad_input_is_refused_and_writes_nothing(api: Api, account: int) -> None:
    res = _post_csv(api, "CustomerId,ProductId\nx,y\n")
    assert res.status_code == 422 and res.json()["error"]["field"] == "columns", res.text
    res = _post_csv(api, CSV, period="2026-13")
    assert res.status_code == 422 and res.json()["error"]["field"] == "period"
    res = api.client.post("/reconciliation/vendor", content=CSV.encode(),
                          headers={**api.headers("billing:write"), "Content-Type": "text/csv"})
    assert res.status_code == 422 and res.json()["error"]["field"] == "period"
    res = api.post("/reconciliation/vendor?period=2026-03", json="a,b")   # JSON, not CSV
    assert res.status_code == 422 and res.json()["error"]["field"] == "body"
    res = api.post("/reconciliation/vendor-mappings", {"kind": "customer", "vendor_key": "k",
                                                        "target": "NOPE"})
    assert res.status_code == 404 and res.json()["error"]["field"] == "account"
    assert api.post("/reconciliation/vendor-mappings", {"kind": "nope", "vendor_key": "k",
                                                         "target": "1"}).status_code == 422
    assert api.get("/reconciliation/vendor?period=2026-03").status_code == 404
    assert api.get("/reconciliation/vendor-mappings").json() == []


def test_a_file_over_the_api_body_limit_is_taken(api: Api) -> None:
    """The route's own limit (32 MiB) instead of the API's 1 MiB: 1.5 MiB (blank lines after
    the header) is imported; over 32 MiB is 413."""
    header = CSV.splitlines()[0] + "\n"
    res = _post_csv(api, header + "\n" * (1536 * 1024))
    assert res.status_code == 200, res.text[:200]
    assert (res.json()["rows_read"], res.json()["exceptions"]) == (0, 0)
    res = _post_csv(api, header + "\n" * (32 * 1024 * 1024))
    assert res.status_code == 413
