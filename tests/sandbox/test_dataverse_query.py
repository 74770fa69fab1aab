"""Collection and row reads: paging, $select/$filter/$orderby/$top, shapes, OData errors."""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

import pytest
import requests
from test_dataverse_harness import ACCOUNTS, Dataverse, assert_shape, fixture, load_json

STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def test_full_read_pages_by_5000_and_counts_calls(dv_big: Dataverse) -> None:
    dv, dv_http = dv_big, dv_big.session()
    url: str | None = f"{dv.api}/accounts?$select=name,creditlimit"
    ids: set[str] = set()
    pages = 0
    while url:
        resp = dv_http.get(url, headers=dv.headers(Prefer="odata.maxpagesize=5000"))
        assert resp.status_code == 200
        assert resp.headers["Preference-Applied"] == "odata.maxpagesize=5000"
        assert resp.headers["OData-Version"] == "4.0"
        body = load_json(resp.text)
        ids.update(row["accountid"] for row in body["value"])
        url = body.get("@odata.nextLink")
        if url:
            assert "$skiptoken=" in url and "$skip=" not in url
        pages += 1
    assert len(ids) == ACCOUNTS
    assert pages == math.ceil(ACCOUNTS / 5000)
    assert dv.ctx.counters.get("dataverse", "accounts", "GET") == pages


def test_default_page_is_5000_without_preference_applied(dv_big: Dataverse) -> None:
    dv, dv_http = dv_big, dv_big.session()
    resp = dv.get(dv_http, "accounts?$select=name")
    assert len(resp.json()["value"]) == 5000
    assert "Preference-Applied" not in resp.headers
    big = dv.get(dv_http, "accounts?$select=name", Prefer="odata.maxpagesize=9000")
    assert len(big.json()["value"]) == 5000  # larger than 5,000 is ignored


def test_small_pages_follow_next_links_without_gaps(dv: Dataverse,
                                                    dv_http: requests.Session) -> None:
    url: str | None = f"{dv.api}/accounts?$select=accountnumber&$filter=creditonhold eq true"
    numbers: list[str] = []
    while url:
        body = dv_http.get(url, headers=dv.headers(Prefer="odata.maxpagesize=97")).json()
        assert len(body["value"]) <= 97
        numbers += [row["accountnumber"] for row in body["value"]]
        url = body.get("@odata.nextLink")
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    expected = sum(1 for _i, row in dv.side.store.scan("accounts") if row["creditonhold"])
    assert len(numbers) == expected > 0


def test_page_and_row_shapes_match_the_fixtures(dv: Dataverse, dv_http: requests.Session) -> None:
    rows = fixture("dataverse_rows.json")
    for table, example in rows.items():
        resp = dv.get(dv_http, table, Prefer="odata.maxpagesize=3")
        body = load_json(resp.text)
        assert body["@odata.context"] == f"{dv.api}/$metadata#{table}"
        for row in body["value"]:
            assert_shape(row, example, table)
            assert row["@odata.etag"] == f'W/"{row["versionnumber"]}"'
            assert STAMP.match(row["modifiedon"]) and STAMP.match(row["createdon"])
    page = load_json(dv.get(dv_http, "accounts?$select=name", Prefer="odata.maxpagesize=1").text)
    assert_shape(page, fixture("dataverse_answers.json")["page"])
    assert page["@odata.context"] == f"{dv.api}/$metadata#accounts(name)"


def test_money_is_a_json_number_with_its_exact_value(dv: Dataverse,
                                                     dv_http: requests.Session) -> None:
    body = load_json(dv.get(dv_http, "accounts?$select=creditlimit&$filter=creditlimit ne null"
                            "&$top=50").text)
    limits = [row["creditlimit"] for row in body["value"]]
    assert all(isinstance(v, Decimal) for v in limits) and len(limits) == 50
    raw = dv.get(dv_http, "accounts?$select=creditlimit&$top=1&$filter=creditlimit ne null").text
    assert '"creditlimit":"' not in raw


def test_select_returns_only_the_columns_and_the_key(dv: Dataverse,
                                                     dv_http: requests.Session) -> None:
    row = dv.get(dv_http, "accounts?$select=name,creditonhold&$top=1").json()["value"][0]
    assert set(row) == {"@odata.etag", "name", "creditonhold", "accountid"}


