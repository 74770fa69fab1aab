"""bulk.text_in: the same rows as ``IN (...)`` for text keys, with the list as one bound value."""
from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table, insert, select

from billing_core.adapters.bulk import text_in


def test_text_in_selects_exactly_the_listed_keys(engine):
    table = Table("t_text_in", MetaData(), Column("k", String(20), primary_key=True))
    table.create(engine)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table), [{"k": k} for k in ("a", "b'c", "d\"e", "ü", "f")])
            got = {r[0] for r in conn.execute(select(table.c.k).where(
                text_in(conn, table.c.k, ["b'c", "d\"e", "ü", "missing"])))}
            none = list(conn.execute(select(table.c.k).where(text_in(conn, table.c.k, []))))
        assert got == {"b'c", "d\"e", "ü"} and none == []
    finally:
        table.drop(engine)
