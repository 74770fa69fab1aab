"""Salesforce wire payloads as Salesforce's own documentation shows them, fed to our connector,
the sync and the event receiver (HTTP stubbed with ``responses``, as the connector unit tests
do; their settings in ``conn_support``).

Every test names the documentation page its payload shape comes from. Values are adapted to
our field maps (``config/fieldmaps/salesforce.toml``); the shape, the annotations
(``attributes``), the number, date and timestamp formats and the extra keys are the docs'.
Where billing cannot bill a documented payload as the CRM means it (a quote in another
currency than its account), the quote is refused naming the field, never billed otherwise.
"""
from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

FAKES = Path(__file__).resolve().parents[1] / "unit" / "connectors"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))

from conn_support import ENV, NOW, SF_URL, Sleeper, sf_settings  # noqa: E402
from events_config import ORG, events_settings  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402

from billing_core.adapters.tables import accounts, orders, subscriptions  # noqa: E402
from billing_core.service import ledger_uow  # noqa: E402
from connectors.base import BudgetExhausted, FatalError  # noqa: E402
from connectors.events import SOAP_ACK, parse_outbound  # noqa: E402
from connectors.registry import build_connector  # noqa: E402
from connectors.salesforce.auth import LoginRefused  # noqa: E402
from jobs.api.app import build_app  # noqa: E402
from sync import mapping  # noqa: E402
from sync.engine import SyncOptions, run_cycle  # noqa: E402
from sync.reconcile import apply_page  # noqa: E402
from sync.tables import event_inbox, quarantine  # noqa: E402

V = "v59.0"
BASE = f"{SF_URL}/services/data/{V}"
QUERY_DOC = "https://developer.salesforce.com/docs/platform/api-rest/guide/dome-query.html"
QUERY_RES_DOC = ("https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/"
                 "resources_query.htm")
COLLECTIONS_DOC = ("https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/"
                   "resources_composite_sobjects_collections_update.htm")
ERRORS_DOC = ("https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/"
              "errorcodes.htm")

TOKEN_BODY = {  # the client credentials flow's answer (no refresh token)
    "access_token": "00DB0000000TfcR!AQQAQFhoK8vTMg_rKA.esrJ2bCs.OOIjJgl.9Cx6O7KqjZmHMLOyVb.U61"
                    "BaqHdlhefjs5Dfcw0UEx.nSq3l8CjDJUY0rO",
    "signature": "AxuBSmAtRDsV1qXYHPTYzRZUD2o4BQgqOo5ESo6ANxs=",
    "scope": "id api",
    "instance_url": SF_URL,
    "id": "https://login.salesforce.com/id/00DB0000000TfcRMAS/005B0000005Bk90IAC",
    "token_type": "Bearer",
    "issued_at": "1657741493217",
}


#: An incremental cursor (so reads use queryAll): rows stamped after 09:00 on 1 March 2026.
SINCE = json.dumps({"mode": "stamp", "stamp": "2026-03-01T09:00:00+00:00", "seen": {}})


def _rec(kind: str, rid: str, **fields: Any) -> dict[str, Any]:
    """A query record as the docs show it: ``attributes`` (type, url) first, then fields."""
    return {"attributes": {"type": kind, "url": f"/services/data/{V}/sobjects/{kind}/{rid}"},
            "Id": rid, **fields}


