"""Migration 0006: products.sku holds 255 characters, on a database whose products are named
by prices (SQLite's foreign keys stay on during the migration: the table is not rebuilt)."""
from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Engine, func, select, text

from billing_core.adapters.tables import prices, products
from billing_core.service import ledger_uow
from billing_core.service.pricing import ProductIn, add_product
from jobs.migrate import current, head, upgrade

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_0006_widens_sku_and_keeps_the_catalog(blank_engine: Engine) -> None:
    upgrade(blank_engine, "0005")
    with blank_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO products (id, sku, name, kind, billing_period, pricing_model, "
            "needs_provisioning, active, created_at) VALUES (1000, 'OLD', 'Old plan', 'recurring', "
            "'month', 'per_unit', false, true, :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO prices (id, product_id, currency, effective_from, unit_price, "
            "created_at) VALUES (1000, 1000, 'USD', :day, '10', :now)"),
            {"day": date(2026, 1, 1), "now": NOW})
    upgrade(blank_engine)
    assert current(blank_engine) == head()
    with ledger_uow(blank_engine) as uow:
        new_id = add_product(uow, ProductIn(sku="S" * 255, name="Long code"))
        uow.commit()
    with blank_engine.connect() as conn:
        assert conn.execute(select(products.c.sku).where(products.c.id == new_id)).scalar() \
            == "S" * 255
        assert conn.execute(select(products.c.sku).where(products.c.id == 1000)).scalar() == "OLD"
        assert conn.execute(select(func.count()).select_from(prices)).scalar() == 1
