"""Row writes: PATCH (update or upsert), POST (create), DELETE, with optimistic concurrency.

Rules kept:
- A payload is checked column by column before anything changes: an unknown property, a
  read-only lookup column or a value of the wrong type is a 400 with Dataverse's message, and
  the row is untouched.
- `If-Match: W/"<versionnumber>"` must equal the row's current version, else 412 with code
  0x80060882; `If-Match: *` requires the row to exist (404 otherwise); `If-None-Match: *` refuses
  to overwrite (412). A PATCH without either creates a missing row (Dataverse's upsert).
  DELETE honours `If-Match` the same way.
- Lookups are written only as `<navigation>@odata.bind: "/<set>(<guid>)"` (or
  `"/<set>(<alternate key>='<value>')"`) and must point at a live row. System columns in a
  payload are ignored, as Dataverse ignores them.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from .schema import (
    ALTERNATE_KEYS,
    BOOL,
    DATE,
    DATETIME,
    DECIMAL,
    GUID,
    INT,
    MONEY,
    STRING,
    SYSTEM,
    TABLES,
    TableDef,
)
from .store import Row, Store
from .wire import BAD_QUERY, DUPLICATE, ROW_NOT_FOUND, VERSION_MISMATCH, DataverseError, parse_time

_BIND = re.compile(r"^/?(?:.*/api/data/v9\.\d/)?(\w+)\(([0-9a-fA-F-]{36})\)$")


def _bad(message: str) -> DataverseError:
    return DataverseError(400, BAD_QUERY, message)


def not_found(table: TableDef, guid: str) -> DataverseError:
    return DataverseError(404, ROW_NOT_FOUND, f"{table.entity} With Id = {guid} Does Not Exist")


def _typed(column: str, ctype: str, value: Any, ieee754: bool) -> Any:
    if value is None:
        return None
    numeric = (int, float, Decimal, str) if ieee754 else (int, float, Decimal)
    ok = {STRING: isinstance(value, str), BOOL: isinstance(value, bool),
          INT: isinstance(value, int) and not isinstance(value, bool),
          MONEY: isinstance(value, numeric) and not isinstance(value, bool),
          DECIMAL: isinstance(value, numeric) and not isinstance(value, bool),
          GUID: isinstance(value, str), DATE: isinstance(value, str),
          DATETIME: isinstance(value, str)}.get(ctype, False)
    try:
        if ok and ctype == DATE:
            dt.date.fromisoformat(value)
        elif ok and ctype == DATETIME:
            value = parse_time(value).strftime("%Y-%m-%dT%H:%M:%SZ")
        elif ok and ctype in (MONEY, DECIMAL):
            value = Decimal(str(value))
    except (ValueError, ArithmeticError):
        ok = False
    if not ok:
        raise _bad(f"Cannot convert the literal '{value}' to the expected type '{ctype}' "
                   f"for the property '{column}'.")
    return value


def validate(table: TableDef, payload: Any, store: Store, ieee754: bool = False) -> Row:
    """The payload as column values; DataverseError if any part of it is not acceptable.

    Decimals may be JSON strings only with `IEEE754Compatible=true` (OData JSON format).
    """
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object describing the entity.")
    values: Row = {}
    for name, value in payload.items():
        if name.startswith("@odata."):
            continue
        if name.endswith("@odata.bind"):
            nav = name[: -len("@odata.bind")]
            if nav not in table.binds:
                raise _bad(f"An undeclared property '{nav}' which only has property "
                           "annotations in the payload but no property value was found in the "
                           "payload.")
            column, target = table.binds[nav]
            keyed = _keyed_bind(store, target, value)
            if keyed is not None:
                values[column] = keyed
                continue
            match = _BIND.match(value) if isinstance(value, str) else None
            if match is None or match.group(1) != target:
                raise _bad(f"The value '{value}' of '{name}' is not a valid reference to "
                           f"'{target}'.")
            if store.index_of(target, match.group(2)) is None:
                raise DataverseError(404, ROW_NOT_FOUND, f"{target[:-1]} With Id = "
                                     f"{match.group(2)} Does Not Exist")
            values[column] = match.group(2).lower()
            continue
        if name not in table.columns:
            raise _bad(f"The property '{name}' does not exist on type '{table.type_name}'. "
                       "Make sure to only use property names that are defined by the type.")
        if name.startswith("_") and name.endswith("_value"):
            raise _bad(f"Invalid property '{name}' was found in entity '{table.type_name}'.")
        if name in SYSTEM or name == table.key:
            continue
        values[name] = _typed(name, table.columns[name], value, ieee754)
    return values


_KEYED_BIND = re.compile(r"^/?(?:.*/api/data/v9\.\d/)?(\w+)\((\w+)='((?:[^']|'')*)'\)$")


def _keyed_bind(store: Store, target: str, value: Any) -> str | None:
    """The GUID of the row a bind names by an alternate key (``/invoices(new_ledgerdocumentid=
    'invoice-1')``), None when ``value`` is not such a bind; 404 when no row has that key."""
    match = _KEYED_BIND.match(value) if isinstance(value, str) else None
    if match is None or match.group(1) != target:
        return None
    column, wanted = match.group(2), match.group(3).replace("''", "'")
    if column not in ALTERNATE_KEYS.get(target, ()):
        raise _bad(f"The key '{column}' is not an alternate key of the entity "
                   f"'{TABLES[target].entity}'.")
    for _index, row in store.scan(target):
        if row.get(column) == wanted:
            return str(row[TABLES[target].key])
    raise DataverseError(404, ROW_NOT_FOUND, f"{TABLES[target].entity} With Ids = "
                         f"{column}:{match.group(3)} Does Not Exist")


def check_preconditions(table: TableDef, row: Row | None, guid: str, if_match: str | None,
                        if_none_match: str | None) -> None:
    if if_match is not None:
        if row is None:
            raise not_found(table, guid)
        if if_match.strip() != "*" and if_match.strip() != f'W/"{row["versionnumber"]}"':
            raise DataverseError(412, VERSION_MISMATCH, "The version of the existing record "
                                 "doesn't match the RowVersion property provided.")
    if if_none_match is not None and if_none_match.strip() == "*" and row is not None:
        raise DataverseError(412, VERSION_MISMATCH, f"A record with matching key values "
                             f"already exists: {table.key} = {guid}.")


def patch(store: Store, table: TableDef, guid: str, payload: Any, if_match: str | None,
          if_none_match: str | None, ieee754: bool = False) -> tuple[Row, bool]:
    """Update (or upsert) one row; (row after the write, created?)."""
    index = store.index_of(table.name, guid)
    row = store.get(table.name, index) if index is not None else None
    check_preconditions(table, row, guid, if_match, if_none_match)
    values = validate(table, payload, store, ieee754)
    if index is None:
        return store.create(table.name, values, guid=guid), True
    return store.update(table.name, index, values), False


def create(store: Store, table: TableDef, payload: Any, ieee754: bool = False) -> Row:
    values = validate(table, payload, store, ieee754)
    guid = payload.get(table.key) if isinstance(payload, dict) else None
    if guid is not None:
        if not isinstance(guid, str) or not re.fullmatch(r"[0-9a-fA-F-]{36}", guid):
            raise _bad(f"Cannot convert the literal '{guid}' to the expected type 'Edm.Guid'.")
        if store.index_of(table.name, guid) is not None:
            raise DataverseError(412, DUPLICATE, "A record with matching key values "
                                 f"already exists: {table.key} = {guid}.")
    return store.create(table.name, values, guid=guid)


def delete(store: Store, table: TableDef, guid: str, if_match: str | None = None) -> None:
    index = store.index_of(table.name, guid)
    if index is None:
        raise not_found(table, guid)
    check_preconditions(table, store.get(table.name, index), guid, if_match, None)
    store.delete(table.name, index)
