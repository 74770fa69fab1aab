"""SOQL built from the field map; every literal goes through simple-salesforce's `format_soql`.

Rules: field and object names come only from the field map (never from data); values (ids,
timestamps, names) are always literals escaped by `format_soql`; incremental reads are ordered
`SystemModstamp, Id` so that ties at one timestamp come in a stable order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from simple_salesforce.format import format_soql

from connectors.fieldmap import ObjectMap


def _select(om: ObjectMap, with_deleted: bool) -> str:
    fields = om.select() + (["IsDeleted"] if with_deleted else [])
    return f"SELECT {', '.join(dict.fromkeys(fields))} FROM {om.crm_object}"


def changes(om: ObjectMap, since: datetime | None, *, with_deleted: bool) -> str:
    """Rows changed at or after `since` (all rows when None), oldest first, ties by Id."""
    query = _select(om, with_deleted)
    if since is not None:
        query += format_soql(" WHERE {:literal} >= {}", om.modstamp, since)
    return query + f" ORDER BY {om.modstamp}, {om.key}"


def by_field(om: ObjectMap, crm_field: str, value: Any) -> str:
    """Every row whose field equals `value` (paged by the caller, no LIMIT: a customer may
    have more quotes than any fixed cap)."""
    return _select(om, False) + format_soql(" WHERE {:literal} = {} ORDER BY {:literal}",
                                            crm_field, value, om.key)
