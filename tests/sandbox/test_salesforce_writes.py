"""Record writes: sObject Collections (simple-salesforce `restful`) and single sObject rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from conftest import sf_json
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connectors.sandbox.server import Sandbox

UTC = dt.UTC


def _rec(sfbox: Sandbox, index: int, **fields: Any) -> dict:
    assert sfbox.salesforce is not None
    return {"attributes": {"type": "Account"}, "id": sfbox.salesforce.account_id(index), **fields}


def test_collection_update_stamps_rows_from_the_clock(sf: Any, sfbox: Sandbox) -> None:
    sfbox.clock.set(dt.datetime(2026, 11, 21, 23, 43, 43, 250000, tzinfo=UTC))
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        _rec(sfbox, 1, Billing_Hold__c=True, Billing_Hold_Reasons__c="credit_limit;overdue",
             Open_Balance__c=1234.56, Oldest_Overdue_Days__c=12,
             Last_Invoice_Date__c="2026-11-01"),
        _rec(sfbox, 2, Available_Credit__c=0)]})
    assert [r["success"] for r in results] == [True, True]
    row = sf.Account.get(_rec(sfbox, 1)["id"])
    assert row["Billing_Hold__c"] is True and row["Open_Balance__c"] == 1234.56
    assert row["Billing_Hold_Reasons__c"] == "credit_limit;overdue"
    assert row["Oldest_Overdue_Days__c"] == 12 and row["Last_Invoice_Date__c"] == "2026-11-01"
    assert row["SystemModstamp"] == row["LastModifiedDate"] == "2026-11-21T23:43:43.250+0000"


def test_per_record_errors_in_order(sf: Any, sfbox: Sandbox) -> None:
    records = [
        _rec(sfbox, 1, Billing_Hold__c=True),
        _rec(sfbox, 2, Unknown__c=1),
        _rec(sfbox, 3, Billing_Hold__c="yes"),
        _rec(sfbox, 4, Billing_Hold_Reasons__c="x" * 256),
        _rec(sfbox, 5, SystemModstamp="2026-01-01T00:00:00Z"),
        {"attributes": {"type": "Account"}, "id": "001Dn00zzzzzzzzIAA", "Billing_Hold__c": True},
        {"attributes": {"type": "Account"}, "id": "not-an-id", "Billing_Hold__c": True},
    ]
    results = sf.restful("composite/sobjects", method="PATCH",
                         json={"allOrNone": False, "records": records})
    assert [r["success"] for r in results] == [True] + [False] * 6
    codes = [r["errors"][0]["statusCode"] for r in results[1:]]
    assert codes == ["INVALID_FIELD", "INVALID_TYPE_ON_FIELD_IN_RECORD", "STRING_TOO_LONG",
                     "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_CROSS_REFERENCE_KEY",
                     "MALFORMED_ID"]
    assert results[3]["errors"][0]["fields"] == ["Billing_Hold_Reasons__c"]
    again = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        _rec(sfbox, 8, Billing_Hold__c=True), _rec(sfbox, 8, Billing_Hold__c=False)]})
    assert again[1]["errors"][0]["statusCode"] == "DUPLICATE_VALUE" and again[0]["success"]
    assert [r["id"] for r in results] == [r["id"] for r in records]


def test_all_or_none_rolls_everything_back(sf: Any, sfbox: Sandbox) -> None:
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        _rec(sfbox, 1, Billing_Hold__c=True), _rec(sfbox, 2, Oldest_Overdue_Days__c="many")]})
    assert [r["success"] for r in results] == [False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert sf.Account.get(_rec(sfbox, 1)["id"])["Billing_Hold__c"] is False


def test_more_than_200_records_is_refused_whole(sf: Any, sfbox: Sandbox, sf_http: Any) -> None:
    records = [_rec(sfbox, i, Billing_Hold__c=True) for i in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.restful("composite/sobjects", method="PATCH",
                   json={"allOrNone": False, "records": records})
    assert err.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    ok = sf.restful("composite/sobjects", method="PATCH",
                    json={"allOrNone": False, "records": records[:200]})
    assert len(ok) == 200 and all(r["success"] for r in ok)
    assert sfbox.counters.get("salesforce", "composite/sobjects", "PATCH") == 2


def test_collection_create_and_delete(sf: Any, sfbox: Sandbox) -> None:
    created = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Account"}, "Name": "Sandbox New Ltd", "CurrencyIsoCode": "GBP"},
        {"attributes": {"type": "Account"}, "CurrencyIsoCode": "GBP"}]})
    assert created[0]["success"] and created[0]["id"].startswith("001")
    assert created[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    new_id = created[0]["id"]
    removed = sf.restful("composite/sobjects", method="DELETE",
                         params={"ids": new_id, "allOrNone": "false"})
    assert removed == [{"id": new_id, "success": True, "errors": []}]


def test_single_record_get_patch_delete(sf_http: Any, sfbox: Sandbox) -> None:
    assert sfbox.salesforce is not None
    account = sfbox.salesforce.account_id(9)
    got = sf_json(sf_http.call("GET", f"/sobjects/Account/{account}"))
    assert got["Id"] == account and "Credit_Limit__c" in got and got["attributes"]["type"] == "Account"
    patched = sf_http.call("PATCH", f"/sobjects/Account/{account}",
                           json={"Last_Invoice_Number__c": "INV-000123"})
    assert patched.status_code == 204
    bad = sf_http.call("PATCH", f"/sobjects/Account/{account}", json={"Credit_Hold__c": "no"})
    assert bad.status_code == 400
    assert sf_json(bad)[0]["errorCode"] == "INVALID_TYPE_ON_FIELD_IN_RECORD"
    assert sf_json(bad)[0]["fields"] == ["Credit_Hold__c"]
    quote = sfbox.salesforce.admin("create_quote", {"account_id": account})["id"]
    picklist = sf_http.call("PATCH", f"/sobjects/Quote/{quote}", json={"Status": "Won"})
    assert sf_json(picklist)[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert sf_http.call("DELETE", f"/sobjects/Account/{account}").status_code == 204
    gone = sf_http.call("GET", f"/sobjects/Account/{account}")
    assert gone.status_code == 404 and sf_json(gone)[0]["errorCode"] == "ENTITY_IS_DELETED"
    missing = sf_http.call("GET", "/sobjects/Account/001Dn00zzzzzzzzIAA")
    assert missing.status_code == 404 and sf_json(missing)[0]["errorCode"] == "NOT_FOUND"
