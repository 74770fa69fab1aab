"""``read_by_ids`` (the targeted resync of CRM events): the request shapes on both CRMs, 200
ids per request, a record the CRM no longer has simply not returned."""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import responses
from conn_support import ENV, NOW, SF_URL, d365_settings, sf_settings
from fake_dv import AUTHORITY, FakeDataverse, guid
from fake_dv import BASE as DV_BASE
from fake_sf import BASE as SF_BASE
from fake_sf import FakeSalesforce

from connectors.registry import build_connector


def _build(settings: Any) -> Any:
    return build_connector(settings, sleep=lambda s: None, clock=lambda: NOW, environ=ENV)


def _sf_id(n: int) -> str:
    return f"001{n:012d}AAA"


@pytest.fixture
def sf_queries() -> Any:
    queries: list[str] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        soql = parse_qs(urlparse(request.url).query)["q"][0]
        queries.append(soql)
        asked = re.findall(r"'(001\w+)'", soql)
        records = [{"attributes": {"type": "Account"}, "Id": i, "Name": f"N {i}",
                    "SystemModstamp": "2026-11-21T23:43:43.000+0000"}
                   for i in asked if i != _sf_id(7)]           # 7 was deleted in the CRM
        return 200, {"Sforce-Limit-Info": "api-usage=10/100000"}, json.dumps(
            {"totalSize": len(records), "done": True, "records": records})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(SF_BASE)}/query/.*"), answer)
        rsps.add_callback(responses.POST, f"{SF_URL}/services/oauth2/token",
                          FakeSalesforce()._token)
        yield queries


def test_salesforce_reads_ids_with_one_id_in_query_per_200(sf_queries: list[str]) -> None:
    ids = [_sf_id(n) for n in range(450)]
    found = _build(sf_settings()).read_by_ids("account", ids)
    assert [len(re.findall(r"'001\w+'", q)) for q in sf_queries] == [200, 200, 50]
    assert sf_queries[0].startswith("SELECT Id, Name")
    assert " FROM Account WHERE Id IN ('" in sf_queries[0] and sf_queries[0].endswith(
        "ORDER BY Id")
    assert "IsDeleted" not in sf_queries[0]          # query, not queryAll: deleted rows stay out
    assert len(found) == 449 and _sf_id(7) not in {r["crm_id"] for r in found}


@pytest.fixture
def dv_gets() -> Any:
    dv = FakeDataverse()
    urls: list[str] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        url = unquote(request.url)
        urls.append(url)
        asked = re.findall(r"accountid eq ([0-9a-f-]{36})", url)
        rows = [{"accountid": g, "name": "Row", "modifiedon": "2026-11-21T23:40:00Z",
                 "@odata.etag": 'W/"1"'} for g in asked if g != guid(7)]
        return 200, {}, json.dumps({"value": rows})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(re.escape(DV_BASE) + r"accounts\?.*"),
                          answer)
        rsps.add_callback(responses.GET, f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
                          dv._discovery)
        rsps.add_callback(responses.POST, f"{AUTHORITY}/oauth2/v2.0/token", dv._token)
        yield urls


def test_dataverse_reads_ids_with_one_filter_of_key_comparisons_per_200(
        dv_gets: list[str]) -> None:
    ids = [guid(n) for n in range(250)] + ["not-a-guid"]
    found = _build(d365_settings()).read_by_ids("account", ids)
    assert [len(re.findall(r"accountid eq ", u)) for u in dv_gets] == [200, 50]
    first = dv_gets[0]
    assert "$select=accountid,name" in first
    assert f"$filter=accountid eq {guid(0)} or accountid eq {guid(1)} or " in first
    assert len(first) < 32_768                       # Dataverse's URL limit
    assert len(found) == 249 and guid(7) not in {r["crm_id"] for r in found}


# -- lookup_in: the lines of many accepted quotes at once (sync.engine._lines_of_accepted) ---
def test_salesforce_looks_lines_up_200_quotes_per_query(sf_queries: list[str]) -> None:
    quotes = [f"0Q0{n:012d}AAA" for n in range(250)]
    _build(sf_settings()).lookup_in("quote_line", "quote_crm_id", quotes)
    assert [len(re.findall(r"'0Q0\w+'", q)) for q in sf_queries] == [200, 50]
    assert " FROM QuoteLineItem WHERE QuoteId IN ('0Q0" in sf_queries[0]


@pytest.fixture
def dv_line_gets() -> Any:
    dv = FakeDataverse()
    urls: list[str] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        urls.append(unquote(request.url))
        return 200, {}, json.dumps({"value": []})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(re.escape(DV_BASE) + r"quotedetails\?.*"),
                          answer)
        rsps.add_callback(responses.GET, f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
                          dv._discovery)
        rsps.add_callback(responses.POST, f"{AUTHORITY}/oauth2/v2.0/token", dv._token)
        yield urls


def test_dataverse_looks_lines_up_200_quotes_per_filter(dv_line_gets: list[str]) -> None:
    quotes = [guid(n) for n in range(250)]
    _build(d365_settings()).lookup_in("quote_line", "quote_crm_id", quotes)
    assert [len(re.findall(r"_quoteid_value eq ", u)) for u in dv_line_gets] == [200, 50]
    assert f"_quoteid_value eq {guid(0)} or _quoteid_value eq {guid(1)} or " in dv_line_gets[0]
    assert len(dv_line_gets[0]) < 32_768                 # Dataverse's URL limit
