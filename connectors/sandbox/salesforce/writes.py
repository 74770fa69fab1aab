"""Validating and applying record writes: single sObject rows and sObject Collections.

Rules this module keeps:
- Input field names match case-insensitively; `attributes` and `Id` are not data. An unknown
  field is INVALID_FIELD, a read-only one INVALID_FIELD_FOR_INSERT_UPDATE, a value of the wrong
  type INVALID_TYPE_ON_FIELD_IN_RECORD, text over its length STRING_TOO_LONG, a bad restricted
  picklist value INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST, a reference to no row
  INVALID_CROSS_REFERENCE_KEY — each with the field names, as Salesforce reports them.
- Collections: at most 200 records (else the whole call is a 400 EXCEEDED_ID_LIMIT); one result
  per record, in order (a repeated id fails as DUPLICATE_VALUE); with allOrNone, any failure rolls
  every record back (ALL_OR_NONE_OPERATION_ROLLED_BACK) and nothing is written. All rows written by
  one call share
  one SystemModstamp, as rows of one transaction do.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from . import schema as S
from .ids import INTEGRATION_USER, parse_id, to18
from .store import Store, now_ms
from .wire import record_error

MAX_COLLECTION = 200
_REFERENCES = {"AccountId": "Account", "Product2Id": "Product2", "QuoteId": "Quote",
               "PricebookEntryId": "PricebookEntry", "SBQQ__Account__c": "Account",
               "SBQQ__Product__c": "Product2", "SBQQ__Quote__c": "SBQQ__Quote__c",
               "Account__c": "Account"}
_SET_ON_CREATE = ("Product2Id", "QuoteId", "QuoteNumber", "SBQQ__Quote__c")
_REQUIRED = {"Account": ("Name",), "Quote": ("Name", "AccountId"),
             "QuoteLineItem": ("QuoteId", "Product2Id"), "PricebookEntry": ("Product2Id",),
             "SBQQ__QuoteLine__c": ("SBQQ__Quote__c",), "Invoice__c": ("Name",)}
_ROLLED_BACK = record_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not "
                            "all records were valid and the request was using AllOrNone header")


class WriteError(Exception):
    def __init__(self, code: str, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.error = record_error(code, message, fields)


def _bad_type(fld: S.Field, value: Any) -> WriteError:
    return WriteError("INVALID_TYPE_ON_FIELD_IN_RECORD",
                      f"{fld.label or fld.name}: value not of required type: {value}", [fld.name])


def coerce(store: Store, fld: S.Field, value: Any) -> Any:
    """The stored form of `value` for `fld`, or WriteError."""
    label = fld.label or fld.name
    if value is None:
        return False if fld.type == S.BOOLEAN else None
    if fld.type == S.BOOLEAN:
        if not isinstance(value, bool):
            raise _bad_type(fld, value)
        return value
    if fld.type in (S.CURRENCY, S.DOUBLE, S.INT):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _bad_type(fld, value)
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise _bad_type(fld, value) from None
        if not number.is_finite() or abs(number) >= Decimal(10) ** 16:
            raise WriteError("NUMBER_OUTSIDE_VALID_RANGE",
                             f"{label}: value outside of valid range on numeric field: {value}",
                             [fld.name])
        places = {S.CURRENCY: Decimal("0.01"), S.INT: Decimal(1)}.get(fld.type)
        number = number.quantize(places, ROUND_HALF_UP) if places else number
        return int(number) if fld.type == S.INT else number
    if fld.type == S.DATE:
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise _bad_type(fld, value)
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise _bad_type(fld, value) from None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise _bad_type(fld, value)
    text = str(value)
    if fld.type in (S.REFERENCE, S.ID):
        full = to18(text)
        target = S.sobject(_REFERENCES.get(fld.name, ""))
        if full is None:
            raise WriteError("MALFORMED_ID", f"{label}: id value of incorrect type: {text}",
                             [fld.name])
        if target is not None and store.get_by_id(target, full) is None:
            raise WriteError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id",
                             [fld.name])
        return full
    if fld.values and text not in fld.values:
        raise WriteError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                         f"{label}: bad value for restricted picklist field: {text}", [fld.name])
    if fld.length and len(text) > fld.length:
        raise WriteError("STRING_TOO_LONG", f"{label}: data value too large: {text[:40]} "
                         f"(max length={fld.length})", [fld.name])
    return text


#: Values a created record has that the caller cannot set (a price book made through the API
#: is never the standard one).
_CREATED_WITH: dict[str, dict[str, Any]] = {"Pricebook2": {"IsStandard": False}}


def values_for(store: Store, obj: S.SObject, payload: dict[str, Any], creating: bool) -> dict[str, Any]:
    """Validated stored values from a JSON record; raises WriteError on the first bad field."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "attributes" or key.lower() == "id":
            continue
        fld = obj.field(key)
        if fld is None:
            raise WriteError("INVALID_FIELD",
                             f"No such column '{key}' on sobject of type {obj.name}", [])
        if not fld.updateable and not (creating and fld.name in _SET_ON_CREATE):
            raise WriteError("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update "
                             f"fields: {fld.name}. Please check the security settings of this "
                             "field and verify that it is read/write for your profile or "
                             "permission set.", [fld.name])
        out[fld.name] = coerce(store, fld, value)
    if creating:
        out = {**_CREATED_WITH.get(obj.name, {}), **out}
        missing = [n for n in _REQUIRED.get(obj.name, ()) if out.get(n) in (None, "")]
        if missing:
            raise WriteError("REQUIRED_FIELD_MISSING",
                             f"Required fields are missing: [{', '.join(missing)}]", missing)
    return out


