"""Catalog and effective-dated prices, on SQLite and PostgreSQL."""
from datetime import date
from decimal import Decimal as D

import pytest

from billing_core.domain.errors import Duplicate, NotFound, ValidationError
from billing_core.service.pricing import (
    ProductIn,
    Tier,
    add_product,
    load_price_book,
    price_for,
    rate,
    set_price,
)


def test_price_in_effect_by_day_and_currency(uow) -> None:
    pid = add_product(uow, ProductIn(sku="SEAT", name="Seat"))
    set_price(uow, pid, "USD", date(2026, 1, 1), "10.00")
    set_price(uow, pid, "USD", date(2026, 3, 15), "12.00")
    set_price(uow, pid, "EUR", date(2026, 1, 1), "9.00")
    assert price_for(uow.conn, pid, "USD", date(2026, 3, 14)).unit_price == D(10)
    assert price_for(uow.conn, pid, "USD", date(2026, 3, 15)).unit_price == D(12)
    assert price_for(uow.conn, pid, "EUR", date(2026, 6, 1)).unit_price == D(9)
    with pytest.raises(NotFound) as info:
        price_for(uow.conn, pid, "USD", date(2025, 12, 31))
    assert "2025-12-31" in str(info.value) and "USD" in str(info.value)
    book = load_price_book(uow.conn)
    segs = book.segments(pid, "USD", date(2026, 3, 1), date(2026, 4, 1))
    assert [(a, b, p.unit_price) for a, b, p in segs] == [
        (date(2026, 3, 1), date(2026, 3, 15), D(10)), (date(2026, 3, 15), date(2026, 4, 1), D(12))]


def test_tiered_price_round_trips(uow) -> None:
    pid = add_product(uow, ProductIn(sku="API", name="API calls", kind="usage",
                                     pricing_model="graduated"))
    set_price(uow, pid, "USD", date(2026, 1, 1), None,
              tiers=[("1000", "0.01"), (None, "0.005", "1.50")])
    p = price_for(uow.conn, pid, "USD", date(2026, 2, 1))
    assert p.model == "graduated"
    assert p.tiers == (Tier(D(1000), D("0.01"), 0), Tier(None, D("0.005"), 150))
    # 1000 x 0.01 = 10 ; 500 x 0.005 = 2.5 ; + 1.50 flat fee of tier 2 -> 14.00
    assert rate(p, D(1500)) == D("14.00")
    # replacing the same day's price replaces its tiers
    set_price(uow, pid, "USD", date(2026, 1, 1), None, tiers=[(None, "0.02")])
    assert price_for(uow.conn, pid, "USD", date(2026, 2, 1)).tiers == (Tier(None, D("0.02"), 0),)


def test_bad_catalog_input(uow) -> None:
    add_product(uow, ProductIn(sku="X", name="X"))
    with pytest.raises(Duplicate):
        add_product(uow, ProductIn(sku="X", name="Y"))
    with pytest.raises(ValidationError) as info:
        add_product(uow, ProductIn(sku="Z", name="Z", kind="weekly"))
    assert info.value.field == "kind"
    pid = add_product(uow, ProductIn(sku="T", name="T", pricing_model="volume"))
    with pytest.raises(ValidationError) as info:
        set_price(uow, pid, "USD", date(2026, 1, 1), None, tiers=[])
    assert info.value.field == "tiers"
