"""pricing.update_product: what a CRM product change may change in the catalog, and what it
may not once something is billed by the product (SQLite and PostgreSQL)."""
from dataclasses import replace
from datetime import date

import pytest
from sqlalchemy import func, select

from billing_core.adapters.tables import products
from billing_core.domain.errors import Duplicate, RuleViolation, ValidationError
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.orders import OrderIn, SubscriptionItem, place_order
from billing_core.service.pricing import (
    ProductIn,
    add_product,
    get_product,
    get_products,
    set_price,
    update_product,
)

SEAT = ProductIn(sku="SEAT", name="Seat", kind="recurring", billing_period="month",
                 pricing_model="graduated", needs_provisioning=True, ext_source="sf",
                 ext_id="01t1")


def _sold(uow, product_id: int) -> None:
    """Something is billed by the product: a subscription of an order."""
    account = create_account(uow, AccountIn(name="A", currency="USD", ext_id="A1"))
    set_price(uow, product_id, "USD", date(2026, 1, 1), None, tiers=[(None, "10")])
    place_order(uow, OrderIn(account, "sf:Q1:rev1", date(2026, 3, 1), subscriptions=[
        SubscriptionItem(product_id, "2", date(2026, 3, 1))]))


def test_name_active_provisioning_and_sku_change_the_rest_stays(uow) -> None:
    pid = add_product(uow, SEAT)
    _sold(uow, pid)
    update_product(uow, pid, ProductIn(sku="SEAT-2", name="  Seat (new)  ", kind="recurring",
                                       billing_period="month", needs_provisioning=False,
                                       active=False, ext_source="d365", ext_id="other"))
    row = get_product(uow.conn, pid)
    assert (row["sku"], row["name"], row["active"], row["needs_provisioning"]) == \
        ("SEAT-2", "Seat (new)", False, False)
    # billing's own shape of the prices and the product's origin are not the CRM's to change
    assert (row["pricing_model"], row["ext_source"], row["ext_id"]) == ("graduated", "sf", "01t1")


@pytest.mark.parametrize("change, field, value", [
    ({"kind": "one_time", "billing_period": None}, "kind", "one_time"),
    ({"billing_period": "year"}, "billing_period", "year"),
])
def test_kind_and_period_are_fixed_once_billed_by(uow, change, field, value) -> None:
    pid = add_product(uow, SEAT)
    _sold(uow, pid)
    with pytest.raises(RuleViolation) as info:
        update_product(uow, pid, replace(SEAT, name="Renamed", **change))
    assert (info.value.field, info.value.value) == (field, value)
    assert "SEAT" in info.value.problem
    row = get_product(uow.conn, pid)
    assert (row["name"], row["kind"], row["billing_period"]) == ("Seat", "recurring", "month")


def test_kind_and_period_change_while_nothing_is_billed(uow) -> None:
    pid = add_product(uow, SEAT)
    update_product(uow, pid, replace(SEAT, billing_period="year"))
    assert get_product(uow.conn, pid)["billing_period"] == "year"
    update_product(uow, pid, replace(SEAT, kind="one_time", billing_period=None))
    row = get_product(uow.conn, pid)
    assert (row["kind"], row["billing_period"]) == ("one_time", None)


def test_refusals_name_the_field_and_write_nothing(uow) -> None:
    pid = add_product(uow, SEAT)
    add_product(uow, ProductIn(sku="SETUP", name="Setup", kind="one_time"))
    with pytest.raises(Duplicate) as dup:
        update_product(uow, pid, replace(SEAT, sku="SETUP", name="Renamed"))
    assert (dup.value.field, dup.value.value) == ("sku", "SETUP")
    with pytest.raises(ValidationError) as bad:
        update_product(uow, pid, replace(SEAT, name=" "))
    assert bad.value.field == "name"
    assert get_product(uow.conn, pid)["name"] == "Seat"
    assert uow.conn.execute(select(func.count()).select_from(products)).scalar() == 2


def test_get_products_reads_the_ones_that_exist(uow) -> None:
    seat = add_product(uow, SEAT)
    setup = add_product(uow, ProductIn(sku="SETUP", name="Setup", kind="one_time"))
    found = get_products(uow.conn, [setup, seat, seat, 999_999])
    assert {k: v["sku"] for k, v in found.items()} == {seat: "SEAT", setup: "SETUP"}
    assert get_products(uow.conn, []) == {}
