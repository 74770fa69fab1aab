"""Documents billing pushes: rows addressed by an alternate key, and notes carrying files.

Rules kept:
- `/<set>(<column>='<value>')` addresses the row whose alternate key column (``ALTERNATE_KEYS``)
  holds the value (quotes doubled inside the literal). PATCH upserts: the row is updated, or
  created with the key column set (Dataverse's upsert by alternate key); `If-Match: *` makes it
  an update only (404 when missing). GET answers the row (404 when missing). A set without that
  alternate key is a 400, as Dataverse answers for a key it does not have.
- A note (`annotations`) with a `documentbody` must carry valid base64 (else 400) of at most the
  org's maximum attachment size, 5 MB by default (else 400 with Dataverse's attachment error);
  `filesize` and `isdocument` are set from the body, as Dataverse sets them.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from . import writes
from .schema import ALTERNATE_KEYS, MAX_ATTACHMENT_BYTES, TableDef
from .store import Row, Store
from .wire import BAD_QUERY, ROW_NOT_FOUND, DataverseError

ALT_ROW = re.compile(r"^(\w+)\((\w+)='((?:[^']|'')*)'\)$")
ATTACHMENT_REFUSED = "0x80044a02"   # unconfirmed: the code of the attachment size/type refusal
INVALID_ARGUMENT = "0x80040203"     # unconfirmed for a documentbody that is not base64


def _row_of(store: Store, table: TableDef, column: str, value: str) -> tuple[int, Row] | None:
    for index, row in store.scan(table.name):
        if row.get(column) == value:
            return index, row
    return None


def key_column(table: TableDef, column: str) -> str:
    if column not in ALTERNATE_KEYS.get(table.name, ()):
        raise DataverseError(400, BAD_QUERY, f"The key '{column}' is not an alternate key of "
                             f"the entity '{table.entity}'.")
    return column


def by_key(store: Store, table: TableDef, column: str, raw: str) -> Row:
    found = _row_of(store, table, key_column(table, column), raw.replace("''", "'"))
    if found is None:
        raise DataverseError(404, ROW_NOT_FOUND, f"{table.entity} With Ids = "
                             f"{column}:{raw} Does Not Exist")
    return found[1]


def upsert_by_key(store: Store, table: TableDef, column: str, raw: str, payload: Any,
                  if_match: str | None, ieee754: bool) -> tuple[Row, bool]:
    value = raw.replace("''", "'")
    found = _row_of(store, table, key_column(table, column), value)
    if found is not None:
        return writes.patch(store, table, found[1][table.key], payload, if_match, None,
                            ieee754)
    if if_match is not None:
        raise DataverseError(404, ROW_NOT_FOUND, f"{table.entity} With Ids = "
                             f"{column}:{raw} Does Not Exist")
    values = writes.validate(table, payload, store, ieee754)
    values[column] = value
    return store.create(table.name, values), True


def checked_note(payload: Any) -> Any:
    """The note's payload with filesize/isdocument set; DataverseError for a bad body."""
    if not isinstance(payload, dict) or payload.get("documentbody") is None:
        return payload
    body = payload["documentbody"]
    try:
        content = base64.b64decode(body, validate=True) if isinstance(body, str) else None
    except (binascii.Error, ValueError):
        content = None
    if content is None:
        raise DataverseError(400, INVALID_ARGUMENT, "The documentbody of the annotation is not "
                             "a valid Base64 string.")
    if len(content) > MAX_ATTACHMENT_BYTES:
        raise DataverseError(400, ATTACHMENT_REFUSED, "The attachment is either not a valid "
                             "type or is too large. It cannot be uploaded or downloaded. "
                             f"({len(content)} bytes; the maximum is {MAX_ATTACHMENT_BYTES})")
    return {**payload, "filesize": len(content), "isdocument": True}
