"""A charge on the whole quote (Salesforce ``ShippingHandling``), which no line carries, through
the real worker against the sandbox CRM: the quote is refused naming ``freight_amount`` rather
than ordered and billed without the charge, and is ordered once the charge is quoted as 0.
(Dataverse ``freightamount``: tests/integration/test_wire_documented_dataverse.py.)"""
from __future__ import annotations

from typing import Any

import pytest
from e2e_world import order_items
from sqlalchemy import select

from sync.tables import quarantine

pytestmark = pytest.mark.e2e


def test_a_quote_with_shipping_and_handling_waits_until_it_is_quoted_as_a_line(
        world: Any) -> None:
    account = world.sf("create", object="Account", fields={
        "Name": "Freight Co", "CurrencyIsoCode": "USD", "BillingCountryCode": "US",
        "Credit_Limit__c": 1_000_000})["id"]
    quote = world.sf("create_quote", account_id=account, status="Draft",
                     start_date="2027-01-01",
                     lines=[{"product_index": 0, "quantity": 3, "unit_price": 12}])["id"]
    world.sf("update", object="Quote", id=quote,
             fields={"ShippingHandling": 25, "Status": "Accepted"})
    world.cycle("sf")
    assert order_items(world, "sf", quote) is None
    with world.engine.connect() as conn:
        open_ = [tuple(r) for r in conn.execute(select(
            quarantine.c.crm_id, quarantine.c.field).where(quarantine.c.status == "open"))]
    assert (quote, "freight_amount") in open_
    world.sf("update", object="Quote", id=quote, fields={"ShippingHandling": 0})
    world.cycle("sf")
    assert order_items(world, "sf", quote) == 1
