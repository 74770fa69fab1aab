"""The hand-off's per-chunk read of quote lines must look the quotes up by index: an ORDER BY
on the key made SQLite scan every quote line of the connection for each chunk (the hand-off
of 100,000 quotes grew quadratically)."""
from __future__ import annotations

from sqlalchemy import create_engine

from sync.handoff import lines_of
from sync.tables import metadata


def test_the_lines_of_a_chunk_are_read_through_the_parent_index():
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    stmt = lines_of("sf", ["Q1", "Q2", "Q3"])
    compiled = stmt.compile(engine, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params[k]
                                                     for k in compiled.positiontup)))
    assert "ix_sync_records_line_quote" in plan, plan