class Org:
    """The answers of one org: query pages per sObject (documented envelope), collections,
    userinfo, limits; every request recorded."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.page = 2000
        self.seen: list[str] = []
        self.soql: list[str] = []
        self.patches: list[dict[str, Any]] = []
        self.tokens = 0
        self.token_body: dict[str, Any] = dict(TOKEN_BODY)
        self.refuse: list[tuple[int, Any, dict[str, str]]] = []   # next data answers
        #: placeholder value -> the JSON text sent in its place (what json.dumps cannot write)
        self.raw: dict[str, str] = {}
        self.collection_answer: Callable[[list[dict[str, Any]]], list[Any]] | None = None
        self.headers = {"Sforce-Limit-Info": "api-usage=18/5000",
                        "Content-Type": "application/json;charset=UTF-8"}
        self._locators: dict[str, list[dict[str, Any]]] = {}
        self.rsps: Any = None        # the RequestsMock, set by the fixture

    def register(self, rsps: responses.RequestsMock, host: str = SF_URL) -> None:
        base = f"{host}/services/data/{V}"
        rsps.add_callback(responses.POST, f"{SF_URL}/services/oauth2/token", self._token)
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(base)}/query(All)?/.*"),
                          self._query)
        rsps.add_callback(responses.PATCH, re.compile(rf"{re.escape(base)}/composite/sobjects.*"),
                          self._collections)
        rsps.add_callback(responses.GET, f"{host}/services/oauth2/userinfo", self._userinfo)

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.tokens += 1
        return 200, {"Content-Type": "application/json;charset=UTF-8"}, json.dumps(
            self.token_body)

    def _refused(self) -> tuple[int, dict[str, str], str] | None:
        if not self.refuse:
            return None
        status, body, headers = self.refuse.pop(0)
        return status, {"Content-Type": "application/json;charset=UTF-8", **headers}, \
            json.dumps(body)

    def _query(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.seen.append(request.url)
        refused = self._refused()
        if refused:
            return refused
        parts = urlsplit(request.url)
        locator = parts.path.rsplit("/", 1)[-1]
        if locator in self._locators:
            rows = self._locators.pop(locator)
        else:
            soql = parse_qs(parts.query)["q"][0]
            self.soql.append(soql)
            found = re.search(r"FROM (\w+)", soql)
            rows = list(self.rows.get(found[1] if found else "", []))
            if "/queryAll/" not in parts.path:
                rows = [r for r in rows if not r.get("IsDeleted")]
            else:
                rows = [r if "IsDeleted" in r else {**r, "IsDeleted": False} for r in rows]
        page, rest = rows[:self.page], rows[self.page:]
        body: dict[str, Any] = {"totalSize": len(rows), "done": not rest, "records": page}
        if rest:   # a queryAll's locator points under /query/ (CRM_WIRE.md)
            locator = f"01gRO0000016PIAYA{len(self._locators) + 2}-{self.page}"
            self._locators[locator] = rest
            body["nextRecordsUrl"] = f"/services/data/{V}/query/{locator}"
        text = json.dumps(body)
        for placeholder, raw in self.raw.items():
            text = text.replace(json.dumps(placeholder), raw)
        return 200, self.headers, text

    def _collections(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused()
        if refused:
            return refused
        payload = json.loads(request.body)
        self.patches.append(payload)
        if self.collection_answer is not None:
            return 200, self.headers, json.dumps(self.collection_answer(payload["records"]))
        return 200, self.headers, json.dumps(
            [{"id": r.get("id") or "a0B5g00000XyZaBEAV", "success": True, "errors": []}
             for r in payload["records"]])

    def _userinfo(self, request: Any) -> tuple[int, dict[str, str], str]:
        return 200, self.headers, json.dumps(USERINFO)


#: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_userinfo_endpoint.htm
USERINFO = {
    "sub": "https://login.salesforce.com/id/00DB0000000TfcRMAS/005B0000005Bk90IAC",
    "user_id": "005B0000005Bk90IAC", "organization_id": "00DB0000000TfcRMAS",
    "preferred_username": "integration@acme.example", "nickname": "integration",
    "name": "Integration User", "email": "integration@acme.example", "email_verified": True,
    "given_name": "Integration", "family_name": "User", "zoneinfo": "America/Los_Angeles",
    "photos": {"picture": "https://acme.file.force.com/profilephoto/005/F",
               "thumbnail": "https://acme.file.force.com/profilephoto/005/T"},
    "profile": "https://acme.my.salesforce.com/005B0000005Bk90IAC",
    "picture": "https://acme.file.force.com/profilephoto/005/F",
    "address": {"country": "US"},
    "urls": {"enterprise": "https://acme.my.salesforce.com/services/Soap/c/{version}/00DB0000000TfcR",
             "rest": "https://acme.my.salesforce.com/services/data/v{version}/",
             "sobjects": "https://acme.my.salesforce.com/services/data/v{version}/sobjects/",
             "query": "https://acme.my.salesforce.com/services/data/v{version}/query/"},
    "active": True, "user_type": "STANDARD", "language": "en_US", "locale": "en_US",
    "utcOffset": -28800000, "updated_at": "2026-03-01T10:00:00.000+0000",
    "is_app_installed": True,
}


@pytest.fixture
def org() -> Iterator[Org]:
    stub = Org()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        stub.register(rsps)
        stub.rsps = rsps
        yield stub


def connector(sleep: Callable[[float], None] | None = None, **over: Any) -> Any:
    return build_connector(sf_settings(**over), sleep=sleep or (lambda s: None),
                           clock=lambda: NOW, environ=ENV)


# -- query / queryMore ----------------------------------------------------------------------
ACCOUNT_A = _rec("Account", "001D000000IRFmaIAH", Name="Test 1", AccountNumber="CD355118",
                 CurrencyIsoCode="USD", BillingCountryCode="US", BillingStateCode="CA",
                 Credit_Limit__c=25000.5, Credit_Hold__c=False,
                 SystemModstamp="2026-03-01T10:00:00.000+0000")
ACCOUNT_B = _rec("Account", "001D000000IomazIAB", Name="Test 2", AccountNumber=None,
                 CurrencyIsoCode="EUR", BillingCountryCode="DE", BillingStateCode=None,
                 Credit_Limit__c=None, Credit_Hold__c=True,
                 SystemModstamp="2026-03-01T10:00:01.000+0000")


def test_query_and_query_more_pages_map_every_documented_value(org: Org) -> None:
    """Query / Query More Results: ``{"totalSize", "done": false, "nextRecordsUrl":
    "/services/data/vXX.X/query/01gD0000002HU6KIAW-2000", "records": [{"attributes": {...},
    ...}]}``, then the next batch from that URL; currency as a JSON number, checkbox as a JSON
    boolean, null fields as null, SystemModstamp as ``2026-03-01T10:00:00.000+0000``.
    Docs: https://developer.salesforce.com/docs/platform/api-rest/guide/dome-query.html and
    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
    """
    org.page = 1
    org.rows["Account"] = [ACCOUNT_A, ACCOUNT_B]
    pages = list(connector(page_size=2000).read_changes("account", SINCE))
    records = [r for p in pages for r in p.records]
    assert [r["crm_id"] for r in records] == ["001D000000IRFmaIAH", "001D000000IomazIAB"]
    first, second = records
    assert first["credit_limit"] == Decimal("25000.5")
    assert isinstance(first["credit_limit"], Decimal)
    assert first["credit_hold"] is False and second["credit_hold"] is True
    assert first["modstamp"] == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert second["number"] is None and second["credit_limit"] is None
    # the nextRecordsUrl is followed as given (under /query/, after a queryAll)
    assert "/queryAll/" in org.seen[0]
    assert org.seen[1] == f"{SF_URL}/services/data/{V}/query/01gRO0000016PIAYA2-1"
    # and the sync takes both as they are
    assert mapping.map_account(first).credit_limit == Decimal("25000.5")
    assert mapping.map_account(second).currency == "EUR"


def test_an_integer_of_thousands_of_digits_is_refused_alone_not_the_page(org: Org,
                                                                       engine: Engine) -> None:
    """A JSON number is any length on the wire; Python refuses to convert an integer of more
    than 4,300 digits, and that failed the whole page on every run. The page now reads, and
    the value comes through as a number the boundary refuses, naming its field."""
    org.rows["Account"] = [ACCOUNT_A, {**ACCOUNT_B, "Credit_Limit__c": "@huge"}]
    org.raw["@huge"] = "9" * 5000
    pages = list(connector(page_size=2000).read_changes("account", SINCE))
    first, second = [r for p in pages for r in p.records]
    assert first["credit_limit"] == Decimal("25000.5")
    assert len(str(second["credit_limit"])) == 5000
    with ledger_uow(engine) as uow:
        applied = apply_page(uow, "c1", "account", [first, second])
        uow.commit()
    assert (applied.upserted, applied.quarantined) == (1, 1)
    with engine.connect() as conn:
        [(crm_id, field)] = conn.execute(select(quarantine.c.crm_id, quarantine.c.field))
    assert (crm_id, field) == (second["crm_id"], "credit_limit")


def test_a_queryall_row_with_isdeleted_true_is_a_deletion(org: Org) -> None:
    """queryAll answers deleted rows with ``"IsDeleted": true`` in the same envelope.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_queryall.htm
    """
    org.rows["Account"] = [ACCOUNT_A, {**ACCOUNT_B, "IsDeleted": True}]
    pages = list(connector().read_changes("account", SINCE))
    assert [r["crm_id"] for p in pages for r in p.records] == ["001D000000IRFmaIAH"]
    [gone] = [d for p in pages for d in p.deletions]
    assert gone.crm_id == "001D000000IomazIAB"
    assert gone.deleted_at == datetime(2026, 3, 1, 10, 0, 1, tzinfo=UTC)


def test_relationship_fields_come_nested_and_an_empty_lookup_is_null(org: Org) -> None:
    """SOQL relationship queries: a parent's fields come nested under the relationship name
    with their own ``attributes``; an empty lookup is ``null``.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_relationships_query_using.htm
    """
    org.rows["SBQQ__Quote__c"] = [_rec(
        "SBQQ__Quote__c", "a0Q5g000002AbCdEAK", Name="Q-00042", SBQQ__Account__c="001D000000IRFmaIAH",
        SBQQ__Status__c="Accepted", SBQQ__Primary__c=True, SBQQ__StartDate__c="2026-03-01",
        SBQQ__Type__c="Amendment", SBQQ__MasterContract__c="8005g000001AbCdAAK",
        SBQQ__MasterContract__r={
            "attributes": {"type": "Contract",
                           "url": f"/services/data/{V}/sobjects/Contract/8005g000001AbCdAAK"},
            "SBQQ__Quote__c": "a0Q5g000001ZyXwEAK"},
        SBQQ__Opportunity2__r=None,
        SystemModstamp="2026-03-01T10:00:00.000+0000")]
    [record] = connector(fieldmap="salesforce_cpq").read_by_ids("quote", ["a0Q5g000002AbCdEAK"])
    assert record["origin_quote"] == "a0Q5g000001ZyXwEAK"
    assert record["renewed_quote"] is None and record["renewed_contract"] is None
    assert record["start_date"] == date(2026, 3, 1)
    rec = mapping.map_quote(record)
    assert (rec.kind, rec.origin_quote, rec.origin_ref) == (
        "amendment", "a0Q5g000001ZyXwEAK", "8005g000001AbCdAAK")


# -- sObject Collections ---------------------------------------------------------------------
def test_collections_update_answers_are_mapped_by_position_even_without_an_id(org: Org) -> None:
    """Update Records Using sObject Collections, ``allOrNone: false``: one SaveResult per
    record in request order; a failed one has no ``id`` and ``errors: [{"statusCode",
    "message", "fields"}]``.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_update.htm
    """
    org.collection_answer = lambda records: [
        {"id": "001RM000003oLrHYAU", "success": True, "errors": []},
        {"success": False, "errors": [{
            "statusCode": "MALFORMED_ID",
            "message": "Account ID: id value of incorrect type: 001xx000003DGb2999",
            "fields": ["Id"]}]}]
    results = connector().write("account", [
        {"crm_id": "001RM000003oLrHYAU", "billing_hold": True, "open_balance": Decimal("12.34")},
        {"crm_id": "001xx000003DGb2999", "billing_hold_reasons": "overdue"}])
    assert org.patches[0] == {"allOrNone": False, "records": [
        {"attributes": {"type": "Account"}, "id": "001RM000003oLrHYAU",
         "Billing_Hold__c": True, "Open_Balance__c": 12.34},
        {"attributes": {"type": "Account"}, "id": "001xx000003DGb2999",
         "Billing_Hold_Reasons__c": "overdue"}]}
    ok, bad = results
    assert ok.ok and ok.crm_id == "001RM000003oLrHYAU"
    assert not bad.ok and bad.crm_id == "001xx000003DGb2999"
    assert bad.code == "MALFORMED_ID" and "incorrect type" in (bad.message or "")
    assert tuple(bad.fields) == ("Id",)


def test_collections_all_or_none_rollback_fails_every_record(org: Org) -> None:
    """With a failure in a request, every other record of an all-or-none call says
    ``ALL_OR_NONE_OPERATION_ROLLED_BACK``; our calls are ``allOrNone: false`` but a rolled-back
    answer must still fail each record, not pass it.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_update.htm
    """
    org.collection_answer = lambda records: [
        {"id": "001RM000003oLrHYAU", "success": False, "errors": [{
            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "message": "Record rolled back because not all records were valid and the "
                       "request was using AllOrNone header", "fields": []}]},
        {"success": False, "errors": [{"statusCode": "MALFORMED_ID",
                                       "message": "malformed id 001xx000003DGb2999",
                                       "fields": ["Id"]}]}]
    results = connector().write("account", [{"crm_id": "001RM000003oLrHYAU",
                                             "billing_hold": True},
                                            {"crm_id": "001xx000003DGb2999",
                                             "billing_hold": True}])
    assert [(r.ok, r.code) for r in results] == [
        (False, "ALL_OR_NONE_OPERATION_ROLLED_BACK"), (False, "MALFORMED_ID")]


def test_collections_upsert_by_external_id_answers_created(org: Org) -> None:
    """Upsert Records Using sObject Collections (``PATCH /composite/sobjects/Invoice__c/
    Ledger_Document_Id__c``): SaveResults carry ``created``; a failure ``DUPLICATE_VALUE``.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_upsert.htm
    """
    org.collection_answer = lambda records: [
        {"id": "a0B5g00000XyZaBEAV", "success": True, "errors": [], "created": True},
        {"success": False, "errors": [{
            "statusCode": "DUPLICATE_VALUE",
            "message": "duplicate value found: Ledger_Document_Id__c duplicates value on "
                       "record with id: a0B5g00000XyZaCEAV", "fields": []}], "created": False}]
    conn = connector(push_documents=True)
    results = conn.write("document", [
        {"crm_id": "invoice-42", "number": "INV-000042", "total": Decimal("119.00")},
        {"crm_id": "invoice-43", "number": "INV-000043"}])
    assert "/composite/sobjects/Invoice__c/Ledger_Document_Id__c" in org.rsps.calls[-1].request.url
    assert org.patches[0]["records"][0] == {
        "attributes": {"type": "Invoice__c"}, "Ledger_Document_Id__c": "invoice-42",
        "Name": "INV-000042", "Total__c": 119.0}
    assert [(r.ok, r.crm_id, r.code) for r in results] == [
        (True, "invoice-42", None), (False, "invoice-43", "DUPLICATE_VALUE")]


# -- error bodies and the retry / stop decision ----------------------------------------------
def test_malformed_query_400_is_fatal_with_its_code_and_not_retried(org: Org) -> None:
    """Status codes and error responses: the body is an array of ``{"message", "errorCode"}``
    (``fields`` when a field is named); 400 is not retried.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
    """
    sleeps = Sleeper()
    org.refuse = [(400, [{"message": "\nSELECT Nme FROM Account\n       ^\nERROR at Row:1:Column:8"
                          "\nNo such column 'Nme' on entity 'Account'.",
                          "errorCode": "INVALID_FIELD"}], {})]
    with pytest.raises(FatalError) as info:
        list(connector(sleeps).read_changes("account", None))
    assert info.value.code == "INVALID_FIELD" and "No such column" in info.value.message
    assert sleeps.calls == [] and len(org.seen) == 1


def test_total_requests_limit_exceeded_stops_the_run_without_retry(org: Org) -> None:
    """``REQUEST_LIMIT_EXCEEDED`` 403 ``TotalRequests Limit exceeded.``: the org's daily
    allowance is spent; stop (never retry in a loop).
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
    and https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm
    """
    sleeps = Sleeper()
    org.refuse = [(403, [{"message": "TotalRequests Limit exceeded.",
                          "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                   {"Sforce-Limit-Info": "api-usage=5001/5000"})]
    with pytest.raises(BudgetExhausted):
        list(connector(sleeps).read_changes("account", None))
    assert len(org.seen) == 1 and sleeps.calls == []


def test_concurrent_requests_limit_exceeded_is_retried(org: Org) -> None:
    """``REQUEST_LIMIT_EXCEEDED`` with ``ConcurrentRequests (Concurrent API Requests) Limit
    exceeded.``: transient (too many long-running calls at once): back off and retry.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm
    """
    sleeps = Sleeper()
    org.rows["Account"] = [ACCOUNT_A]
    org.refuse = [(403, [{"message": "ConcurrentRequests (Concurrent API Requests) Limit "
                                     "exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], {})]
    pages = list(connector(sleeps).read_changes("account", None))
    assert [r["crm_id"] for p in pages for r in p.records] == ["001D000000IRFmaIAH"]
    assert len(sleeps.calls) == 1


def test_invalid_session_id_401_logs_in_again_once(org: Org) -> None:
    """401 ``[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]``:
    log in again once, then go on.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
    """
    org.rows["Account"] = [ACCOUNT_A]
    org.refuse = [(401, [{"message": "Session expired or invalid",
                          "errorCode": "INVALID_SESSION_ID"}], {})]
    pages = list(connector().read_changes("account", None))
    assert [r["crm_id"] for p in pages for r in p.records] == ["001D000000IRFmaIAH"]
    assert org.tokens == 2


def test_server_unavailable_503_is_retried(org: Org) -> None:
    """503 ``SERVER_UNAVAILABLE``: transient, retried with backoff.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
    """
    sleeps = Sleeper()
    org.rows["Account"] = [ACCOUNT_A]
    org.refuse = [(503, [{"message": "Server is unavailable", "errorCode": "SERVER_UNAVAILABLE"}],
                   {})]
    pages = list(connector(sleeps).read_changes("account", None))
    assert len([r for p in pages for r in p.records]) == 1 and len(sleeps.calls) == 1


def test_limit_info_with_per_app_usage_reads_the_org_figure(org: Org) -> None:
    """``Sforce-Limit-Info: api-usage=25/5000; per-app-api-usage=17/250(appName=sample-
    connected-app)``: the org's allowance is the first figure, not the connected app's.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
    """
    org.rows["Account"] = [ACCOUNT_A]
    org.headers = {**org.headers, "Sforce-Limit-Info":
                   "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)"}
    conn = connector()
    list(conn.read_changes("account", None))
    budget = conn.api_budget()
    assert (budget.used, budget.limit) == (25, 5000)


def test_limits_resource_daily_api_requests_seeds_the_budget(org: Org) -> None:
    """``GET /services/data/vXX.X/limits``: ``{"DailyApiRequests": {"Max", "Remaining",
    "<app name>": {...}}, ...}``; a fresh meter with a reserve learns the usage from it.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm
    """
    limits = {
        "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
        "DailyApiRequests": {"Max": 15000, "Remaining": 14998,
                             "Ant Migration Tool": {"Max": 0, "Remaining": 0},
                             "Salesforce Mobile Dashboards": {"Max": 0, "Remaining": 0}},
        "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
        "DataStorageMB": {"Max": 5, "Remaining": 5},
    }
    org.rsps.add(responses.GET, f"{BASE}/limits/", json=limits)
    org.rows["Account"] = [ACCOUNT_A]
    org.headers = {"Content-Type": "application/json;charset=UTF-8"}   # body only
    conn = connector()
    conn.transport.budget.reserve = 1
    conn.lookup("account", "name", "Test 1")
    budget = conn.api_budget()
    assert budget.limit == 15000 and budget.used is not None and budget.used >= 2


# -- OAuth ----------------------------------------------------------------------------------
def test_client_credentials_token_answer_sets_the_instance_used_after(org: Org) -> None:
    """OAuth 2.0 Client Credentials Flow: ``{"access_token", "signature", "scope",
    "instance_url", "id", "token_type": "Bearer", "issued_at"}``, no refresh token; later
    calls go to ``instance_url``.
    Docs: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
    """
    my_domain = "https://acme.my.salesforce.com"
    org.token_body = {**TOKEN_BODY, "instance_url": my_domain}
    org.register(org.rsps, host=my_domain)
    org.rows["Account"] = [ACCOUNT_A]
    records = connector().lookup("account", "name", "Test 1")
    assert [r["crm_id"] for r in records] == ["001D000000IRFmaIAH"]
    assert org.seen[-1].startswith(f"{my_domain}/services/data/{V}/query/")
    token_call = org.rsps.calls[0].request
    assert parse_qs(token_call.body)["grant_type"] == ["client_credentials"]
    assert token_call.headers["Authorization"].startswith("Basic ")
    assert org.rsps.calls[1].request.headers["Authorization"] == \
        f"Bearer {TOKEN_BODY['access_token']}"


def test_jwt_bearer_token_answer_without_issued_at_or_signature(org: Org,
                                                                tmp_path: Path) -> None:
    """OAuth 2.0 JWT Bearer Flow: ``{"access_token", "scope", "instance_url", "id",
    "token_type": "Bearer"}`` (no ``issued_at``, no ``signature``, no refresh token).
    Docs: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "server.key"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    org.token_body = {"access_token": "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPw"
                                      "uX5VAIrrbbHMuol7GQxnMeYMN7cj8EoWr78nt1u44zU31IbYNNJguseu",
                      "scope": "web openid api id", "instance_url": SF_URL,
                      "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
                      "token_type": "Bearer"}
    org.rows["Account"] = [ACCOUNT_A]
    conn = connector(auth="jwt", credentials={"client_id": "3MVG9...", "username":
                                              "integration@acme.example",
                                              "private_key_file": str(pem)})
    assert [r["crm_id"] for r in conn.lookup("account", "name", "Test 1")] == [
        "001D000000IRFmaIAH"]
    form = parse_qs(org.rsps.calls[0].request.body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]


