"""`doctor_report`: describe endpoints, missing fields, unverifiable sandboxes, bad credentials."""

from __future__ import annotations

import json
import re
from typing import Any

import responses
from conn_support import ENV, SF_URL, sf_settings
from fake_sf import BASE, FakeSalesforce

from connectors.registry import doctor_report


def describe(fields: list[str]) -> dict[str, Any]:
    return {"fields": [{"name": f, "updateable": True} for f in fields]}


@responses.activate
def test_missing_field_is_reported_before_a_run() -> None:
    FakeSalesforce().register(responses.mock)
    responses.get(f"{BASE}/limits/", json={}, headers={"Sforce-Limit-Info": "api-usage=5/1000"})
    full = ["Id", "Name", "AccountNumber", "CurrencyIsoCode", "BillingCountryCode",
            "BillingStateCode", "Credit_Limit__c", "Credit_Hold__c", "SystemModstamp",
            "Billing_Hold__c", "Billing_Hold_Reasons__c", "Open_Balance__c",
            "Available_Credit__c", "Credit_Exposure__c", "Oldest_Overdue_Days__c",
            "Last_Invoice_Number__c"]  # Last_Invoice_Date__c is missing
    responses.get(f"{BASE}/sobjects/Account/describe", json=describe(full))
    responses.get(re.compile(rf"{re.escape(BASE)}/sobjects/\w+/describe"), status=404,
                  json=[{"errorCode": "NOT_FOUND", "message": "The requested resource does "
                                                              "not exist"}])
    results = {r.check: r for r in doctor_report(sf_settings(), environ=ENV)}
    assert results["login"].status == "ok"
    assert results["api budget"].detail == "5/1000 used"
    account = results["fields account (Account)"]
    assert account.status == "fail" and "Last_Invoice_Date__c" in account.detail
    assert results["fields quote (Quote)"].status == "cannot verify"


@responses.activate
def test_bad_credentials_are_a_failed_check_not_a_crash() -> None:
    responses.post(f"{SF_URL}/services/oauth2/token", status=400,
                   body=json.dumps({"error": "invalid_client",
                                    "error_description": "invalid client credentials"}))
    results = doctor_report(sf_settings(), environ=ENV)
    assert [(r.check, r.status) for r in results] == [("login", "fail")]
    assert "invalid_client" in results[0].detail


def test_missing_environment_variable_is_reported() -> None:
    results = doctor_report(sf_settings(), environ={})
    assert results[0].status == "fail" and "SF_SECRET" in results[0].detail


def test_field_map_verdict_missing_first_then_not_updateable_then_ok() -> None:
    from connectors.base import field_map_check

    texts = {"missing_text": "Account has no field(s)", "locked_text": "not updateable"}
    missing = field_map_check("sf", "fields account", 3, {"B__c", "A__c"}, ["C__c"], **texts)
    assert (missing.status, missing.detail) == ("fail", "Account has no field(s): A__c, B__c")
    locked = field_map_check("sf", "fields account", 3, set(), ["C__c"], **texts)
    assert (locked.status, locked.detail) == ("fail", "not updateable: C__c")
    fine = field_map_check("sf", "fields account", 3, set(), [], **texts)
    assert (fine.status, fine.detail) == ("ok", "3 fields mapped")
