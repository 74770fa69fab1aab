"""A product billing refused, fixed in the CRM later: the accepted quote's line of it (and its
price) were quarantined ("unknown product") and did not change, so no read returns them
again; once the product lands they are applied from what the quarantine stored and the quote
is handed off whole, in that cycle, through the real worker against the sandbox CRM.

Before the fix the line stayed quarantined and the quote ``waiting`` for ever.
"""
from __future__ import annotations

from typing import Any

import pytest
from e2e_world import MONTHLY, RECURRING, dataverse_seat_account, order_items
from sqlalchemy import func, select

from billing_core.adapters.tables import prices
from connectors.sandbox.salesforce.seed import PRICEBOOK_ID
from sync.tables import quarantine, sync_records

pytestmark = pytest.mark.e2e


def _open(world: Any, connection: str) -> dict[tuple[str, str], str]:
    """The open quarantine of a connection: (object, crm id) → field."""
    with world.engine.connect() as conn:
        return {(r.object, r.crm_id.lower()): r.field for r in conn.execute(select(
            quarantine).where(quarantine.c.connection == connection,
                              quarantine.c.status == "open"))}


def _prices_of(world: Any, connection: str, product: str) -> list[Any]:
    """The billing prices of the connection's CRM product, as (currency, unit price)."""
    with world.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(prices.c.currency, prices.c.unit_price)
                .join(sync_records, sync_records.c.ledger_id == prices.c.product_id).where(
                sync_records.c.connection == connection, sync_records.c.object == "product",
                func.lower(sync_records.c.crm_id) == product.lower()))]


def test_salesforce_line_and_price_of_a_product_fixed_later_go_on(world: Any) -> None:
    world.sf("create", object="Product2", fields={
        "ProductCode": "REL-1", "Name": "Release add-on", "IsActive": True,
        "Billing_Type__c": "Recurring", "Billing_Frequency__c": "Monthly"})
    world.cycle("sf")
    # A second CRM product with that SKU: Salesforce allows it, billing refuses it (one CRM
    # product per SKU and connection), and so the price and the quote line naming it.
    bad = world.sf("create", object="Product2", fields={
        "ProductCode": "REL-1", "Name": "Release add-on (copy)", "IsActive": True,
        "Billing_Type__c": "Recurring", "Billing_Frequency__c": "Monthly"})["id"]
    world.sf("create", object="PricebookEntry", fields={
        "Pricebook2Id": PRICEBOOK_ID, "Product2Id": bad, "CurrencyIsoCode": "USD",
        "UnitPrice": 5, "IsActive": True})
    account = world.sf("create", object="Account", fields={
        "Name": "Release acct", "CurrencyIsoCode": "USD", "BillingCountryCode": "US",
        "Credit_Limit__c": 10_000_000})["id"]
    quote = world.sf("create_quote", account_id=account, status="Accepted",
                     start_date="2026-12-01",
                     lines=[{"product_index": 0, "quantity": 2, "unit_price": 10},
                            {"product_id": bad, "quantity": 1, "unit_price": 5}])
    world.cycle("sf")
    held = _open(world, "sf")
    assert held[("product", bad.lower())] == "sku"
    assert held[("quote_line", quote["line_ids"][1].lower())] == "product_crm_id"
    assert [k for k, f in held.items() if k[0] == "price" and f == "product_crm_id"]
    assert order_items(world, "sf", quote["id"]) is None

    world.sf("update", object="Product2", id=bad, fields={"ProductCode": "REL-2"})
    [report] = world.cycle("sf")
    assert report.outcome == "ok", _open(world, "sf")
    assert _open(world, "sf") == {}
    assert _prices_of(world, "sf", bad) == [("USD", 5)]
    assert order_items(world, "sf", quote["id"]) == 2


def test_dataverse_line_of_a_product_fixed_later_goes_on(world: Any) -> None:
    """A choice value the field map does not know (a "Weekly" the org added) refuses the
    product; its quote line waits on it and goes on once the product is fixed. (A Dataverse
    price is the product's own row: read again with it.)"""
    world.cycle("d365")
    currency, _, account = dataverse_seat_account(world, "REL-DV-1", "Release acct")
    bad = str(world.dv("create", table="products", row={
        "productnumber": "REL-DV-2", "name": "Weekly add-on", "statecode": 0, "statuscode": 1,
        "new_billingtype": RECURRING, "new_billingfrequency": MONTHLY + 7, "price": 5,
        **currency})["productid"])
    quote = str(world.dv("create", table="quotes", row={
        "name": "Release", "quotenumber": "QN-REL", "statecode": 0, "statuscode": 1,
        "revisionnumber": 0, "customerid_account@odata.bind": f"/accounts({account})",
        **currency})["quoteid"])
    world.dv("set_local_date", table="quotes", id=quote, column="effectivefrom",
             date="2027-01-01")
    line = str(world.dv("create", table="quotedetails", row={
        "quoteid@odata.bind": f"/quotes({quote})", "productid@odata.bind": f"/products({bad})",
        "lineitemnumber": 1, "quantity": 3, "priceperunit": 5, "extendedamount": 15,
        **currency})["quotedetailid"])
    world.dv("win_quote", id=quote)
    world.cycle("d365")
    held = _open(world, "d365")
    assert held[("product", bad.lower())] == "billing_frequency"
    assert held[("quote_line", line.lower())] == "product_crm_id"
    assert order_items(world, "d365", quote) is None

    world.dv("update", table="products", id=bad, values={"new_billingfrequency": MONTHLY})
    [report] = world.cycle("d365")
    assert report.outcome == "ok", _open(world, "d365")
    assert _open(world, "d365") == {}
    assert _prices_of(world, "d365", bad) == [("USD", 5)]
    assert order_items(world, "d365", quote) == 1
