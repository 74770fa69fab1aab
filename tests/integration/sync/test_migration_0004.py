"""Migration 0004: products pulled before the product-update fix are applied again.

Before it, a renamed or deactivated CRM product had its new hash saved while billing kept the
old values, so every later pull skipped it. After 0004 the product records carry no hash and
the product cursors are gone: the next pull reads every product and applies each one.
"""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select, text

from jobs.migrate import upgrade
from sync.tables import sync_cursors, sync_records

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _fill(engine: Engine) -> None:
    with engine.begin() as conn:
        for obj, crm_id in (("product", "01t1"), ("product", "01t2"), ("account", "0011")):
            conn.execute(text(
                "INSERT INTO sync_records (connection, object, crm_id, ledger_id, content_hash, "
                "updated_at) VALUES ('sf', :o, :c, 1, :h, :now)"),
                {"o": obj, "c": crm_id, "h": "a" * 64, "now": NOW})
        for obj in ("product", "account"):
            conn.execute(text(
                "INSERT INTO sync_cursors (connection, object, cursor, updated_at) "
                "VALUES ('sf', :o, '2026-11-30T00:00:00Z', :now)"), {"o": obj, "now": NOW})


def test_0004_clears_product_hashes_and_cursors_only(blank_engine: Engine) -> None:
    upgrade(blank_engine, "0003")
    _fill(blank_engine)
    upgrade(blank_engine)
    with blank_engine.connect() as conn:
        hashes = {crm_id: digest for crm_id, digest in conn.execute(
            select(sync_records.c.crm_id, sync_records.c.content_hash))}
        cursors = {o for (o,) in conn.execute(select(sync_cursors.c.object))}
    assert hashes == {"01t1": "", "01t2": "", "0011": "a" * 64}
    assert cursors == {"account"}
