"""Gapless document numbers.

``take_number`` increments the series row inside the caller's transaction. The row lock held
until commit serialises concurrent posters (PostgreSQL: row lock; SQLite: the write lock), and
a rolled-back transaction takes its increment with it, so numbers are unique and gapless.
Because that lock lasts to the commit, a long transaction takes its numbers last: the bill run
writes a chunk's invoices unnumbered and numbers them as it commits
(``billing_io._number`` through ``UnitOfWork.at_commit``), so other workers' chunks wait only
for the numbering, the commit hooks and the commit, not for the whole chunk.
"""
from __future__ import annotations

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.tables import number_sequences

NUMBER_WIDTH = 6


def take_numbers(conn: Connection, series: str, count: int = 1) -> list[str]:
    """Reserve ``count`` consecutive numbers of ``series`` (e.g. INV-000001, INV-000002)."""
    if count <= 0:
        return []
    row = conn.execute(
        update(number_sequences).where(number_sequences.c.series == series)
        .values(next_number=number_sequences.c.next_number + count)
        .returning(number_sequences.c.next_number)).first()
    if row is None:
        # First use of the series. A racing first use hits the primary key and retries below.
        try:
            with conn.begin_nested():
                conn.execute(insert(number_sequences).values(series=series, next_number=1 + count))
            first = 1
        except IntegrityError:
            return take_numbers(conn, series, count)
    else:
        first = row[0] - count
    return [f"{series}-{n:0{NUMBER_WIDTH}d}" for n in range(first, first + count)]


def take_number(conn: Connection, series: str) -> str:
    return take_numbers(conn, series, 1)[0]


def peek_next(conn: Connection, series: str) -> int:
    value = conn.execute(select(number_sequences.c.next_number)
                         .where(number_sequences.c.series == series)).scalar()
    return int(value or 1)
