"""Writes: PATCH with and without If-Match, upsert, POST, DELETE, validation errors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import requests
from test_dataverse_harness import Dataverse, assert_shape, fixture, load_json

MOMENT = dt.datetime(2026, 11, 21, 23, 43, 43, tzinfo=dt.UTC)


def _row(dv: Dataverse, dv_http: requests.Session, guid: str) -> dict:
    return load_json(dv.get(dv_http, f"accounts({guid})").text)


def test_patch_with_matching_etag_bumps_version_and_modifiedon(dv: Dataverse,
                                                               dv_http: requests.Session) -> None:
    guid = dv.side.admin("guid", {"index": 11})["id"]
    before = _row(dv, dv_http, guid)
    dv.ctx.clock.set(MOMENT)
    resp = dv_http.patch(f"{dv.api}/accounts({guid})", json={
        "new_billinghold": True, "new_billingholdreasons": "credit_limit;overdue",
        "new_openbalance": 1250.5, "new_availablecredit": 23749.50,
        "new_oldestoverduedays": 12, "new_lastinvoicedate": "2026-11-01"},
        headers=dv.headers(**{"If-Match": before["@odata.etag"]}))
    assert resp.status_code == 204, resp.text
    assert resp.headers["OData-EntityId"] == f"{dv.api}/accounts({guid})"
    after = _row(dv, dv_http, guid)
    assert after["versionnumber"] > before["versionnumber"]
    assert after["@odata.etag"] == f'W/"{after["versionnumber"]}"'
    assert after["modifiedon"] == "2026-11-21T23:43:43Z"
    assert after["new_openbalance"] == Decimal("1250.5")
    assert after["new_availablecredit"] == Decimal("23749.5")
    assert after["name"] == before["name"]
    assert_shape(after, fixture("dataverse_rows.json")["accounts"] | {"@odata.context": ""})


def test_decimal_strings_need_ieee754_compatible(dv: Dataverse, dv_http: requests.Session) -> None:
    guid = dv.side.admin("guid", {"index": 10})["id"]
    url = f"{dv.api}/accounts({guid})"
    refused = dv_http.patch(url, json={"new_openbalance": "0.10"}, headers=dv.headers())
    assert refused.status_code == 400
    accepted = dv_http.patch(url, json={"new_openbalance": "0.10"}, headers=dv.headers(**{
        "Content-Type": "application/json; IEEE754Compatible=true"}))
    assert accepted.status_code == 204
    assert _row(dv, dv_http, guid)["new_openbalance"] == Decimal("0.1")


def test_stale_etag_answers_412_and_changes_nothing(dv: Dataverse,
                                                    dv_http: requests.Session) -> None:
    guid = dv.side.admin("guid", {"index": 12})["id"]
    stale = _row(dv, dv_http, guid)["@odata.etag"]
    dv.side.admin("set_creditonhold", {"id": guid, "value": True})  # finance edits the row
    resp = dv_http.patch(f"{dv.api}/accounts({guid})", json={"creditonhold": False},
                      headers=dv.headers(**{"If-Match": stale}))
    assert resp.status_code == 412
    body = load_json(resp.text)
    assert_shape(body, fixture("dataverse_answers.json")["error"])
    assert body["error"]["code"] == "0x80060882"
    assert _row(dv, dv_http, guid)["creditonhold"] is True


def test_patch_without_if_match_is_last_writer_wins(dv: Dataverse,
                                                    dv_http: requests.Session) -> None:
    guid = dv.side.admin("guid", {"index": 13})["id"]
    dv.side.admin("update", {"table": "accounts", "id": guid, "values": {"name": "Edited"}})
    resp = dv_http.patch(f"{dv.api}/accounts({guid})?$select=name,new_billinghold",
                      json={"new_billinghold": False},
                      headers=dv.headers(Prefer="return=representation"))
    assert resp.status_code == 200
    body = resp.json()
    assert body["new_billinghold"] is False and body["name"] == "Edited"
    assert body["@odata.context"] == f"{dv.api}/$metadata#accounts(name,new_billinghold)/$entity"


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"new_unknownfield": 1}, ("The property 'new_unknownfield' does not exist on type "
                               "'Microsoft.Dynamics.CRM.account'")),
    ({"creditlimit": "lots"}, "Cannot convert the literal 'lots'"),
    ({"creditonhold": "yes"}, "Edm.Boolean"),
    ({"new_oldestoverduedays": 1.5}, "Edm.Int32"),
    ({"new_lastinvoicedate": "21/11/2026"}, "Edm.Date"),
    ({"_transactioncurrencyid_value": "237e5c73-419b-e1b3-a342-bc5eea2b9546"},
     "Invalid property '_transactioncurrencyid_value'"),
    ({"parentaccountid@odata.bind": "/accounts(237e5c73-419b-e1b3-a342-bc5eea2b9546)"},
     "undeclared property 'parentaccountid'"),
])
def test_bad_payloads_answer_400_and_change_nothing(dv: Dataverse, dv_http: requests.Session,
                                                    payload: dict, fragment: str) -> None:
    guid = dv.side.admin("guid", {"index": 14})["id"]
    before = _row(dv, dv_http, guid)
    resp = dv_http.patch(f"{dv.api}/accounts({guid})", json={"new_billinghold": True, **payload},
                      headers=dv.headers())
    assert resp.status_code == 400
    body = load_json(resp.text)
    assert body["error"]["code"] == "0x80060888"
    assert fragment in body["error"]["message"]
    assert _row(dv, dv_http, guid) == before


def test_if_match_on_a_missing_row_is_404_without_it_an_upsert(dv: Dataverse,
                                                               dv_http: requests.Session) -> None:
    guid = "7d4a8b0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    resp = dv_http.patch(f"{dv.api}/accounts({guid})", json={"name": "Nope"},
                      headers=dv.headers(**{"If-Match": "*"}))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "0x80040217"
    resp = dv_http.patch(f"{dv.api}/accounts({guid})", json={"name": "Upserted"},
                      headers=dv.headers())
    assert resp.status_code == 204
    assert _row(dv, dv_http, guid)["name"] == "Upserted"


def test_post_creates_with_lookup_bind_and_delete_removes(dv: Dataverse,
                                                          dv_http: requests.Session) -> None:
    usd = dv.get(dv_http, "transactioncurrencies?$filter=isocurrencycode eq 'USD'").json()
    currency = usd["value"][0]["transactioncurrencyid"]
    resp = dv_http.post(f"{dv.api}/accounts", json={
        "name": "Created Ltd", "creditlimit": 5000,
        "transactioncurrencyid@odata.bind": f"/transactioncurrencies({currency})"},
        headers=dv.headers(Prefer="return=representation"))
    assert resp.status_code == 201, resp.text
    created = load_json(resp.text)
    assert created["_transactioncurrencyid_value"] == currency
    assert created["creditlimit"] == 5000 and created["statecode"] == 0
    guid = created["accountid"]
    plain = dv_http.post(f"{dv.api}/accounts", json={"name": "Quiet"}, headers=dv.headers())
    assert plain.status_code == 204 and plain.headers["OData-EntityId"].startswith(
        f"{dv.api}/accounts(")
    stale = dv_http.delete(f"{dv.api}/accounts({guid})",
                           headers=dv.headers(**{"If-Match": 'W/"1"'}))
    assert stale.status_code == 412
    assert dv_http.delete(f"{dv.api}/accounts({guid})", headers=dv.headers()).status_code == 204
    assert dv.get(dv_http, f"accounts({guid})").status_code == 404
    assert dv_http.delete(f"{dv.api}/accounts({guid})", headers=dv.headers()).status_code == 404


def test_quote_push_fields_are_writable(dv: Dataverse, dv_http: requests.Session) -> None:
    quote = dv.get(dv_http, "quotes?$top=1&$select=quotenumber").json()["value"][0]
    resp = dv_http.patch(f"{dv.api}/quotes({quote['quoteid']})", json={
        "new_ordernumber": "ORD-000001", "new_provisioningstatus": "awaiting_hold_release"},
        headers=dv.headers(**{"If-Match": quote["@odata.etag"]}))
    assert resp.status_code == 204
    row = dv.get(dv_http, f"quotes({quote['quoteid']})?$select=new_ordernumber").json()
    assert row["new_ordernumber"] == "ORD-000001"


def test_method_not_allowed_and_bad_json(dv: Dataverse, dv_http: requests.Session) -> None:
    assert dv_http.put(f"{dv.api}/accounts", headers=dv.headers()).status_code == 405
    guid = dv.side.admin("guid", {"index": 1})["id"]
    resp = dv_http.patch(f"{dv.api}/accounts({guid})", data=b"{not json",
                      headers=dv.headers(**{"Content-Type": "application/json"}))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "0x80060888"


def test_rows_name_their_last_writer_as_whoami_names_the_caller(
        dv: Dataverse, dv_http: requests.Session) -> None:
    """`_modifiedby_value` is the systemuser who last wrote the row: the calling client's
    application user (what WhoAmI answers that client) for a Web API write, the org's person
    for an admin action (a change made by hand) and for the seed rows; it can be filtered on
    and is not writable."""
    me = load_json(dv.get(dv_http, "WhoAmI").text)["UserId"]
    guid = dv.side.admin("guid", {"index": 13})["id"]
    person = _row(dv, dv_http, guid)["_modifiedby_value"]
    assert person != me
    assert dv_http.patch(f"{dv.api}/accounts({guid})", json={"new_openbalance": 5},
                         headers=dv.headers()).status_code == 204
    assert _row(dv, dv_http, guid)["_modifiedby_value"] == me
    mine = load_json(dv.get(dv_http, f"accounts?$select=accountid,_modifiedby_value"
                            f"&$filter=_modifiedby_value eq {me}").text)["value"]
    assert [r["accountid"] for r in mine] == [guid]
    dv.side.admin("set_creditonhold", {"id": guid, "value": True})      # a person's edit
    assert _row(dv, dv_http, guid)["_modifiedby_value"] == person
    refused = dv_http.patch(f"{dv.api}/accounts({guid})", json={"_modifiedby_value": me},
                            headers=dv.headers())
    assert refused.status_code == 400
    # another app registration is another application user
    dv.side.admin("add_client", {"client_id": "other-app", "client_secret": "s3cret"})
    token = dv.msal_app(credential="s3cret", client_id="other-app").acquire_token_for_client(
        scopes=[dv.info["scope"]])["access_token"]
    other = load_json(dv_http.get(f"{dv.api}/WhoAmI", headers={
        **dv.headers(), "Authorization": f"Bearer {token}"}).text)["UserId"]
    assert other not in (me, person)
