"""A CRM price start date, when the field map carries one (``price.effective_from``), dates the
billing price it changes, instead of the sync day (issue 14). SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

from fake_crm import FakeCRM
from sqlalchemy import select

from billing_core.adapters.tables import products
from billing_core.service.pricing import list_prices
from sync.engine import run_cycle
from sync.handlers.price import FIRST_PRICE_DATE


def _seat_prices(engine, currency: str = "USD") -> list[tuple[date, Decimal]]:
    with engine.connect() as conn:
        pid = conn.execute(select(products.c.id).where(products.c.sku == "SEAT")).scalar_one()
        return [(p.effective_from, p.unit_price) for p in list_prices(conn, pid)
                if p.currency == currency]


def test_a_changed_price_takes_the_crm_start_date(engine):
    """The first price (100.00, CRM start 1 March 2026) prices everything before it, from
    2000-01-01, as before. The CRM then raises it to 120.00 from 16 March 2026: billing keeps
    100.00 until 15 March and 120.00 from the 16th (before: from the sync day)."""
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("price", "P1-USD", effective_from=date(2026, 3, 1))
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]
    crm.put("price", "P1-USD", unit_price=Decimal(120), effective_from=date(2026, 3, 16))
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100)),
                                    (date(2026, 3, 16), Decimal(120))]
    assert _seat_prices(engine, "EUR") == [(FIRST_PRICE_DATE, Decimal(100))]


def test_a_crm_date_before_the_newest_price_replaces_that_price(engine):
    """After 120.00 from 16 March, the CRM says 130.00 from 1 February: billing's newest row is
    16 March, so 130.00 replaces it there (1 February - 15 March stays 100.00); a later
    correction from 1 April adds a row: 100.00 / 130.00 from 16 March / 140.00 from 1 April."""
    crm = FakeCRM()
    crm.seed_basic()
    run_cycle(engine, crm)
    crm.put("price", "P1-USD", unit_price=Decimal(120), effective_from=date(2026, 3, 16))
    run_cycle(engine, crm)
    crm.put("price", "P1-USD", unit_price=Decimal(130), effective_from=date(2026, 2, 1))
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100)),
                                    (date(2026, 3, 16), Decimal(130))]
    crm.put("price", "P1-USD", unit_price=Decimal(140), effective_from=date(2026, 4, 1))
    run_cycle(engine, crm)
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100)),
                                    (date(2026, 3, 16), Decimal(130)),
                                    (date(2026, 4, 1), Decimal(140))]


def test_without_a_crm_date_a_changed_price_applies_from_the_sync_day(engine):
    """No ``effective_from`` in the record: the change applies from today, as before."""
    crm = FakeCRM()
    crm.seed_basic()
    run_cycle(engine, crm)
    crm.put("price", "P1-USD", unit_price=Decimal(120))
    run_cycle(engine, crm)
    rows = _seat_prices(engine)
    assert len(rows) == 2 and rows[0] == (FIRST_PRICE_DATE, Decimal(100))
    assert rows[1][1] == Decimal(120) and rows[1][0] > date(2026, 3, 16)


def test_a_price_start_that_is_not_a_date_is_quarantined(engine):
    """A text where the start date should be is refused at the boundary, field named."""
    crm = FakeCRM()
    crm.seed_basic()
    run_cycle(engine, crm)
    crm.put("price", "P1-USD", unit_price=Decimal(120), effective_from="16/03/2026")
    report = run_cycle(engine, crm)
    assert report.outcome == "partial" and report.stats("price").quarantined == 1
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]


def test_an_inactive_price_entry_sets_no_price(engine):
    """An inactive price-book entry (Salesforce ``IsActive = false``; a retired Dataverse
    product) is no price billing may use. Before, a second, inactive entry of the seat at
    60.00 (another price book's, say) replaced the USD list price of 100.00 from the sync day,
    and usage priced from the catalog billed 60.00. Now it is kept without setting a price;
    once it is made active, its price applies from that sync."""
    crm = FakeCRM()
    crm.seed_basic()
    assert run_cycle(engine, crm).outcome == "ok"
    crm.put("price", "P1-USD-OLD", product_crm_id="P1", currency="USD",
            unit_price=Decimal(60), active=False)
    report = run_cycle(engine, crm)
    assert report.outcome == "ok" and report.stats("price").quarantined == 0
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]
    crm.put("price", "P1-USD", unit_price=Decimal(90), active=False)    # retired: kept as is
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]
    crm.put("price", "P1-USD-OLD", active=True)                         # made active: it prices
    assert run_cycle(engine, crm).outcome == "ok"
    rows = _seat_prices(engine)
    assert len(rows) == 2 and rows[0] == (FIRST_PRICE_DATE, Decimal(100))
    assert rows[1][1] == Decimal(60)


def test_a_product_first_priced_by_an_inactive_entry_has_no_price_until_it_is_active(engine):
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("price", "P1-USD", active=False)
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == []
    crm.put("price", "P1-USD", active=True)
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]


def test_an_entry_of_another_price_book_sets_no_price(engine):
    """Salesforce keeps a product's price per price book: the standard one, and partner or
    regional ones beside it. Every active entry set billing's list price before, the last one
    applied winning (a partner book's 70.00 replaced the standard 100.00). Only the standard
    price book's entry (``standard``: ``Pricebook2.IsStandard``) prices now."""
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("price", "P1-USD", standard=True)
    crm.put("price", "P1-USD-PARTNER", product_crm_id="P1", currency="USD",
            unit_price=Decimal(70), active=True, standard=False)
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]
    crm.put("price", "P1-USD-PARTNER", unit_price=Decimal(65))
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]


def test_a_price_book_flag_that_is_not_a_boolean_is_quarantined(engine):
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("price", "P1-USD", standard="yes")
    report = run_cycle(engine, crm)
    assert report.outcome == "partial" and report.stats("price").quarantined == 1
    assert _seat_prices(engine) == []


def test_an_entry_read_again_at_the_same_price_adds_no_price_row(engine):
    """A price record that changes without its price changing (the map reads a new field, an
    unrelated field moved) wrote a price row from the sync day at the same price: history
    grew a row per product and currency at every such change. It writes nothing now."""
    crm = FakeCRM()
    crm.seed_basic()
    assert run_cycle(engine, crm).outcome == "ok"
    crm.put("price", "P1-USD", standard=True)       # changed record, same price
    assert run_cycle(engine, crm).outcome == "ok"
    assert _seat_prices(engine) == [(FIRST_PRICE_DATE, Decimal(100))]