@pytest.mark.parametrize("text", ["not a key\n",
                                  "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n"
                                  "-----END PRIVATE KEY-----\n"])
def test_a_private_key_file_that_is_not_a_key_is_a_login_refusal_naming_it(
        org: Org, tmp_path: Path, text: str) -> None:
    """The JWT bearer flow signs its assertion with ``private_key_file`` (RS256): a file that
    is not a private key refuses the login naming the file, without a request, and
    ``doctor`` reports a failed login instead of a traceback.
    Docs: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm
    """
    from connectors.registry import doctor_report

    pem = tmp_path / "server.key"
    pem.write_text(text)
    creds = {"client_id": "3MVG9...", "username": "integration@acme.example",
             "private_key_file": str(pem)}
    with pytest.raises(LoginRefused) as info:
        connector(auth="jwt", credentials=creds).lookup("account", "name", "x")
    assert f"private_key_file={pem}" in str(info.value)
    assert "not an RSA private key" in str(info.value)
    assert org.tokens == 0
    report = doctor_report(sf_settings(auth="jwt", credentials=creds), sleep=lambda s: None,
                           clock=lambda: NOW, environ=ENV)
    assert [(r.check, r.status) for r in report] == [("login", "fail")]
    assert f"private_key_file={pem}" in report[0].detail