def target_row(store: Store, obj: S.SObject, record_id: Any) -> int:
    """Index of the live row `record_id` names in `obj`, or WriteError."""
    if not isinstance(record_id, str) or not record_id:
        raise WriteError("MISSING_ARGUMENT", "Id not specified in an update call", [])
    parsed = parse_id(record_id)
    if to18(record_id) is None or (parsed is not None and parsed[0] != obj.prefix):
        raise WriteError("MALFORMED_ID", f"malformed id {record_id}", [])
    index = store.locate(obj, record_id)
    if index is None:
        raise WriteError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
    row = store.get(obj, index)
    if row is not None and row["IsDeleted"]:
        raise WriteError("ENTITY_IS_DELETED", "entity is deleted", [])
    return index


def collection(store: Store, method: str, records: list[Any], all_or_none: bool) -> list[dict[str, Any]]:
    """Apply one sObject Collections call (POST create, PATCH update, DELETE by id strings)."""
    plans: list[tuple[S.SObject, int | None, dict[str, Any]] | dict[str, Any]] = []
    seen: set[str] = set()
    with store.lock:
        for record in records:
            try:
                record_id = to18(_id_of(record) or "") if method != "POST" else None
                if record_id is not None and record_id in seen:
                    raise WriteError("DUPLICATE_VALUE", f"Duplicate id in list: {record_id}", [])
                seen.add(record_id or "")
                plans.append(_plan(store, method, record))
            except WriteError as exc:
                plans.append(_failure(method, record, exc.error))
        failed = any(isinstance(p, dict) for p in plans)
        if failed and all_or_none:
            return [p if isinstance(p, dict) else _failure(method, r, _ROLLED_BACK)
                    for p, r in zip(plans, records, strict=True)]
        at = now_ms(store.clock)
        results = []
        for plan in plans:
            if isinstance(plan, dict):
                results.append(plan)
                continue
            obj, index, values = plan
            if method == "POST":
                row = store.create(obj, values, at=at, by=INTEGRATION_USER)
            elif method == "DELETE":
                row = store.delete(obj, index or 0, at=at, by=INTEGRATION_USER)
            else:
                row = store.update(obj, index or 0, values, at=at, by=INTEGRATION_USER)
            results.append({"id": row["Id"], "success": True, "errors": []})
        return results


def _failure(method: str, record: Any, error: dict[str, Any]) -> dict[str, Any]:
    """A failed record's result: updates and deletes name the id, creates have none."""
    result: dict[str, Any] = {"success": False, "errors": [error]}
    return result if method == "POST" else {"id": _id_of(record), **result}


def _id_of(record: Any) -> str | None:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        value = record.get("id", record.get("Id"))
        return value if isinstance(value, str) else None
    return None


def _plan(store: Store, method: str, record: Any) -> tuple[S.SObject, int | None, dict[str, Any]]:
    if method == "DELETE":
        parsed = parse_id(record) if isinstance(record, str) else None
        obj = S.BY_PREFIX.get(parsed[0]) if parsed else None
        if obj is None:
            raise WriteError("MALFORMED_ID", f"malformed id {record}", [])
        return obj, target_row(store, obj, record), {}
    if not isinstance(record, dict):
        raise WriteError("INVALID_TYPE", "record must be a JSON object", [])
    attributes = record.get("attributes")
    type_name = attributes.get("type") if isinstance(attributes, dict) else None
    obj = S.sobject(type_name) if isinstance(type_name, str) else None
    if obj is None:
        raise WriteError("INVALID_TYPE", "sObject type in attributes is missing or not "
                         f"supported: {type_name}", [])
    if method == "POST":
        if _id_of(record) is not None:
            raise WriteError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
        return obj, None, values_for(store, obj, record, creating=True)
    index = target_row(store, obj, _id_of(record))
    return obj, index, values_for(store, obj, record, creating=False)
