"""Bulk statements for the bill run: Core statements compiled once, run as whole batches.

SQLAlchemy's own executemany builds and type-processes a parameter dict per row (tens of
microseconds each): too slow for a million rows. Here a Core statement is compiled once per
dialect, and its columns' own bind/result processors (so ``ExactDecimal``, ``UTCDateTime`` and
dates are stored and read exactly as everywhere else) are applied column by column, once per
distinct value. SQLite then runs the statement as one driver ``executemany``; PostgreSQL gets
the rows through ``COPY`` (updates: COPY into a temporary table, then one ``UPDATE ... FROM``).
Driver errors are re-raised as SQLAlchemy's (``IntegrityError`` for a lost race).

A guarded update (``BulkUpdate(..., guard=...)``) changes only the rows whose current value
allows it, and returns how many it changed: the caller compares that with the rows it gave, so
a row another transaction changed first (committed, or committed while this one waited for its
row lock) is noticed instead of overwritten.

Invoice ids are reserved before the insert, so the chunk's lines can refer to them without
RETURNING: on PostgreSQL from the table's own sequence, on SQLite above the current maximum
(safe: the bill run's transaction holds SQLite's write lock from its first statement).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

from sqlalchemy import BigInteger, Connection, Table, Text, bindparam, false, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import ColumnElement, Executable

Processor = Callable[[Any], Any] | None
Guard = Literal["unset", "covers"]
_Compiled = tuple[str, bool, list[str], dict[str, Processor], dict[str, Any], list[Processor]]
_CACHE: dict[tuple[int, str], _Compiled] = {}


def _compiled(conn: Connection, stmt: Executable) -> _Compiled:
    key = (id(stmt), conn.dialect.name)
    hit = _CACHE.get(key)
    if hit is None:
        dialect = conn.dialect
        compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        procs = {name: bind.type._cached_bind_processor(dialect)
                 for name, bind in compiled.binds.items()}
        order = list(compiled.positiontup or []) if compiled.positional else []
        hit = (compiled.string, bool(compiled.positional), order, procs,
               dict(compiled.construct_params(_check=False)), [])
        _CACHE[key] = hit
    return hit


def _convert(columns: list[Any], funcs: Sequence[Processor]) -> list[Any]:
    """Each column through its processor, each distinct value once (they repeat in bulk)."""
    out = []
    for col, f in zip(columns, funcs, strict=True):
        if f is None:
            out.append(col)
            continue
        memo: dict[Any, Any] = {None: None}
        out.append([memo[v] if v in memo else memo.setdefault(v, f(v)) for v in col])
    return out


def fetch(conn: Connection, stmt: Executable, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of a module-level SELECT as tuples of Python values, its columns' own result
    processors applied once per distinct value (much cheaper than row-by-row processing)."""
    sql, positional, order, procs, defaults, results = _compiled(conn, stmt)
    values = {**defaults, **params}
    bound = {n: (v if v is None or procs.get(n) is None else procs[n](v))  # type: ignore[misc]
             for n, v in values.items()}
    args: Any = tuple(bound[n] for n in order) if positional else bound
    result = conn.exec_driver_sql(sql, args)
    if not results:
        # the driver's type codes (PostgreSQL numerics need them) are known once it answers
        codes = [d[1] for d in result.cursor.description]
        results[:] = [c.type._cached_result_processor(conn.dialect, code)
                      for c, code in zip(stmt.selected_columns, codes,  # type: ignore[attr-defined]
                                         strict=True)]
    rows = result.all()
    if not rows or all(f is None for f in results):
        return [tuple(r) for r in rows]
    return list(zip(*_convert(list(zip(*rows, strict=True)), results), strict=True))


def executemany(conn: Connection, stmt: Executable, names: Sequence[str],
                rows: Sequence[Sequence[Any]], *, converted: bool = False) -> int:
    """Run ``stmt`` (bind parameters named ``names``) once per row; returns the rows the
    database reports changed (the driver sums them over the batch).

    ``stmt`` must be a module-level constant: the compiled form is cached by its identity.
    ``converted``: the rows hold driver values already (:meth:`BulkInsert.driver_rows`).
    """
    if not rows:
        return 0
    sql, positional, order, procs = _compiled(conn, stmt)[:4]
    index = {n: i for i, n in enumerate(names)}
    wanted = order if positional else list(names)
    plan = [(index[n], None if converted else procs.get(n)) for n in wanted]
    if all(f is None for _, f in plan) and [i for i, _ in plan] == list(range(len(names))):
        params: list[Any] = list(rows)          # already driver values, in driver order
    else:
        columns = list(zip(*rows, strict=True))
        params = list(zip(*_convert([columns[i] for i, _ in plan], [f for _, f in plan]),
                          strict=True))
    if not positional:
        params = [dict(zip(names, p, strict=True)) for p in params]
    count = conn.exec_driver_sql(sql, params).rowcount
    return len(rows) if count is None or count < 0 else int(count)


def id_in(conn: Connection, column: ColumnElement[Any],
          ids: Sequence[int]) -> ColumnElement[bool]:
    """``column IN (ids)`` with the ids as one bound value (a JSON array read by ``json_each``
    on SQLite, an array with ``= ANY`` on PostgreSQL): the SQL text is the same for every list,
    so it is compiled once, instead of rendering one parameter per id (microseconds each)."""
    return _one_value_in(conn, column, [int(i) for i in ids], BigInteger)


def text_in(conn: Connection, column: ColumnElement[Any],
            values: Sequence[str]) -> ColumnElement[bool]:
    """:func:`id_in` for text keys (CRM ids, references)."""
    return _one_value_in(conn, column, [str(v) for v in values], Text)