def test_oauth_error_answer_is_a_login_refusal_not_retried(org: Org) -> None:
    """OAuth error answer ``{"error": "invalid_client", "error_description": "invalid client
    credentials"}`` (400): the login is refused, with Salesforce's code, once.
    Docs: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
    """
    org.rsps.remove(responses.POST, f"{SF_URL}/services/oauth2/token")
    org.rsps.add(responses.POST, f"{SF_URL}/services/oauth2/token", status=400,
                 json={"error": "invalid_client", "error_description": "invalid client credentials"})
    with pytest.raises(LoginRefused) as info:
        connector().lookup("account", "name", "x")
    assert info.value.code == "invalid_client"
    assert len(org.rsps.calls) == 1


def test_userinfo_names_the_user_our_writes_are_stamped_with(org: Org) -> None:
    """``GET /services/oauth2/userinfo``: ``{"sub", "user_id", "organization_id", ...}``.
    Docs: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_userinfo_endpoint.htm
    """
    conn = connector()
    conn.write("account", [{"crm_id": "001D000000IRFmaIAH", "billing_hold": True}])
    assert conn.whoami() == "005B0000005Bk90IAC"


# -- outbound messages ------------------------------------------------------------------------
#: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_understanding.htm
#: (the sample message of "Understanding Outbound Messaging"), the sObject made an Account.
OUTBOUND = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsd="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG[:15]}</OrganizationId>
   <ActionId>04kxx0000000007</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/{ORG[:15]}</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/{ORG[:15]}</PartnerUrl>
   <Notification>
    <Id>04lxx0000000007EAA</Id>
    <sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>001D000000IRFmaIAH</sf:Id>
     <sf:Credit_Hold__c>true</sf:Credit_Hold__c>
     <sf:LastModifiedById>005xx000001SwiUAAS</sf:LastModifiedById>
     <sf:Name>Test 1</sf:Name>
    </sObject>
   </Notification>
   <Notification>
    <Id>04lxx0000000008EAA</Id>
    <sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>001D000000IomazIAB</sf:Id>
     <sf:Credit_Hold__c>false</sf:Credit_Hold__c>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
