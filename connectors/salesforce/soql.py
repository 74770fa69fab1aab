"""SOQL built from the field map; every literal goes through simple-salesforce's `format_soql`.

Rules: field and object names come only from the field map (never from data); values (ids,
timestamps, names) are always literals escaped by `format_soql`; incremental reads are ordered
`SystemModstamp, Id` so that ties at one timestamp come in a stable order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from simple_salesforce.format import format_soql

from connectors.cursor import OwnRange
from connectors.fieldmap import ObjectMap


def _select(om: ObjectMap, with_deleted: bool) -> str:
    fields = om.select() + (["IsDeleted"] if with_deleted else [])
    return f"SELECT {', '.join(dict.fromkeys(fields))} FROM {om.crm_object}"


def changes(om: ObjectMap, since: datetime | None, *, with_deleted: bool,
            by: bool = False, exclude: OwnRange | None = None) -> str:
    """Rows changed at or after `since` (all rows when None), oldest first, ties by Id; `by`
    also selects each row's last modifier; `exclude` leaves out the rows last modified by
    `exclude.user` stamped inside its range (our own writes already read back: cursor.py)."""
    fields = [*om.select(), *(["IsDeleted"] if with_deleted else []),
              *(["LastModifiedById"] if by or exclude else [])]
    query = f"SELECT {', '.join(dict.fromkeys(fields))} FROM {om.crm_object}"
    if since is not None:
        query += format_soql(" WHERE {:literal} >= {}", om.modstamp, since)
        if exclude is not None:
            query += format_soql(" AND (LastModifiedById != {} OR {:literal} < {:literal} OR "
                                 "{:literal} >= {:literal})", exclude.user, om.modstamp,
                                 stamp_literal(exclude.start), om.modstamp,
                                 stamp_literal(exclude.end))
    return query + f" ORDER BY {om.modstamp}, {om.key}"


def stamp_literal(at: datetime) -> str:
    """A dateTime literal that keeps milliseconds when there are any: Salesforce's own stamps
    are whole seconds (`.000`), written as format_soql writes them; a stand-in that stamps
    milliseconds (the sandbox) is compared at its own precision, not a truncated one."""
    utc = at.astimezone(UTC)
    if utc.microsecond == 0:
        return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def by_ids(om: ObjectMap, ids: list[str]) -> str:
    """The live rows of these ids (at most ``IDS_PER_QUERY``): ``WHERE Id IN (...)``."""
    if len(ids) > IDS_PER_QUERY:
        raise ValueError(f"at most {IDS_PER_QUERY} ids per query, not {len(ids)}")
    return _select(om, False) + format_soql(" WHERE {:literal} IN {} ORDER BY {:literal}",
                                            om.key, list(ids), om.key)


def stamps(om: ObjectMap) -> str:
    """Every row's id and modification stamp, nothing else (the drift sweep)."""
    return f"SELECT {om.key}, {om.modstamp} FROM {om.crm_object}"


#: Ids per ``Id IN (...)`` query: 200 keep the query well within SOQL's length limit.
IDS_PER_QUERY = 200


def by_field_in(om: ObjectMap, crm_field: str, values: list[Any]) -> str:
    """Every row whose field is one of ``values`` (at most ``IDS_PER_QUERY``): ``WHERE field
    IN (...)``, e.g. the lines of 200 quotes in one query."""
    if len(values) > IDS_PER_QUERY:
        raise ValueError(f"at most {IDS_PER_QUERY} values per query, not {len(values)}")
    return _select(om, False) + format_soql(" WHERE {:literal} IN {} ORDER BY {:literal}",
                                            crm_field, list(values), om.key)


def by_field(om: ObjectMap, crm_field: str, value: Any) -> str:
    """Every row whose field equals `value` (paged by the caller, no LIMIT: a customer may
    have more quotes than any fixed cap)."""
    return _select(om, False) + format_soql(" WHERE {:literal} = {} ORDER BY {:literal}",
                                            crm_field, value, om.key)
