"""Quote and line discounts, and the quote's currency, at the mapping (``sync.mapping``):
a line is stored at its price after its own discounts, worked by hand below; what billing
cannot take is refused naming the field; records without these fields store (and hash)
exactly as before."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from sync import mapping
from sync.boundary import Invalid

LINE = {"crm_id": "L1", "quote_crm_id": "Q1", "product_crm_id": "P1",
        "quantity": Decimal("3"), "unit_price": Decimal("100.00")}
QUOTE = {"crm_id": "Q1", "account_crm_id": "A1", "status": "Won", "revision": 1,
         "number": "QUO-1", "name": "Q", "start_date": date(2026, 3, 1)}


@pytest.mark.parametrize(("extra", "net"), [
    ({}, "100.00"),                                             # no discount
    ({"discount_percent": Decimal("10")}, "90.00"),             # Salesforce Discount 10 %
    ({"discount_percent": Decimal("0")}, "100.00"),
    ({"discount_percent": Decimal("12.5")}, "87.500"),          # 100.00 x 87.5 / 100
    ({"discount_per_unit": Decimal("2.50")}, "97.50"),          # Dataverse volume discount
    ({"discount_amount": Decimal("7.50")}, "97.50"),            # 7.50 over 3 units
    # 10.00 over 3 units: 96.666... kept to 10 places, half up; 3 x it = 290.0000000001,
    # 290.00 to the cent, as the CRM's 300.00 - 10.00
    ({"discount_amount": Decimal("10.00")}, "96.6666666667"),
    ({"discount_per_unit": Decimal("5"), "discount_amount": Decimal("15")}, "90.00"),
    ({"discount_percent": Decimal("100")}, "0.00"),
])
def test_a_line_is_stored_at_its_price_after_its_discounts(extra, net) -> None:
    rec = mapping.map_quote_line({**LINE, **extra})
    assert rec.unit_price == Decimal(net)
    assert str(rec.unit_price) == net


@pytest.mark.parametrize(("extra", "field"), [
    ({"discount_percent": Decimal("100.01")}, "discount_percent"),
    ({"discount_percent": Decimal("-5")}, "discount_percent"),
    ({"discount_per_unit": Decimal("100.01")}, "discount_per_unit"),
    ({"discount_amount": Decimal("300.01")}, "discount_amount"),
    ({"discount_amount": Decimal("1"), "quantity": Decimal("0")}, "discount_amount"),
    ({"discount_amount": Decimal("1"), "unit_price": None}, "discount_amount"),
    ({"discount_percent": "ten"}, "discount_percent"),
])
def test_a_discount_billing_cannot_take_is_refused_naming_it(extra, field) -> None:
    with pytest.raises(Invalid) as info:
        mapping.map_quote_line({**LINE, **extra})
    assert info.value.field == field


def test_the_quote_keeps_its_currency_and_its_discounts() -> None:
    rec = mapping.map_quote({**QUOTE, "currency": "eur", "discount_percent": Decimal("10"),
                             "discount_amount": Decimal("0")})
    assert (rec.currency, rec.discount_percent, rec.discount_amount) == (
        "EUR", Decimal("10"), None)
    assert mapping.quote_from_json(mapping.rec_to_json(rec)) == rec
    with pytest.raises(Invalid) as info:
        mapping.map_quote({**QUOTE, "currency": "EURO"})
    assert info.value.field == "currency"
    with pytest.raises(Invalid) as info:
        mapping.map_quote({**QUOTE, "discount_amount": Decimal("-1")})
    assert info.value.field == "discount_amount"


def test_records_without_the_new_fields_store_as_before() -> None:
    """The stored text (and so the content hash) of a quote and a line with no currency and
    no discount is what it was before these fields existed: nothing synced before is taken
    for changed."""
    quote = mapping.map_quote(QUOTE)
    line = mapping.map_quote_line(LINE)
    assert mapping.rec_to_json(quote) == (
        '{"account_crm_id": "A1", "crm_id": "Q1", "name": "Q", "number": "QUO-1", '
        '"revision": 1, "start_date": "2026-03-01", "status": "Won"}')
    assert mapping.rec_to_json(line) == (
        '{"crm_id": "L1", "product_crm_id": "P1", "quantity": "3", "quote_crm_id": "Q1", '
        '"start_date": null, "unit_price": "100.00"}')
