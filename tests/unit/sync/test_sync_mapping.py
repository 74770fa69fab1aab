"""Mapping canonical CRM records: every refusal names the field, the value and the reason."""
from datetime import date
from decimal import Decimal

import pytest

from sync.mapping import Invalid, content_hash, map_account, map_product, map_quote, map_quote_line


def test_account_maps_exactly():
    rec = map_account({"crm_id": "001", "name": " Acme ", "currency": "usd", "country": "us",
                       "credit_limit": Decimal("10.50"), "credit_hold": True})
    assert (rec.name, rec.currency, rec.country, rec.credit_limit, rec.credit_hold) == \
        ("Acme", "USD", "US", Decimal("10.50"), True)


@pytest.mark.parametrize("record, field, reason", [
    ({"name": "x", "currency": "USD"}, "crm_id", "is required"),
    ({"crm_id": "1", "name": "x", "currency": "USD", "credit_limit": Decimal(-1)},
     "credit_limit", "must not be negative"),
    ({"crm_id": "1", "name": "x", "currency": "USD", "credit_limit": "abc"},
     "credit_limit", "is not a number"),
    ({"crm_id": "1", "name": "x", "currency": "ZZZ"}, "currency",
     "is not a known ISO 4217 currency"),
    ({"crm_id": "1", "currency": "USD"}, "name", "is required"),
])
def test_account_refusals(record, field, reason):
    with pytest.raises(Invalid) as err:
        map_account(record)
    assert (err.value.field, err.value.problem) == (field, reason)


def test_quote_dates_and_revision():
    q = map_quote({"crm_id": "Q", "account_crm_id": "A", "status": "Accepted",
                   "start_date": date(2026, 1, 1)})
    assert q.revision == 1 and q.start_date == date(2026, 1, 1)
    with pytest.raises(Invalid) as err:
        map_quote({"crm_id": "Q", "account_crm_id": "A", "start_date": "31/12/2026"})
    assert err.value.field == "start_date"


def test_line_quantity_must_not_be_negative_and_zero_is_a_removal():
    with pytest.raises(Invalid) as err:
        map_quote_line({"crm_id": "L", "quote_crm_id": "Q", "product_crm_id": "P",
                        "quantity": Decimal(-1)})
    assert err.value.field == "quantity"
    # 0 is how an amendment removes an item (a CPQ amendment zeroes the line to cancel it)
    line = map_quote_line({"crm_id": "L", "quote_crm_id": "Q", "product_crm_id": "P",
                           "quantity": Decimal(0)})
    assert line.quantity == 0


def test_product_kinds():
    p = map_product({"crm_id": "P", "name": "Seat", "billing_type": "Recurring",
                     "billing_frequency": "Annual"})
    assert (p.kind, p.billing_period, p.sku) == ("recurring", "year", "P")
    with pytest.raises(Invalid):
        map_product({"crm_id": "P", "name": "x", "billing_type": "Barter"})


def test_hash_ignores_modstamp_and_private_keys():
    a = {"crm_id": "1", "name": "x", "modstamp": 1, "_etag": "a"}
    b = {"crm_id": "1", "name": "x", "modstamp": 2, "_etag": "b"}
    assert content_hash(a) == content_hash(b) != content_hash({**a, "name": "y"})


def test_content_hash_and_stored_json_are_stable_across_releases() -> None:
    """Hashes stored by earlier releases must still match: a changed canonical form would make
    every record look changed (and be rewritten) on the first run after an upgrade."""
    from datetime import UTC, datetime, timedelta, timezone

    from sync.mapping import canonical_json, rec_to_json, text_hash
    rec = {"crm_id": "Q1", "account_crm_id": "A1", "status": "Accepted", "revision": 2,
           "number": None, "start_date": date(2026, 3, 1), "amount": Decimal("12.50"),
           "seen": datetime(2026, 3, 1, 8, 30, tzinfo=timezone(timedelta(hours=2))),
           "credit_hold": True, "name": "Caf\u00e9", "modstamp": datetime(2026, 1, 1, tzinfo=UTC),
           "_etag": "W/1"}
    assert canonical_json(rec) == (
        '{"account_crm_id":"A1","amount":"12.50","credit_hold":true,"crm_id":"Q1",'
        '"name":"Caf\\u00e9","number":null,"revision":2,"seen":"2026-03-01T08:30:00+02:00",'
        '"start_date":"2026-03-01","status":"Accepted"}')
    assert content_hash(rec) == "d295c1fedfa2555126c429a58e0755bf3da335eecb79745bb2d8de2ebf724a11"
    line = map_quote_line({"crm_id": "L1", "quote_crm_id": "Q1", "product_crm_id": "P1",
                           "quantity": Decimal("2.5"), "unit_price": Decimal("10.00")})
    assert rec_to_json(line) == ('{"crm_id": "L1", "product_crm_id": "P1", "quantity": "2.5", '
                                 '"quote_crm_id": "Q1", "start_date": null, '
                                 '"unit_price": "10.00"}')
    # quotes and lines are hashed over that stored text
    assert text_hash(rec_to_json(line)) == (
        "ddfaf5b1e7c0a36a16f26acdfe36db6d5cd9318301cdd11d17e9c39b77090c14")