def _one_value_in(conn: Connection, column: ColumnElement[Any], values: list[Any],
                  item_type: Any) -> ColumnElement[bool]:
    if not values:
        return false()
    if conn.dialect.name == "postgresql":
        return column == func.any(bindparam(None, values, type_=ARRAY(item_type)))
    each = func.json_each(bindparam(None, json.dumps(values))).table_valued("value")
    return column.in_(select(each.c.value))


def inserted_id(result: Any) -> int:
    """The primary key of a one-row INSERT."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("the INSERT returned no primary key")
    return int(key[0])


def reserve_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """``count`` fresh primary keys of ``table`` for this transaction's inserts."""
    if count <= 0:
        return []
    if conn.dialect.name == "postgresql":
        return list(conn.execute(text(
            "SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": count}).scalars())
    top = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()
    return list(range(top + 1, top + 1 + count))


# On PostgreSQL the same writes go through COPY (one stream instead of a statement per row);
# updates COPY their (key, value) pairs into a temporary table and apply them in one UPDATE.


class BulkInsert:
    """INSERT INTO table (cols) for many rows: executemany (SQLite) or COPY (PostgreSQL)."""

    def __init__(self, table: Table, cols: tuple[str, ...]) -> None:
        from sqlalchemy import insert

        self.table, self.cols = table, cols
        self.names = tuple(f"p_{c}" for c in cols)
        self.stmt = insert(table).values({c: bindparam(n, type_=table.c[c].type)
                                          for c, n in zip(cols, self.names, strict=True)})

    def run(self, conn: Connection, rows: Sequence[Sequence[Any]], *,
            converted: bool = False) -> int:
        """``converted``: the rows hold driver values already (:meth:`driver_rows`)."""
        if not rows:
            return 0
        if conn.dialect.name != "postgresql":
            return executemany(conn, self.stmt, self.names, rows, converted=converted)
        funcs = [None] * len(self.cols) if converted else self.processors(conn.dialect)
        _pg_copy(conn, f'COPY "{self.table.name}" ({", ".join(self.cols)}) FROM STDIN',
                 funcs, rows)
        return len(rows)

    def processors(self, dialect: Any) -> list[Processor]:
        return [self.table.c[c].type._cached_bind_processor(dialect) for c in self.cols]

    def driver_rows(self, dialect: Any, rows: Sequence[Sequence[Any]],
                    skip: int = 0) -> list[tuple[Any, ...]]:
        """``rows`` with every column but the first ``skip`` as the driver takes it (each
        distinct value converted once), so that another thread or process can do the
        conversion before :meth:`run` is given them with ``converted=True``."""
        if not rows:
            return []
        funcs = [None] * skip + self.processors(dialect)[skip:]
        if all(f is None for f in funcs):
            return [tuple(r) for r in rows]
        return list(zip(*_convert(list(zip(*rows, strict=True)), funcs), strict=True))


class BulkUpdate:
    """UPDATE table SET col = v (or col = col - v) WHERE id = k, for many (k, v) integer rows
    (``text_values``: text v).

    ``guard``: ``"unset"`` changes only rows whose ``col`` is NULL (a mark set once);
    ``"covers"`` only rows whose ``col`` >= v (a subtraction that never goes below zero).
    ``run`` returns the rows changed, which is fewer than given when the guard refused some.
    """

    def __init__(self, table: Table, col: str, *, subtract: bool = False,
                 guard: Guard | None = None, text_values: bool = False) -> None:
        from sqlalchemy import update

        self.table, self.col, self.subtract, self.guard = table, col, subtract, guard
        # PostgreSQL: the (k, v) rows go through a temporary table of this value type
        self.temp, self.v_type = ("lb_bulk_kt", "text") if text_values else ("lb_bulk_kv",
                                                                            "bigint")
        column = table.c[col]
        given = bindparam("v_new", type_=column.type)
        where = [table.c.id == bindparam("k_id", type_=table.c.id.type)]
        if guard == "unset":
            where.append(column.is_(None))
        elif guard == "covers":
            where.append(column >= given)
        value: Any = column - given if subtract else given
        self.stmt = update(table).where(*where).values({col: value})

    def run(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        if conn.dialect.name != "postgresql":
            return executemany(conn, self.stmt, ("k_id", "v_new"), rows)
        conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {self.temp} "
                             f"(k bigint PRIMARY KEY, v {self.v_type}) ON COMMIT DELETE ROWS")
        _pg_copy(conn, f"COPY {self.temp} (k, v) FROM STDIN", [None, None], rows)
        new = f"t.{self.col} - s.v" if self.subtract else "s.v"
        guard = {None: "", "unset": f" AND t.{self.col} IS NULL",
                 "covers": f" AND t.{self.col} >= s.v"}[self.guard]
        count = conn.exec_driver_sql(f'UPDATE "{self.table.name}" AS t SET {self.col} = {new} '
                                     f"FROM {self.temp} AS s WHERE t.id = s.k{guard}").rowcount
        conn.exec_driver_sql(f"DELETE FROM {self.temp}")
        return int(count)


def _pg_copy(conn: Connection, sql: str, funcs: Sequence[Processor],
             rows: Sequence[Sequence[Any]]) -> None:
    from sqlalchemy.exc import DBAPIError

    columns = _convert(list(zip(*rows, strict=True)), funcs)
    raw = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
            for row in zip(*columns, strict=True):
                copy.write_row(row)
    except dbapi.Error as exc:
        # the same exception classes as every other statement (IntegrityError for a race)
        raise DBAPIError.instance(sql, None, exc, dbapi.Error) from exc