@pytest.mark.parametrize("expr", [
    "creditonhold eq true and creditlimit gt 20000",
    "(address1_country eq 'US' or address1_country eq 'GB') and not (creditlimit eq null)",
    "creditlimit le 10000 or creditlimit eq null",
    "modifiedon ge 2026-06-01T00:00:00Z and statecode eq 0",
    "name ne 'Contoso' and accountnumber lt 'AC-0000100'",
])
def test_filter_matches_a_python_evaluation(dv: Dataverse, dv_http: requests.Session,
                                            expr: str) -> None:
    from connectors.sandbox.dataverse.filters import compile_filter
    from connectors.sandbox.dataverse.schema import ACCOUNTS as TABLE

    predicate = compile_filter(expr, TABLE)
    expected = [r["accountid"] for _i, r in dv.side.store.scan("accounts") if predicate(r)]
    url: str | None = f"{dv.api}/accounts?$select=accountid&$filter={expr}"
    got: list[str] = []
    while url:
        body = dv_http.get(url, headers=dv.headers()).json()
        got += [row["accountid"] for row in body["value"]]
        url = body.get("@odata.nextLink")
    assert got == expected


def test_filter_by_guid_string_with_quote_and_null(dv: Dataverse,
                                                   dv_http: requests.Session) -> None:
    target = dv.side.admin("guid", {"table": "accounts", "index": 42})["id"]
    dv.side.admin("update", {"table": "accounts", "index": 42, "values": {"name": "O'Brien & Co"}})
    body = dv.get(dv_http, f"accounts?$filter=accountid eq {target.upper()}").json()
    assert [r["name"] for r in body["value"]] == ["O'Brien & Co"]
    body = dv.get(dv_http, "accounts?$filter=name eq 'O''Brien %26 Co'").json()
    assert [r["accountid"] for r in body["value"]] == [target]
    assert dv.get(dv_http, "accounts?$filter=new_billinghold eq null&$top=1").json()["value"]
    # Equality on a seeded number: found without a scan, and a row renumbered since is found too.
    dv.side.admin("update", {"table": "accounts", "index": 3,
                             "values": {"accountnumber": "AC-0000043"}})
    body = dv.get(dv_http, "accounts?$select=accountid&$filter=accountnumber eq 'AC-0000043'")
    assert [r["accountid"] for r in body.json()["value"]] == [
        dv.side.admin("guid", {"index": 3})["id"], target]


@pytest.mark.parametrize(("query", "fragment"), [
    ("$filter=contains(name,'x')", "function 'contains'"),
    ("$filter=foo eq 1", "Could not find a property named 'foo'"),
    ("$filter=name eq 5", "incompatible types"),
    ("$filter=creditlimit add 5 eq 3", "comparison operator"),
    ("$filter=(name eq 'a'", "end of the expression"),
    ("$filter=name eq 'unterminated", "Syntax error"),
    ("$select=nope", "Could not find a property named 'nope'"),
    ("$orderby=name sideways", "$orderby"),
    ("$top=-1", "$top"),
    ("$skip=10", "$skip"),
    ("$expand=primarycontactid", "$expand"),
    ("$bogus=1", "'$bogus' is not supported"),
])
def test_bad_queries_answer_the_odata_error(dv: Dataverse, dv_http: requests.Session, query: str,
                                            fragment: str) -> None:
    resp = dv.get(dv_http, f"accounts?{query}")
    assert resp.status_code == 400
    body = load_json(resp.text)
    assert_shape(body, fixture("dataverse_answers.json")["error"])
    assert body["error"]["code"] == "0x80060888"
    assert fragment in body["error"]["message"]


def test_orderby_and_top(dv: Dataverse, dv_http: requests.Session) -> None:
    body = dv.get(dv_http, "accounts?$select=name,creditlimit&$orderby=creditlimit desc,name"
                  "&$top=20").json()
    limits = [Decimal(str(r["creditlimit"])) for r in body["value"] if r["creditlimit"]]
    assert len(body["value"]) == 20 and "@odata.nextLink" not in body
    assert limits == sorted(limits, reverse=True)
    asc = dv.get(dv_http, "products?$select=name&$orderby=name", Prefer="odata.maxpagesize=15")
    first = asc.json()
    second = dv_http.get(first["@odata.nextLink"], headers=dv.headers(
        Prefer="odata.maxpagesize=15")).json()
    names = [r["name"] for r in first["value"] + second["value"]]
    assert names == sorted(names) and len(names) == 30