""".encode()


def test_outbound_message_of_the_docs_is_parsed_per_notification() -> None:
    """Outbound message SOAP envelope: ``notifications`` with ``OrganizationId`` (15
    characters here), ``ActionId``, nil ``SessionId``, ``EnterpriseUrl``, ``PartnerUrl`` and
    ``Notification``s each with ``Id`` and ``sObject xsi:type="sf:Account"``.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_understanding.htm
    """
    events = parse_outbound(OUTBOUND, ORG)
    assert [(e.event_id, e.crm_object, e.crm_id, e.modified_by) for e in events] == [
        ("04lxx0000000007EAA", "Account", "001D000000IRFmaIAH", ("005xx000001SwiUAAS",)),
        ("04lxx0000000008EAA", "Account", "001D000000IomazIAB", ())]


def test_outbound_message_is_stored_and_acknowledged(engine: Engine, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener stores each notification and answers ``notificationsResponse/Ack`` true;
    a re-sent message (same notification ids) stores nothing twice.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_listener.htm
    """
    client = TestClient(build_app(engine, events_settings(tmp_path, monkeypatch)))
    for _ in range(2):
        answer = client.post("/events/salesforce/sf", content=OUTBOUND,
                             headers={"Content-Type": "text/xml; charset=utf-8",
                                      "SOAPAction": '""'})
        assert answer.status_code == 200 and b"<Ack>true</Ack>" in answer.content
    assert SOAP_ACK.encode() in answer.content or b"notificationsResponse" in answer.content
    with engine.connect() as conn:
        rows = conn.execute(select(event_inbox.c.event_id, event_inbox.c.object,
                                   event_inbox.c.crm_id).order_by(event_inbox.c.id)).all()
    assert [tuple(r) for r in rows] == [("04lxx0000000007EAA", "account", "001D000000IRFmaIAH"),
                                        ("04lxx0000000008EAA", "account", "001D000000IomazIAB")]


