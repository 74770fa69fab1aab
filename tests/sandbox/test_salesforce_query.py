"""Query and queryAll through simple-salesforce and plain requests: paging, filters, traps."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from conftest import SF_ACCOUNTS, sf_json
from simple_salesforce.format import format_soql

from connectors.sandbox.server import Sandbox

UTC = dt.UTC
ORDERED = "SELECT Id, SystemModstamp FROM Account ORDER BY SystemModstamp, Id"


def _stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


def test_query_all_iter_reads_every_account_in_pages_of_2000(sf: Any, sfbox: Sandbox) -> None:
    rows = list(sf.query_all_iter(ORDERED))
    assert len(rows) == SF_ACCOUNTS
    assert len({r["Id"] for r in rows}) == SF_ACCOUNTS
    keys = [(_stamp(r["SystemModstamp"]), r["Id"]) for r in rows]
    assert keys == sorted(keys)
    pages = math.ceil(SF_ACCOUNTS / 2000)
    assert sfbox.counters.get("salesforce", "query", "GET") == pages
    assert sf.api_usage["api-usage"].used == pages
    everything = sum(1 for _ in sf.query_all_iter(ORDERED, include_deleted=True))
    assert everything == SF_ACCOUNTS
    assert sfbox.counters.get("salesforce", "queryAll", "GET") == pages


def test_page_shape_and_locator(sf_http: Any) -> None:
    body = sf_json(sf_http.query("SELECT Id, Name FROM Account"))
    assert body["totalSize"] == SF_ACCOUNTS and body["done"] is False
    assert len(body["records"]) == 2000
    assert re.fullmatch(r"/services/data/v59\.0/query/01g[0-9A-Za-z]{15}-2000",
                        body["nextRecordsUrl"])
    record = body["records"][0]
    assert list(record) == ["attributes", "Id", "Name"]
    assert record["attributes"] == {
        "type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{record['Id']}"}
    again = sf_json(sf_http.call("GET", sf_http.sandbox.url + body["nextRecordsUrl"]))
    retry = sf_json(sf_http.call("GET", sf_http.sandbox.url + body["nextRecordsUrl"]))
    assert again == retry and again["records"][0]["Id"] != record["Id"]


def test_batch_size_header_is_honoured_and_clamped(sf_http: Any) -> None:
    def first_page(size: int) -> int:
        response = sf_http.query("SELECT Id FROM Account",
                                 headers={"Sforce-Query-Options": f"batchSize={size}"})
        return len(sf_json(response)["records"])

    assert first_page(500) == 500
    assert first_page(50) == 200
    assert first_page(5000) == 2000


def test_unknown_locator(sf_http: Any) -> None:
    response = sf_http.call("GET", "/query/01gDn0000000zzzIAA-2000")
    assert response.status_code == 400
    assert sf_json(response)[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_where_filters_limit_and_count(sf: Any) -> None:
    held = sf.query_all("SELECT Id, Credit_Hold__c, CurrencyIsoCode FROM Account "
                        "WHERE Credit_Hold__c = true AND CurrencyIsoCode IN ('USD', 'EUR')")
    assert held["totalSize"] == len(held["records"]) > 0
    assert all(r["Credit_Hold__c"] and r["CurrencyIsoCode"] in ("USD", "EUR")
               for r in held["records"])
    no_limit = sf.query("SELECT Id FROM Account WHERE Credit_Limit__c = null")
    assert 0 < no_limit["totalSize"] < SF_ACCOUNTS
    big = sf.query("SELECT Id, Credit_Limit__c FROM Account WHERE Credit_Limit__c >= 100000 "
                   "ORDER BY Credit_Limit__c DESC, Id LIMIT 3")
    assert big["totalSize"] == 3 and all(r["Credit_Limit__c"] >= 100000 for r in big["records"])
    like = sf.query("SELECT Id, Name FROM Account WHERE Name LIKE 'north%' LIMIT 5")
    assert all(r["Name"].startswith("Northwind") for r in like["records"])
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == SF_ACCOUNTS


def test_every_quote_status_and_lines_are_seeded(sf: Any) -> None:
    quotes = sf.query_all("SELECT Id, Status, AccountId, Revision__c FROM Quote")["records"]
    assert {q["Status"] for q in quotes} == {"Draft", "Needs Review", "In Review", "Approved",
                                             "Rejected", "Presented", "Accepted", "Denied"}
    quote_id = quotes[0]["Id"]
    lines = sf.query(f"SELECT Id, Product2Id, Quantity, UnitPrice, ServiceDate FROM "
                     f"QuoteLineItem WHERE QuoteId = '{quote_id}'")["records"]
    assert 1 <= len(lines) <= 4
    every_line = sf.query_all("SELECT Id FROM QuoteLineItem")
    assert sf.query("SELECT COUNT() FROM QuoteLineItem")["totalSize"] == len(
        every_line["records"]) == every_line["totalSize"]
    products = sf.query("SELECT Id, Billing_Type__c, Billing_Frequency__c FROM Product2")
    assert {p["Billing_Type__c"] for p in products["records"]} == {"Recurring", "One-Time",
                                                                   "Usage"}
    prices = sf.query("SELECT Id, CurrencyIsoCode, UnitPrice FROM PricebookEntry")
    assert {"USD", "EUR", "GBP", "JPY"} <= {p["CurrencyIsoCode"] for p in prices["records"]}


def test_query_hides_deleted_rows_and_query_all_shows_them(sf: Any, sfbox: Sandbox) -> None:
    assert sfbox.salesforce is not None
    gone = sfbox.salesforce.admin("delete_account", {"index": 3})["id"]
    soql = f"SELECT Id, IsDeleted FROM Account WHERE Id = '{gone}'"
    assert sf.query(soql)["totalSize"] == 0
    everything = sf.query_all(soql, include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in everything] == [(gone, True)]
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == SF_ACCOUNTS - 1
    deleted = sf.query_all("SELECT Id FROM Account WHERE IsDeleted = true", include_deleted=True)
    assert [r["Id"] for r in deleted["records"]] == [gone]


def test_incremental_cursor_sees_ties_and_late_rows(sf: Any, sfbox: Sandbox) -> None:
    side = sfbox.salesforce
    assert side is not None
    sfbox.clock.set(dt.datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    tied = side.admin("stamp_together", {"ids": [side.account_id(i) for i in (10, 20, 30)],
                                         "fields": {"Credit_Hold__c": True}})
    sfbox.clock.advance(120)
    side.admin("set_credit_limit", {"index": 40, "credit_limit": 1234})
    cursor = "2026-11-21T12:00:00Z"
    first = sf.query_all(f"SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp >= "
                         f"{cursor} ORDER BY SystemModstamp, Id")["records"]
    assert [r["Id"] for r in first] == tied["ids"] + [side.account_id(40)]
    assert len({r["SystemModstamp"] for r in first[:3]}) == 1
    late = side.admin("commit_late", {"index": 50, "fields": {"Credit_Hold__c": True},
                                      "seconds_before": 90})
    saved = first[-1]["SystemModstamp"]
    after = sf.query_all(f"SELECT Id FROM Account WHERE SystemModstamp > "
                         f"{saved.replace('.000+0000', 'Z')}")["records"]
    assert after == []
    overlap = sf.query_all("SELECT Id FROM Account WHERE SystemModstamp >= "
                           "2026-11-21T12:00:00Z ORDER BY SystemModstamp, Id")["records"]
    assert late["id"] in [r["Id"] for r in overlap]


def test_errors_have_the_salesforce_shape(sf_http: Any) -> None:
    malformed = sf_http.query("SELECT Id FRM Account")
    assert malformed.status_code == 400
    assert sf_json(malformed)[0]["errorCode"] == "MALFORMED_QUERY"
    unknown = sf_http.query("SELECT Id, Nope__c FROM Account")
    assert unknown.status_code == 400 and sf_json(unknown)[0]["errorCode"] == "INVALID_FIELD"
    assert "Nope__c" in sf_json(unknown)[0]["message"]
    wrong_type = sf_http.query("SELECT Id FROM Account WHERE SystemModstamp > '2026-01-01'")
    assert sf_json(wrong_type)[0]["errorCode"] == "INVALID_FIELD"
    entity = sf_http.query("SELECT Id FROM Shipment__c")
    assert sf_json(entity)[0]["errorCode"] == "INVALID_TYPE"
    relation = sf_http.query("SELECT Id FROM Quote WHERE Account.Name = 'x'")
    assert sf_json(relation)[0]["errorCode"] == "MALFORMED_QUERY"   # paths: SELECT only
    hop = sf_http.query("SELECT Id, Nobody__r.Name FROM Quote")
    assert sf_json(hop)[0]["errorCode"] == "INVALID_FIELD"
    assert "Nobody__r" in sf_json(hop)[0]["message"]
    assert "api-usage=" in malformed.headers["Sforce-Limit-Info"]


def test_duplicate_fields_are_refused(sf_http: Any) -> None:
    response = sf_http.query("SELECT Id, Name, id FROM Account")
    assert response.status_code == 400
    assert sf_json(response)[0] == {"message": "duplicate field selected: Id",
                                    "errorCode": "MALFORMED_QUERY"}


def test_created_quote_with_lines_is_queryable(sf: Any, sfbox: Sandbox) -> None:
    side = sfbox.salesforce
    assert side is not None
    made = side.admin("create_quote", {"account_id": side.account_id(2), "status": "Presented",
                                       "lines": [{"product_index": 0, "quantity": 3},
                                                 {"product_index": 9, "quantity": 1000,
                                                  "unit_price": 0.4}]})
    quote = sf.Quote.get(made["id"])
    assert quote["Status"] == "Presented" and quote["AccountId"] == side.account_id(2)
    lines = sf.query(f"SELECT Id, Quantity, UnitPrice FROM QuoteLineItem "
                     f"WHERE QuoteId = '{made['id']}' ORDER BY Id")["records"]
    assert [r["Id"] for r in lines] == made["line_ids"]
    side.admin("set_quote_status", {"id": made["id"], "status": "Accepted"})
    accepted = sf.query(f"SELECT Id FROM Quote WHERE Status = 'Accepted' AND Id = '{made['id']}'")
    assert accepted["totalSize"] == 1


def test_describe_lists_the_field_map(sf: Any) -> None:
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Product2", "PricebookEntry", "Quote", "QuoteLineItem"} <= names
    fields = {f["name"]: f for f in sf.Account.describe()["fields"]}
    assert fields["Credit_Limit__c"]["type"] == "currency" and fields["Credit_Limit__c"]["custom"]
    assert fields["Billing_Hold_Reasons__c"]["length"] == 255
    assert fields["SystemModstamp"]["updateable"] is False
    status = {f["name"]: f for f in sf.Quote.describe()["fields"]}["Status"]
    assert "Accepted" in [v["value"] for v in status["picklistValues"]]
    assert sf.Quote.metadata()["objectDescribe"]["keyPrefix"] == "0Q0"


def test_cpq_objects_mirror_the_quotes(sf: Any, sfbox: Sandbox) -> None:
    side = sfbox.salesforce
    assert side is not None
    quotes = sf.query_all("SELECT Id, Name, SBQQ__Account__c, SBQQ__Status__c, SBQQ__Primary__c, "
                          "SBQQ__StartDate__c FROM SBQQ__Quote__c")["records"]
    assert len(quotes) == sf.query("SELECT COUNT() FROM Quote")["totalSize"]
    assert {q["SBQQ__Status__c"] for q in quotes} >= {"Draft", "Accepted", "Denied"}
    first = quotes[0]["Id"]
    lines = sf.query(f"SELECT Id, SBQQ__Product__c, SBQQ__Quantity__c, SBQQ__NetPrice__c "
                     f"FROM SBQQ__QuoteLine__c WHERE SBQQ__Quote__c = '{first}'")["records"]
    assert 1 <= len(lines) <= 4
    won = side.admin("set_quote_status", {"object": "SBQQ__Quote__c", "id": first,
                                          "status": "Accepted"})
    pushed = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "SBQQ__Quote__c"}, "id": won["id"],
         "Order_Number__c": "ORD-000001", "Provisioning_Status__c": "awaiting_hold_release"}]})
    assert pushed[0]["success"]
    row = sf.SBQQ__Quote__c.get(first)
    assert row["SBQQ__Status__c"] == "Accepted" and row["Order_Number__c"] == "ORD-000001"


def test_lines_of_many_quotes_at_once(sf: Any, sfbox: Sandbox) -> None:
    side = sfbox.salesforce
    assert side is not None
    quote_ids = [side.quote_id(i) for i in (0, 7, 42)]
    soql = format_soql("SELECT Id, QuoteId FROM QuoteLineItem WHERE QuoteId IN {} "
                       "ORDER BY QuoteId, Id", quote_ids)
    lines = sf.query_all(soql)["records"]
    assert {r["QuoteId"] for r in lines} == set(quote_ids)
    assert [r["QuoteId"] for r in lines] == sorted(r["QuoteId"] for r in lines)


def test_a_select_list_follows_lookups_as_salesforce_nests_them(sf_http: Any) -> None:
    """``Account.Name`` on a Quote comes as the related record under its relationship name,
    with its own attributes; an empty lookup is null."""
    answer = sf_json(sf_http.query("SELECT Id, Account.Name, account.CurrencyIsoCode FROM Quote "
                                   "ORDER BY Id LIMIT 1"))
    record = answer["records"][0]
    assert record["Account"]["attributes"]["type"] == "Account"
    assert set(record["Account"]) == {"attributes", "Name", "CurrencyIsoCode"}
    cpq = sf_json(sf_http.query("SELECT Id, SBQQ__MasterContract__r.SBQQ__Quote__c FROM "
                                "SBQQ__Quote__c ORDER BY Id LIMIT 1"))
    assert cpq["records"][0]["SBQQ__MasterContract__r"] is None
