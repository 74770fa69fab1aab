"""The hand-off's per-chunk read of quote lines must look the quotes up by index: an ORDER BY
on the key made SQLite scan every quote line of the connection for each chunk (the hand-off
of 100,000 quotes grew quadratically)."""
from __future__ import annotations

from sqlalchemy import create_engine

from sync.handoff_reads import lines_of
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


def test_the_outbox_refresh_pages_walk_an_index_and_never_sort_the_table():
    """Each page of a full outbox refresh must be an index range, not a sort of every row
    (which would make the refresh quadratic in the number of accounts)."""
    from billing_core.adapters.tables import metadata as billing_metadata
    from sync.outbox import HANDOFF_KEYS, LINK_KEYS, account_links, done_handoffs, keyset_page
    engine = create_engine("sqlite://")
    billing_metadata.create_all(engine)
    metadata.create_all(engine)
    pages = (keyset_page(account_links("sf"), LINK_KEYS, ("001",), 2000),
             keyset_page(done_handoffs("sf"), HANDOFF_KEYS, ("0Q0", 1), 2000))
    for stmt in pages:
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert "TEMP B-TREE" not in plan and "SEARCH" in plan, plan