# -- the whole cycle on documented query answers ----------------------------------------------
def _catalog(org: Org, *, account: dict[str, Any] | None = None) -> None:
    stamp = "2026-03-01T10:00:00.000+0000"
    org.rows["Product2"] = [_rec("Product2", "01t5g000000AbCdAAK", ProductCode="SKU-GOLD",
                                 Name="Gold plan", IsActive=True, Billing_Type__c="Recurring",
                                 Billing_Frequency__c="Monthly", Needs_Provisioning__c=False,
                                 SystemModstamp=stamp)]
    org.rows["PricebookEntry"] = [_rec("PricebookEntry", "01u5g000000AbCdAAK",
                                       Product2Id="01t5g000000AbCdAAK", CurrencyIsoCode="USD",
                                       UnitPrice=100.0, IsActive=True, SystemModstamp=stamp)]
    org.rows["Quote"] = [_rec("Quote", "0Q05g000000AbCdCAK", QuoteNumber="00000042",
                              Name="Gold for Test 1", AccountId="001D000000IRFmaIAH",
                              Status="Accepted", Revision__c=1.0,
                              Subscription_Start_Date__c="2026-03-01", SystemModstamp=stamp)]
    org.rows["QuoteLineItem"] = [_rec("QuoteLineItem", "0QL5g000000AbCdGAK",
                                      QuoteId="0Q05g000000AbCdCAK",
                                      Product2Id="01t5g000000AbCdAAK", Quantity=3.0,
                                      UnitPrice=100.0, ServiceDate="2026-03-01",
                                      SystemModstamp=stamp)]
    org.rows["Account"] = [account or ACCOUNT_A]


def test_a_cycle_on_documented_answers_orders_the_accepted_quote(org: Org, engine: Engine) -> None:
    """Every object read through ``queryAll`` answers in the documented envelope (records with
    ``attributes``, currency and number fields as JSON numbers such as ``100.0`` and ``3.0``,
    dates ``2026-03-01``, stamps ``...000+0000``); the cycle lands them, orders the accepted
    quote, and pushes with sObject Collections.
    Docs: https://developer.salesforce.com/docs/platform/api-rest/guide/dome-query.html
    """
    _catalog(org)
    report = run_cycle(engine, connector())
    assert report.outcome == "ok", report.error
    assert report.handed_off == 1
    with engine.connect() as conn:
        acc = conn.execute(select(accounts.c.ext_id, accounts.c.credit_limit_minor)).one()
        order = conn.execute(select(orders.c.source_ref)).one()
        assert conn.execute(select(quarantine)).all() == []
    assert tuple(acc) == ("001D000000IRFmaIAH", 2500050)
    assert order.source_ref == "sf_test:0Q05g000000AbCdCAK:rev1"
    pushed = {r["id"]: r for p in org.patches for r in p["records"]}
    assert pushed["0Q05g000000AbCdCAK"]["attributes"] == {"type": "Quote"}
    assert pushed["001D000000IRFmaIAH"]["Billing_Hold__c"] is False


