"""`EntityDefinitions`: the little table metadata a connector checks before a run.

Served: `EntityDefinitions` (collection), `EntityDefinitions(LogicalName='x')` and
`EntityDefinitions(LogicalName='x')/Attributes`, `$select` honoured on the rows.
Rules kept:
- Attribute names are logical names: a lookup read as `_x_value` is the attribute `x`.
- `IsValidForUpdate` is false exactly for the columns the sandbox refuses to write (key,
  createdon, modifiedon, versionnumber, the native invoice's computed totals);
  `ChangeTrackingEnabled` matches what the reader does.
- Date and time columns say their `Format` and `DateTimeBehavior` as the schema serves them:
  `Edm.Date` is DateOnly/DateOnly, a user-local date DateOnly/UserLocal, else
  DateAndTime/UserLocal.
- Anything else under EntityDefinitions is a 404 in Dataverse's shape.
"""

from __future__ import annotations

import re
from typing import Any

from .ids import salt
from .schema import INVOICE_COMPUTED, SYSTEM, TABLES, TableDef
from .wire import NOT_FOUND_SEGMENT, DataverseError

_PATH = re.compile(r"^EntityDefinitions(?:\(LogicalName='(\w+)'\))?(/Attributes)?$")
_ATTR_TYPES = {"Edm.Guid": "Uniqueidentifier", "Edm.String": "String", "Edm.Decimal": "Decimal",
               "Edm.Boolean": "Boolean", "Edm.Int32": "Integer",
               "Edm.DateTimeOffset": "DateTime", "Edm.Date": "DateTime"}


def _id(seed: int, name: str) -> str:
    h = f"{salt(seed, 'meta/' + name):016x}{salt(seed, 'meta2/' + name):016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _entity(seed: int, t: TableDef) -> dict[str, Any]:
    return {"MetadataId": _id(seed, t.entity), "LogicalName": t.entity,
            "EntitySetName": t.name, "PrimaryIdAttribute": t.key,
            "ChangeTrackingEnabled": t.tracked, "IsCustomEntity": False}


def _attributes(seed: int, t: TableDef) -> list[dict[str, Any]]:
    out = []
    for column, edm in t.columns.items():
        lookup = column.startswith("_") and column.endswith("_value")
        name = column[1:-6] if lookup else column
        attribute = {"MetadataId": _id(seed, f"{t.entity}.{name}"), "LogicalName": name,
                     "AttributeType": "Lookup" if lookup else _ATTR_TYPES[edm],
                     "IsValidForUpdate": column not in SYSTEM and column != t.key
                     and column not in INVOICE_COMPUTED.get(t.name, ()),
                     "IsCustomAttribute": name.startswith("new_")}
        if edm in ("Edm.Date", "Edm.DateTimeOffset"):
            date_only = edm == "Edm.Date" or column in t.user_local
            attribute["Format"] = "DateOnly" if date_only else "DateAndTime"
            attribute["DateTimeBehavior"] = {
                "Value": "DateOnly" if edm == "Edm.Date" else "UserLocal"}
        out.append(attribute)
    return out


def _select(row: dict[str, Any], select: str | None) -> dict[str, Any]:
    if not select:
        return row
    keep = [c.strip() for c in select.split(",")] + ["MetadataId"]
    return {k: v for k, v in row.items() if k in keep}


def answer(path: str, select: str | None, seed: int, api: str) -> dict[str, Any]:
    match = _PATH.match(path)
    if match is None:
        raise DataverseError(404, NOT_FOUND_SEGMENT, "Resource not found for the segment "
                             f"'{path.split('/')[-1]}'.")
    logical, attributes = match.group(1), match.group(2)
    if logical is None:
        if attributes:
            raise DataverseError(404, NOT_FOUND_SEGMENT, "Resource not found for the segment "
                                 "'Attributes'.")
        return {"@odata.context": f"{api}/$metadata#EntityDefinitions",
                "value": [_select(_entity(seed, t), select) for t in TABLES.values()]}
    table = next((t for t in TABLES.values() if t.entity == logical), None)
    if table is None:
        raise DataverseError(404, "0x80040217", f"Could not find an entity with name "
                             f"'{logical}'.")  # code as for a missing row; unconfirmed
    base = f"{api}/$metadata#EntityDefinitions('{table.entity}')"
    if attributes:
        return {"@odata.context": f"{base}/Attributes",
                "value": [_select(a, select) for a in _attributes(seed, table)]}
    return {"@odata.context": f"{api}/$metadata#EntityDefinitions/$entity",
            **_select(_entity(seed, table), select)}
