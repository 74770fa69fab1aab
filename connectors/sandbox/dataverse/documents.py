"""Documents billing pushes: rows addressed by an alternate key, and notes carrying files.

Rules kept:
- `/<set>(<column>='<value>')` addresses the row whose alternate key column (``ALTERNATE_KEYS``)
  holds the value (quotes doubled inside the literal). PATCH upserts: the row is updated, or
  created with the key column set (Dataverse's upsert by alternate key); `If-Match: *` makes it
  an update only (404 when missing). GET answers the row (404 when missing). A set without that
  alternate key is a 400, as Dataverse answers for a key it does not have.
- The native invoice (`invoices`) and its lines (`invoicedetails`), written by alternate key:
  their totals are computed (a write of `totalamount` or a line's `baseamount` is refused),
  a line's `baseamount` = quantity x price and `extendedamount` = that + tax, the invoice's
  totals the sums of its lines; a state goes with one of its status reasons
  (`INVOICE_STATES`); a Paid or Canceled invoice is read-only: it takes a state change alone
  (its reactivation first, then edits) and no new line.
- A note (`annotations`) with a `documentbody` must carry valid base64 (else 400) of at most the
  org's maximum attachment size, 5 MB by default (else 400 with Dataverse's attachment error);
  `filesize` and `isdocument` are set from the body, as Dataverse sets them.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal
from typing import Any

from . import writes
from .schema import (
    ALTERNATE_KEYS,
    INVOICE_COMPUTED,
    INVOICE_STATES,
    MAX_ATTACHMENT_BYTES,
    TableDef,
)
from .store import Row, Store
from .wire import BAD_QUERY, ROW_NOT_FOUND, DataverseError

ALT_ROW = re.compile(r"^(\w+)\((\w+)='((?:[^']|'')*)'\)$")
ATTACHMENT_REFUSED = "0x80044a02"   # unconfirmed: the code of the attachment size/type refusal
INVALID_ARGUMENT = "0x80040203"     # unconfirmed for a documentbody that is not base64
READ_ONLY = "0x80040227"            # unconfirmed: an edit of a closed (paid, canceled) record


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
    if found is None and if_match is not None:
        raise DataverseError(404, ROW_NOT_FOUND, f"{table.entity} With Ids = "
                             f"{column}:{raw} Does Not Exist")
    if table.name in INVOICE_COMPUTED:
        return _native_write(store, table, found, column, value, payload, ieee754)
    if found is not None:
        return writes.patch(store, table, found[1][table.key], payload, if_match, None,
                            ieee754)
    values = writes.validate(table, payload, store, ieee754)
    values[column] = value
    return store.create(table.name, values), True


def _native_write(store: Store, table: TableDef, found: tuple[int, Row] | None, column: str,
                  value: str, payload: Any, ieee754: bool) -> tuple[Row, bool]:
    """A write to the native invoice or its lines, with Dataverse's rules: computed totals are
    not written; a state goes with one of its status reasons; a Paid or Canceled invoice takes
    only a state change, and no line; a line's amounts and its invoice's totals follow."""
    values = writes.validate(table, payload, store, ieee754)
    computed = sorted(INVOICE_COMPUTED[table.name] & values.keys())
    if computed:
        raise DataverseError(400, INVALID_ARGUMENT, f"The attribute '{computed[0]}' of "
                             f"'{table.entity}' is calculated by the system and cannot be set.")
    row = found[1] if found is not None else None
    if table.name == "invoices":
        _check_state(row, values)
        if row is None:
            values.setdefault("statecode", 0)
            values.setdefault("statuscode", INVOICE_STATES[values["statecode"]][0])
    else:
        parent_id = values.get("_invoiceid_value") or (row or {}).get("_invoiceid_value")
        parent = _invoice(store, parent_id)
        if parent is None:
            raise DataverseError(400, INVALID_ARGUMENT, "An invoice product needs its invoice "
                                 "(invoiceid).")
        if parent["statecode"] != 0:
            raise DataverseError(400, READ_ONLY, "The invoice is paid or canceled: its "
                                 "products cannot be added or changed.")
        merged = {**(row or {}), **values}
        base = (merged.get("quantity") or Decimal(0)) * (merged.get("priceperunit")
                                                         or Decimal(0))
        values["baseamount"] = base
        values["extendedamount"] = base + (merged.get("tax") or Decimal(0))
    if found is not None:
        written = store.update(table.name, found[0], values)
        created = False
    else:
        values[column] = value
        written, created = store.create(table.name, values), True
    if table.name == "invoicedetails":
        _total(store, str(written["_invoiceid_value"]))
    return written, created


def _check_state(row: Row | None, values: Row) -> None:
    state = int(values.get("statecode", row["statecode"] if row else 0) or 0)
    if "statecode" in values and "statuscode" not in values and state in INVOICE_STATES:
        values["statuscode"] = INVOICE_STATES[state][0]
    reason = values.get("statuscode", row["statuscode"] if row else None)
    if state not in INVOICE_STATES or (reason is not None
                                       and reason not in INVOICE_STATES[state]):
        raise DataverseError(400, INVALID_ARGUMENT, f"{reason} is not a valid status code for "
                             f"state code InvoiceState.{state} on invoice.")
    if row is not None and row["statecode"] != 0:
        other = sorted(set(values) - {"statecode", "statuscode"})
        if other and values.get("statecode", row["statecode"]) != 0:
            raise DataverseError(400, READ_ONLY, "The invoice is paid or canceled and cannot "
                                 f"be edited (attribute '{other[0]}'): activate it first.")
        if other:      # reopened and edited in one request: Dataverse sets the state apart
            raise DataverseError(400, READ_ONLY, "The invoice is paid or canceled: set it "
                                 "active in a request of its own before editing it.")


def _invoice(store: Store, guid: object) -> Row | None:
    if not isinstance(guid, str):
        return None
    index = store.index_of("invoices", guid)
    return store.get("invoices", index) if index is not None else None


def _total(store: Store, invoice_id: str) -> None:
    """The invoice's totals from its live lines."""
    index = store.index_of("invoices", invoice_id)
    if index is None:
        return
    lines = [r for _, r in store.scan("invoicedetails") if r["_invoiceid_value"] == invoice_id]
    base = sum((r["baseamount"] or Decimal(0) for r in lines), Decimal(0))
    tax = sum((r["tax"] or Decimal(0) for r in lines), Decimal(0))
    store.update("invoices", index, {"totallineitemamount": base, "totaltax": tax,
                                     "totalamount": base + tax})


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