def test_documented_account_with_a_control_character_is_quarantined_naming_the_field(
        org: Org, engine: Engine) -> None:
    """A record the boundary refuses (here a name holding a tab, which Salesforce stores)
    goes to quarantine naming the field; the rest of the page lands.
    Docs: https://developer.salesforce.com/docs/platform/api-rest/guide/dome-query.html
    """
    _catalog(org)
    org.rows["Account"] = [{**ACCOUNT_A, "Name": "Test\t1"}, ACCOUNT_B]
    run_cycle(engine, connector(), SyncOptions(objects=("account",)))
    with engine.connect() as conn:
        bad = conn.execute(select(quarantine.c.crm_id, quarantine.c.field)).all()
        landed = conn.execute(select(accounts.c.ext_id)).scalars().all()
    assert [tuple(b) for b in bad] == [("001D000000IRFmaIAH", "name")]
    assert landed == ["001D000000IomazIAB"]


def test_content_version_insert_answer_gives_the_file_id(org: Org) -> None:
    """``POST /sobjects/ContentVersion`` answers 201 ``{"id": "068...", "success": true,
    "errors": []}``.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_sobject_insert_update_blob.htm
    """
    org.rows["Invoice__c"] = [_rec("Invoice__c", "a0B5g00000XyZaBEAV",
                                   Ledger_Document_Id__c="invoice-42")]
    org.rows["ContentVersion"] = []
    org.rsps.add(responses.POST, f"{BASE}/sobjects/ContentVersion/", status=201,
                 json={"id": "0685g00000AbCdEAAV", "success": True, "errors": []})
    org.rsps.add(responses.POST, f"{BASE}/sobjects/ContentVersion", status=201,
                 json={"id": "0685g00000AbCdEAAV", "success": True, "errors": []})
    [result] = connector(push_documents=True).write("document_file", [
        {"crm_id": "invoice-42", "title": "INV-000042", "filename": "INV-000042.pdf",
         "_pdf": b"%PDF-1.7"}])
    assert result.ok and result.crm_id == "0685g00000AbCdEAAV"
    sent = json.loads(org.rsps.calls[-1].request.body)
    assert sent["FirstPublishLocationId"] == "a0B5g00000XyZaBEAV"
    assert base64.b64decode(sent["VersionData"]) == b"%PDF-1.7"


def test_numbers_in_scientific_notation_keep_their_exact_value(org: Org, engine: Engine) -> None:
    """The SOQL query API answers large numbers in scientific notation (``9.0E7``,
    ``1.441209288E7`` for 14,412,092.88); they are exact values, billed as such.
    Docs: https://help.salesforce.com/s/articleView?id=000385889&type=1 (and the query
    envelope: https://developer.salesforce.com/docs/platform/api-rest/guide/dome-query.html)
    """
    _catalog(org, account={**ACCOUNT_A, "Credit_Limit__c": 9.0E7})
    org.rows["PricebookEntry"][0]["UnitPrice"] = 1.441209288E7
    org.rows["QuoteLineItem"][0].update(UnitPrice=1.441209288E7, Quantity=1.0)
    raw = json.dumps(org.rows["Account"][0])
    assert '"Credit_Limit__c": 90000000.0' in raw    # json.dumps writes it plainly: patch it
    org.rows["Account"][0] = json.loads(raw)
    org.headers = dict(org.headers)
    original = org._query

    def scientific(request: Any) -> tuple[int, dict[str, str], str]:
        status, headers, body = original(request)
        return status, headers, body.replace("90000000.0", "9.0E7").replace(
            "14412092.88", "1.441209288E7")

    org.rsps.remove(responses.GET, re.compile(rf"{re.escape(BASE)}/query(All)?/.*"))
    org.rsps.add_callback(responses.GET, re.compile(rf"{re.escape(BASE)}/query(All)?/.*"),
                          scientific)
    [record] = connector().lookup("account", "crm_id", "001D000000IRFmaIAH")
    assert record["credit_limit"] == Decimal("90000000")
    report = run_cycle(engine, connector())
    assert report.outcome == "ok", report.error
    assert report.handed_off == 1
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.credit_limit_minor)).scalar_one() == 9_000_000_000
        assert conn.execute(select(quarantine)).all() == []


def test_a_discounted_quote_line_is_billed_at_its_total_price(org: Org, engine: Engine) -> None:
    """QuoteLineItem: ``UnitPrice`` (sales price), ``Discount`` (percent), ``Subtotal``
    (``UnitPrice`` x ``Quantity``) and ``TotalPrice`` (the subtotal with the discount
    applied); the customer owes ``TotalPrice``.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_quotelineitem.htm
    """
    _catalog(org)
    org.rows["QuoteLineItem"][0].update(ListPrice=100.0, Discount=10.0, Subtotal=300.0,
                                        TotalPrice=270.0)
    report = run_cycle(engine, connector())
    assert report.handed_off == 1
    with engine.connect() as conn:
        sub = conn.execute(select(subscriptions.c.quantity, subscriptions.c.unit_price)).one()
    assert sub.quantity * (sub.unit_price or Decimal(0)) == Decimal("270.00")


