"""A product renamed and one deactivated in the CRM reach billing's catalog on the next cycle,
for Salesforce and Dataverse, through the real worker against the sandbox CRM.

Before the fix, a changed product was counted as upserted and its hash saved while billing
was never told, so the catalog kept the old name and stayed active for ever.
"""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from billing_core.adapters.tables import products
from sync.tables import sync_records

pytestmark = pytest.mark.e2e


def _catalog(world: Any, connection: str, crm_id: str) -> dict[str, Any]:
    """The billing product this connection's CRM product is linked to."""
    with world.engine.connect() as conn:
        row = conn.execute(select(products.c.name, products.c.active).join(
            sync_records, sync_records.c.ledger_id == products.c.id).where(
            sync_records.c.connection == connection, sync_records.c.object == "product",
            sync_records.c.crm_id == crm_id)).mappings().one()
    return dict(row)


def _change_in_salesforce(world: Any) -> tuple[str, str]:
    renamed = world.sf("update", object="Product2", index=0,
                       fields={"Name": "Cloud Workspace Standard 2026"})["id"]
    retired = world.sf("update", object="Product2", index=1, fields={"IsActive": False})["id"]
    return renamed, retired


def _change_in_dataverse(world: Any) -> tuple[str, str]:
    active = [i for i in range(12) if world.dv("get", table="products", index=i)["statecode"] == 0]
    renamed = world.dv("update", table="products", index=active[0],
                       values={"name": "Cloud Workspace Standard 2026"})["productid"]
    retired = world.dv("update", table="products", index=active[1],
                       values={"statecode": 1})["productid"]
    return renamed, retired


@pytest.mark.parametrize("connection, change", [("sf", _change_in_salesforce),
                                                ("d365", _change_in_dataverse)])
def test_a_crm_product_rename_and_deactivation_reach_billing(world: Any, connection: str,
                                                             change: Any) -> None:
    [first] = world.cycle(connection)
    assert first.outcome == "ok"
    renamed, retired = change(world)
    assert _catalog(world, connection, retired)["active"] is True
    [report] = world.cycle(connection)
    assert report.outcome == "ok"
    assert report.stats("product").upserted == 2
    assert _catalog(world, connection, renamed) == {"name": "Cloud Workspace Standard 2026",
                                                     "active": True}
    assert _catalog(world, connection, retired)["active"] is False


def _list_prices(world: Any, product_crm_id: str) -> list[tuple[str, Any]]:
    from billing_core.service.pricing import list_prices
    with world.engine.connect() as conn:
        product_id = conn.execute(select(sync_records.c.ledger_id).where(
            sync_records.c.connection == "sf", sync_records.c.object == "product",
            sync_records.c.crm_id == product_crm_id)).scalar_one()
        return sorted((p.currency, p.unit_price) for p in list_prices(conn, product_id))


def test_a_partner_price_book_entry_does_not_reprice_the_catalog(world: Any) -> None:
    """A Salesforce org keeps a standard price book and others beside it (partner, regional).
    An entry of another price book, active, at another price, once read by the sync, set
    billing's list price before (the last entry applied won). Now the connector reads each
    entry's ``Pricebook2.IsStandard`` and only the standard book's entries price."""
    [first] = world.cycle("sf")
    assert first.outcome == "ok"
    product = world.sf("update", object="Product2", index=0, fields={})["id"]
    before = _list_prices(world, product)
    assert before
    book = world.sf("create", object="Pricebook2",
                    fields={"Name": "Partner Price Book", "IsActive": True})["id"]
    currency, price = before[0]
    world.sf("create", object="PricebookEntry",
             fields={"Pricebook2Id": book, "Product2Id": product, "CurrencyIsoCode": currency,
                     "UnitPrice": str(price / 2), "IsActive": True})
    [report] = world.cycle("sf")
    assert report.outcome == "ok" and report.stats("price").quarantined == 0
    assert report.stats("price").upserted == 1
    assert _list_prices(world, product) == before
