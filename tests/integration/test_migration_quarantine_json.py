"""Migration 0029: quarantined records stored with a bare NaN or Infinity (not JSON) become
JSON the database reads, the rest are left as they were."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine, cast, func, select, text
from sqlalchemy.dialects.postgresql import JSONB

from jobs.migrate import upgrade
from sync.tables import quarantine

NOW = datetime(2026, 12, 1, tzinfo=UTC)
STORED = {
    "nan": '{"crm_id": "L1", "quantity": NaN, "quote_crm_id": "Q1"}',
    "inf": '{"crm_id": "L2", "nested": {"x": [Infinity, -Infinity]}, "quote_crm_id": "Q2"}',
    "text": '{"crm_id": "L3", "name": "NaN and Infinity in a name", "quote_crm_id": "Q3"}',
    "plain": '{"crm_id": "L4", "quantity": "lots", "quote_crm_id": "Q4"}',
}


def test_0029_rewrites_the_records_the_database_could_not_read(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, "0028")
    with engine.begin() as conn:
        for key, record in STORED.items():
            conn.execute(text(
                "INSERT INTO quarantine (connection, object, crm_id, field, value, reason, "
                "record, first_seen, last_seen, attempts, status) VALUES ('c', 'quote_line', "
                ":k, 'quantity', 'x', 'bad', :r, :now, :now, 1, 'open')"),
                {"k": key, "r": record, "now": NOW})
    upgrade(engine)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(quarantine.c.crm_id, quarantine.c.record)).all())
        if engine.dialect.name == "sqlite":
            parent = func.json_extract(quarantine.c.record, "$.quote_crm_id")
        else:
            parent = cast(quarantine.c.record, JSONB)["quote_crm_id"].astext
        quotes = dict(conn.execute(select(quarantine.c.crm_id, parent)).all())
    assert quotes == {"nan": "Q1", "inf": "Q2", "text": "Q3", "plain": "Q4"}
    assert json.loads(stored["nan"])["quantity"] == "NaN"
    assert json.loads(stored["inf"])["nested"] == {"x": ["Infinity", "-Infinity"]}
    assert stored["text"] == STORED["text"] and stored["plain"] == STORED["plain"]