def test_outbound_message_of_quote_line_items_names_the_quote_line(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outbound message on QuoteLineItem (``sObject xsi:type="sf:QuoteLineItem"``) is
    stored for the field map's ``quote_line``.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_understanding.htm
    """
    client = TestClient(build_app(engine, events_settings(tmp_path, monkeypatch)))
    body = OUTBOUND.replace(b'sf:Account"', b'sf:QuoteLineItem"').replace(
        b"001D000000IRFmaIAH", b"0QL5g000000AbCdGAK").replace(
        b"001D000000IomazIAB", b"0QL5g000000AbCeGAK")
    assert client.post("/events/salesforce/sf", content=body).status_code == 200
    with engine.connect() as conn:
        rows = conn.execute(select(event_inbox.c.object, event_inbox.c.crm_id)
                            .order_by(event_inbox.c.id)).all()
    assert [tuple(r) for r in rows] == [("quote_line", "0QL5g000000AbCdGAK"),
                                        ("quote_line", "0QL5g000000AbCeGAK")]


def test_a_quote_in_another_currency_than_its_account_is_not_billed_in_the_account_currency(
        org: Org, engine: Engine) -> None:
    """In a multi-currency org Quote and QuoteLineItem carry their own ``CurrencyIsoCode``
    (from the opportunity), which need not be the account's.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_quote.htm
    (CurrencyIsoCode) and https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_quotelineitem.htm
    """
    _catalog(org)
    org.rows["Quote"][0]["CurrencyIsoCode"] = "EUR"
    org.rows["QuoteLineItem"][0]["CurrencyIsoCode"] = "EUR"
    run_cycle(engine, connector())
    with engine.connect() as conn:
        prices = conn.execute(select(subscriptions.c.unit_price)).scalars().all()
        bad = [tuple(r) for r in conn.execute(select(quarantine.c.field, quarantine.c.value))]
    assert prices == [], "an EUR price was ordered as USD"
    assert ("currency", "EUR") in bad


LOGIN_OK = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns="urn:partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <loginResponse>
   <result>
    <metadataServerUrl>https://acme.my.salesforce.com/services/Soap/m/59.0/00DB0000000TfcR</metadataServerUrl>
    <passwordExpired>false</passwordExpired>
    <sandbox>false</sandbox>
    <serverUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/00DB0000000TfcR</serverUrl>
    <sessionId>00DB0000000TfcR!AQ0AQHvYlNbuVkQ0i4xsJd0aPo2Bq</sessionId>
    <userId>005B0000005Bk90IAC</userId>
    <userInfo><accessibilityMode>false</accessibilityMode><currencySymbol>$</currencySymbol>
     <orgId>00DB0000000TfcRMAS</orgId><userEmail>integration@acme.example</userEmail>
     <userFullName>Integration User</userFullName><userName>integration@acme.example</userName>
    </userInfo>
   </result>
  </loginResponse>
 </soapenv:Body>
</soapenv:Envelope>"""

LOGIN_FAULT = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:sf="urn:fault.partner.soap.sforce.com"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <soapenv:Fault>
   <faultcode>sf:INVALID_LOGIN</faultcode>
   <faultstring>INVALID_LOGIN: Invalid username, password, security token; or user locked out.</faultstring>
   <detail>
    <sf:LoginFault xsi:type="sf:LoginFault">
     <sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>
   <sf:exceptionMessage>Invalid username, password, security token; or user locked out.</sf:exceptionMessage>
    </sf:LoginFault>
   </detail>
  </soapenv:Fault>
 </soapenv:Body>
</soapenv:Envelope>"""

PASSWORD = {"username": "integration@acme.example", "password": "env:SF_SECRET",
            "security_token": "env:SF_SECRET"}


def test_soap_login_response_sets_the_session_and_its_instance(org: Org) -> None:
    """SOAP ``login()`` (``auth = "password"`` without a connected app): ``loginResponse/
    result`` with ``serverUrl`` and ``sessionId``; later REST calls go to the server's host.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login_loginresult.htm
    """
    my_domain = "https://acme.my.salesforce.com"
    org.rsps.add(responses.POST, f"{SF_URL}/services/Soap/u/{V[1:]}", body=LOGIN_OK,
                 content_type="text/xml; charset=utf-8")
    org.register(org.rsps, host=my_domain)
    org.rows["Account"] = [ACCOUNT_A]
    assert connector(auth="password", credentials=PASSWORD).lookup("account", "name", "Test 1")
    assert org.seen[-1].startswith(f"{my_domain}/services/data/{V}/query/")
    rest = [c.request for c in org.rsps.calls if "/query/" in c.request.url][-1]
    assert rest.headers["Authorization"] == "Bearer 00DB0000000TfcR!AQ0AQHvYlNbuVkQ0i4xsJd0aPo2Bq"


def test_soap_login_fault_is_a_refusal_with_its_exception_code_not_retried(org: Org) -> None:
    """A refused SOAP ``login()`` answers 500 with a ``soapenv:Fault`` whose ``sf:LoginFault``
    gives ``sf:exceptionCode`` ``INVALID_LOGIN``: refused once, not retried as a 5xx.
    Docs: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login.htm
    """
    sleeps = Sleeper()
    org.rsps.add(responses.POST, f"{SF_URL}/services/Soap/u/{V[1:]}", body=LOGIN_FAULT,
                 status=500, content_type="text/xml; charset=utf-8")
    with pytest.raises(LoginRefused) as info:
        connector(sleeps, auth="password", credentials=PASSWORD).lookup("account", "name", "x")
    assert info.value.code == "INVALID_LOGIN"
    assert sleeps.calls == [] and len(org.rsps.calls) == 1