def test_count_option(dv: Dataverse, dv_http: requests.Session) -> None:
    body = dv.get(dv_http, "transactioncurrencies?$count=true").json()
    assert body["@odata.count"] == len(body["value"]) == 10
    codes = {r["isocurrencycode"] for r in body["value"]}
    assert {"USD", "EUR", "GBP", "JPY"} <= codes


def test_single_row_get_404_and_unknown_segment(dv: Dataverse, dv_http: requests.Session) -> None:
    guid = dv.side.admin("guid", {"table": "accounts", "index": 7})["id"]
    resp = dv.get(dv_http, f"accounts({guid})?$select=name")
    body = resp.json()
    assert resp.status_code == 200 and body["accountid"] == guid
    assert body["@odata.context"] == f"{dv.api}/$metadata#accounts(name)/$entity"
    assert resp.headers["ETag"] == body["@odata.etag"]
    assert dv.get(dv_http, f"accounts({guid})", **{"If-None-Match": body["@odata.etag"]}
                  ).status_code == 304
    missing = dv.get(dv_http, "accounts(00000000-0000-0000-0000-000000000001)")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "0x80040217"
    unknown = dv.get(dv_http, "contacts")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "0x8006088a"
    assert "Resource not found for the segment 'contacts'" in unknown.json()["error"]["message"]
    old = dv_http.get(dv.api.replace("v9.2", "v8.0") + "/accounts", headers=dv.headers())
    assert old.status_code == 404 and old.json()["error"]["code"] == "0x8006088a"


def test_seed_covers_the_shapes_the_sync_needs(dv: Dataverse, dv_http: requests.Session) -> None:
    quotes = dv.get(dv_http, "quotes?$select=statecode,statuscode&$top=40").json()["value"]
    assert {q["statecode"] for q in quotes} == {0, 1, 2, 3}
    products = dv.get(dv_http, "products").json()["value"]
    assert {p["new_billingtype"] for p in products} == {100000000, 100000001, 100000002}
    assert {p["new_billingfrequency"] for p in products} >= {100000000, 100000001}
    accounts = dv.get(dv_http, "accounts?$select=creditlimit,creditonhold,address1_country"
                      "&$top=2000").json()["value"]
    assert any(a["creditlimit"] is None for a in accounts)
    assert any(a["creditonhold"] for a in accounts)
    assert len({a["address1_country"] for a in accounts}) >= 8
    quote = dv.get(dv_http, "quotes?$top=1").json()["value"][0]
    lines = dv.get(dv_http, f"quotedetails?$filter=_quoteid_value eq {quote['quoteid']}").json()
    total = sum(Decimal(str(line["extendedamount"])) for line in lines["value"])
    assert len(lines["value"]) == 3 and total == Decimal(str(quote["totalamount"]))


def test_seed_is_deterministic(dv: Dataverse, dv_http: requests.Session) -> None:
    first = dv.get(dv_http, "accounts?$top=5").json()["value"]
    dv.ctx.clock.set(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))  # a frozen clock changes no seed
    dv.side.reset()
    dv.ctx.clock.reset()
    dv.token = dv.msal_app().acquire_token_for_client(scopes=[dv.info["scope"]])["access_token"]
    assert dv.get(dv_http, "accounts?$top=5").json()["value"] == first


def test_quotes_of_a_customer(dv: Dataverse, dv_http: requests.Session) -> None:
    quote = dv.side.admin("get", {"table": "quotes", "index": 5})
    customer = quote["_customerid_value"]
    expected = [r["quoteid"] for _i, r in dv.side.store.scan("quotes")
                if r["_customerid_value"] == customer]
    body = dv.get(dv_http, f"quotes?$select=name&$filter=_customerid_value eq {customer}").json()
    assert [r["quoteid"] for r in body["value"]] == expected and len(expected) >= 1
