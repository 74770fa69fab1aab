"""Contract: the project's own Dataverse connector and default field map work against the
sandbox unchanged (docs/FIELDS.md), and the server's /__admin__ route reaches this side."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import requests
from test_dataverse_harness import SMALL, Dataverse

from connectors.registry import build_connector
from connectors.settings import parse_connection


def _connector(dv: Dataverse) -> Any:
    base = dv.info["api_url"].removesuffix("/api/data/v9.2")
    settings = parse_connection("dv", {
        "crm": "dynamics", "url": base, "tenant_id": dv.info["tenant"], "authority_host": base,
        "validate_authority": False, "ca_bundle": dv.ca_bundle,
        "credentials": {"client_id": "env:DV_ID", "client_secret": "env:DV_SECRET"}})
    return build_connector(settings, environ={"DV_ID": dv.info["client_id"],
                                              "DV_SECRET": dv.info["client_secret"]})


def test_connector_checks_reads_deltas_and_writes(dv: Dataverse) -> None:
    conn = _connector(dv)
    assert [r.status for r in conn.check()] == ["ok"] * 6
    cursors: dict[str, str] = {}
    counts: dict[str, int] = {}
    for obj in conn.objects():
        counts[obj] = 0
        for page in conn.read_changes(obj, None):
            counts[obj] += len(page.records)
            cursors[obj] = page.cursor
    assert counts["account"] == SMALL
    assert counts["quote_line"] == 3 * counts["quote"] > 0
    dv.side.admin("set_creditonhold", {"index": 2, "value": True})
    gone = dv.side.admin("delete_account", {"index": 3})["deleted"]
    pages = list(conn.read_changes("account", cursors["account"]))
    assert [len(p.records) for p in pages] == [1]
    assert [d.crm_id for d in pages[0].deletions] == [gone]
    assert pages[0].records[0]["credit_hold"] is True
    first = pages[0].records[0]
    results = conn.write("account", [{"crm_id": first["crm_id"], "billing_hold": True,
                                      "open_balance": Decimal("12.34"),
                                      "_etag": first.get("_etag")}])
    assert [r.ok for r in results] == [True]
    row = dv.side.admin("get", {"id": first["crm_id"]})
    assert row["new_billinghold"] is True and row["new_openbalance"] == 12.34


def test_admin_route_reaches_the_dataverse_side(dv: Dataverse, dv_http: requests.Session) -> None:
    base = dv.info["api_url"].removesuffix("/api/data/v9.2")
    guid = dv.side.admin("guid", {"index": 9})["id"]
    resp = dv_http.post(f"{base}/__admin__/dataverse/set_creditlimit",
                        json={"id": guid, "value": "777.70"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["creditlimit"] == 777.7
    bad = dv_http.post(f"{base}/__admin__/dataverse/no_such_action", json={})
    assert bad.status_code == 400
    assert dv.ctx.counters.total("dataverse") == 0  # admin calls are not API calls


def test_entity_definitions_describe_the_tables(dv: Dataverse, dv_http: requests.Session) -> None:
    attrs = dv.get(dv_http, "EntityDefinitions(LogicalName='account')/Attributes"
                   "?$select=LogicalName,IsValidForUpdate").json()["value"]
    by_name = {a["LogicalName"]: a["IsValidForUpdate"] for a in attrs}
    assert by_name["transactioncurrencyid"] is True and by_name["modifiedon"] is False
    assert by_name["new_billinghold"] is True and "_transactioncurrencyid_value" not in by_name
    product = dv.get(dv_http, "EntityDefinitions(LogicalName='product')").json()
    assert product["EntitySetName"] == "products" and product["ChangeTrackingEnabled"] is False
    assert dv.get(dv_http, "EntityDefinitions(LogicalName='contact')").status_code == 404
