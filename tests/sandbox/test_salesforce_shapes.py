"""Answer shapes compared field by field (keys and value kinds) with documented examples."""

from __future__ import annotations

import datetime as dt
from typing import Any

from conftest import assert_same_shape, sf_fixture, sf_json

from connectors.sandbox.server import Sandbox

UTC = dt.UTC


def test_token_answer_and_error(sf_http: Any, sfbox: Sandbox) -> None:
    assert sfbox.salesforce is not None
    creds = sfbox.salesforce.credentials
    url = f"{sfbox.url}/services/oauth2/token"
    ok = sf_http.session.post(url, data={"grant_type": "client_credentials",
                                         "client_id": creds.client_id,
                                         "client_secret": creds.client_secret})
    assert_same_shape(sf_fixture("salesforce_token.json"), sf_json(ok))
    bad = sf_http.session.post(url, data={"grant_type": "password", "client_id": creds.client_id,
                                          "client_secret": creds.client_secret,
                                          "username": creds.username, "password": "no"})
    assert_same_shape(sf_fixture("salesforce_oauth_error.json"), sf_json(bad))


def test_query_page(sf_http: Any) -> None:
    page = sf_json(sf_http.query("SELECT Id, Name, CurrencyIsoCode, Credit_Limit__c, "
                                 "Credit_Hold__c, SystemModstamp FROM Account"))
    assert_same_shape(sf_fixture("salesforce_query_page.json"), page)


def test_collection_results(sf_http: Any, sfbox: Sandbox) -> None:
    assert sfbox.salesforce is not None
    ids = [sfbox.salesforce.account_id(i) for i in (1, 2)]
    results = sf_json(sf_http.call("PATCH", "/composite/sobjects", json={
        "allOrNone": False, "records": [
            {"attributes": {"type": "Account"}, "id": ids[0], "Billing_Hold__c": True},
            {"attributes": {"type": "Account"}, "id": ids[1],
             "Billing_Hold_Reasons__c": "r" * 300}]}))
    expected = sf_fixture("salesforce_collection_results.json")
    assert_same_shape(expected["ok"], results[0])
    assert_same_shape(expected["failed"], results[1])


def test_error_bodies(sf_http: Any, sfbox: Sandbox) -> None:
    expected = sf_fixture("salesforce_errors.json")
    assert_same_shape(expected["malformed_query"], sf_json(sf_http.query("SELECT Id FRM X")))
    assert_same_shape(expected["invalid_session"],
                      sf_json(sf_http.query("SELECT Id FROM Account", token="nope")))
    sfbox.faults.add("salesforce", "query", "503", count=1)
    assert_same_shape(expected["unavailable"], sf_json(sf_http.query("SELECT Id FROM Account")))
    too_many = sf_http.call("PATCH", "/composite/sobjects", json={"allOrNone": False,
                                                                  "records": [{}] * 201})
    assert_same_shape(expected["too_many_records"], sf_json(too_many))
    assert sfbox.salesforce is not None
    sfbox.salesforce.admin("set_api_usage", {"used": 100_000})
    assert_same_shape(expected["limit_exceeded"], sf_json(sf_http.query("SELECT Id FROM Account")))


def test_replication_answers(sf_http: Any, sfbox: Sandbox) -> None:
    assert sfbox.salesforce is not None
    sfbox.clock.set(dt.datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    sfbox.salesforce.admin("delete_account", {"index": 1})
    sfbox.salesforce.admin("set_hold", {"index": 2})
    window = {"start": "2026-11-21T11:00:00+00:00", "end": "2026-11-21T13:00:00+00:00"}
    expected = sf_fixture("salesforce_replication.json")
    deleted = sf_json(sf_http.call("GET", "/sobjects/Account/deleted/", params=window))
    assert_same_shape(expected["deleted"], deleted)
    updated = sf_json(sf_http.call("GET", "/sobjects/Account/updated/", params=window))
    assert_same_shape(expected["updated"], updated)
