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


@pytest.mark.parametrize(("currency", "fee"), [("USD", "20.005"), ("JPY", "0.5"),
                                                ("BHD", "0.0005"), ("USD", "10000000000000.01")])
def test_a_tier_flat_fee_the_currency_cannot_hold_is_refused_not_rounded(uow, currency,
                                                                         fee) -> None:
    """Money: an amount a user gives is refused, not rounded, when it has more decimals than
    its currency (10.005 USD), and is at most MAX_MINOR. A tier's flat fee is one: a fee of
    0.5 yen was stored as 1 yen and billed on every period that reached the tier (a fee of
    20.005 USD as 20.01). Refused naming the tier's fee; no price is written."""
    from billing_core.domain.errors import InvalidAmount
    from billing_core.service.pricing import list_prices
    pid = add_product(uow, ProductIn(sku="FEE", name="Fee", kind="usage",
                                     pricing_model="graduated"))
    with pytest.raises(InvalidAmount) as info:
        set_price(uow, pid, currency, date(2026, 1, 1), None,
                  tiers=[("1000", "1"), (None, "1", fee)])
    assert (info.value.field, info.value.value) == ("tiers[1].flat_fee", fee)
    assert [p for p in list_prices(uow.conn) if p.product_id == pid] == []
    # what the currency holds is taken: 20.00 USD, 1 yen, 0.001 BHD
    set_price(uow, pid, currency, date(2026, 1, 1), None,
              tiers=[("1000", "1"), (None, "1", {"USD": "20.00", "JPY": "1",
                                                  "BHD": "0.001"}[currency])])
    assert price_for(uow.conn, pid, currency, date(2026, 2, 1)).tiers[1].flat_fee_minor == {
        "USD": 2000, "JPY": 1, "BHD": 1}[currency]
