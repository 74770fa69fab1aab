"""A record in quarantine that the rep deletes in the CRM, read back as the CRM reports the
deletion (Salesforce ``queryAll`` with ``IsDeleted``, Dataverse change tracking's removed
entries), on the real worker against the sandbox: its entry is closed, and an accepted quote
that waited for a refused line is ordered with exactly the lines left."""
from __future__ import annotations

from typing import Any

import pytest
from e2e_world import dataverse_usd, order_items
from sqlalchemy import func, select

from sync.tables import quarantine

pytestmark = pytest.mark.e2e


def _entry(world: Any, connection: str, crm_id: str) -> Any:
    with world.engine.connect() as conn:
        return conn.execute(select(quarantine).where(
            quarantine.c.connection == connection,
            func.lower(quarantine.c.crm_id) == crm_id.lower())).mappings().one()


def _open(world: Any, connection: str) -> set[str]:
    with world.engine.connect() as conn:
        return {str(i).lower() for i in conn.execute(select(quarantine.c.crm_id).where(
            quarantine.c.connection == connection, quarantine.c.status == "open")).scalars()}


def _sf_account(world: Any, name: str, **fields: Any) -> str:
    return str(world.sf("create", object="Account", fields={
        "Name": name, "CurrencyIsoCode": "USD", "BillingCountryCode": "US",
        "Credit_Limit__c": 10_000_000, **fields})["id"])


def test_salesforce_refused_line_deleted_by_the_rep_lets_the_quote_go_on(world: Any) -> None:
    world.cycle("sf")
    quote = world.sf("create_quote", account_id=_sf_account(world, "Deleted line"),
                     status="Accepted", start_date="2026-12-01",
                     lines=[{"product_index": 0, "quantity": 2, "unit_price": 10},
                            {"product_index": 1, "quantity": -3, "unit_price": 20}])
    bad = quote["line_ids"][1]
    world.cycle("sf")
    assert _entry(world, "sf", bad)["field"] == "quantity"
    assert order_items(world, "sf", quote["id"]) is None
    world.sf("delete", object="QuoteLineItem", id=bad)
    world.cycle("sf")
    assert order_items(world, "sf", quote["id"]) == 1
    assert _entry(world, "sf", bad)["status"] == "resolved"
    assert _open(world, "sf") == set()


def test_salesforce_refused_account_deleted_by_the_rep_closes_its_entry(world: Any) -> None:
    world.cycle("sf")
    bad = _sf_account(world, "Refused then deleted", Credit_Limit__c=-5)
    world.cycle("sf")
    assert _entry(world, "sf", bad)["status"] == "open"
    world.sf("delete", object="Account", id=bad)
    world.cycle("sf")
    entry = _entry(world, "sf", bad)
    assert (entry["status"], entry["field"]) == ("resolved", "credit_limit")
    assert entry["reason"] == "deleted in the CRM; it was refused: must not be negative"
    assert _open(world, "sf") == set()


def _dv_won_quote(world: Any, quantities: tuple[int, ...]) -> tuple[str, list[str]]:
    currency = dataverse_usd(world)
    product = world.dv("guid", table="products", index=0)["id"]
    account = world.dv("create", table="accounts", row={
        "name": "Deleted line", "creditlimit": 10_000_000, "creditonhold": False,
        "address1_country": "US", **currency})["accountid"]
    quote = world.dv("create", table="quotes", row={
        "name": "Q deleted line", "quotenumber": "QN-DEL-1", "statecode": 0, "statuscode": 1,
        "revisionnumber": 0, "customerid_account@odata.bind": f"/accounts({account})",
        **currency})["quoteid"]
    world.dv("set_local_date", table="quotes", id=quote, column="effectivefrom",
             date="2027-01-01")
    lines = [str(world.dv("create", table="quotedetails", row={
        "quoteid@odata.bind": f"/quotes({quote})", "productid@odata.bind": f"/products({product})",
        "lineitemnumber": n, "quantity": q, "priceperunit": 10, "extendedamount": 10 * q,
        **currency})["quotedetailid"]) for n, q in enumerate(quantities, 1)]
    world.dv("win_quote", id=quote)
    return str(quote), lines


def test_dataverse_refused_line_deleted_by_the_rep_lets_the_quote_go_on(world: Any) -> None:
    world.cycle("d365")
    quote, (_, bad) = _dv_won_quote(world, (2, -3))
    world.cycle("d365")
    assert _entry(world, "d365", bad)["field"] == "quantity"
    assert order_items(world, "d365", quote) is None
    world.dv("delete", table="quotedetails", id=bad)
    world.cycle("d365")
    assert order_items(world, "d365", quote) == 1
    assert _entry(world, "d365", bad)["status"] == "resolved"
    assert _open(world, "d365") == set()


def test_dataverse_refused_account_deleted_by_the_rep_closes_its_entry(world: Any) -> None:
    world.cycle("d365")
    bad = str(world.dv("create", table="accounts", row={
        "name": "Refused then deleted", "creditlimit": -5, "address1_country": "US",
        **dataverse_usd(world)})["accountid"])
    world.cycle("d365")
    assert _entry(world, "d365", bad)["status"] == "open"
    world.dv("delete", table="accounts", id=bad)
    world.cycle("d365")
    entry = _entry(world, "d365", bad)
    assert (entry["status"], entry["field"]) == ("resolved", "credit_limit")
    assert _open(world, "d365") == set()
