"""Documents billing pushes: upsert by external id and Salesforce Files (ContentVersion).

Rules this module keeps:
- Upsert by external id: ``PATCH composite/sobjects/<Object>/<ExternalIdField>`` (sObject
  Collections, at most 200 records, each with ``attributes.type`` of the URL's object and no
  ``Id``; one UpsertResult per record in order: ``{"id", "success", "errors", "created"}``) and
  ``PATCH sobjects/<Object>/<ExternalIdField>/<value>`` (201 ``{"id", "success", "errors",
  "created": true}`` when it created, 204 when it updated). No row with the value: created
  (required fields checked); one: updated; several: ``DUPLICATE_EXTERNAL_ID`` (300 for the
  single form). Only fields marked as external ids can be used (``Ledger_Document_Id__c``).
- ``POST sobjects/ContentVersion`` with a JSON body: ``Title``, ``PathOnClient`` and
  ``VersionData`` (base64) are required; base64 text over 37.5 MB (a JSON body's limit) or not
  valid base64 is a 400 with Salesforce's error shape, nothing stored. It creates the
  ContentDocument, and with ``FirstPublishLocationId`` (a live record of any served object) the
  ContentDocumentLink from that record; the version answers ``ContentDocumentId``,
  ``ContentSize`` and ``FileExtension`` to queries. ``file_body`` gives a version's bytes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from . import schema as S
from .ids import INTEGRATION_USER, parse_id, to18
from .store import Store, now_ms
from .writes import MAX_COLLECTION, WriteError, values_for

#: The fields an upsert may name, per object (the org marks them External ID + Unique).
EXTERNAL_IDS = {"Invoice__c": ("Ledger_Document_Id__c",)}


def external_field(obj: S.SObject, name: str) -> S.Field:
    fld = obj.field(name)
    if fld is None or fld.name not in EXTERNAL_IDS.get(obj.name, ()):
        raise WriteError("NOT_FOUND", f"Provided external ID field does not exist or is not "
                         f"accessible: {name}", [])
    return fld


def _matches(store: Store, obj: S.SObject, fld: S.Field, value: str) -> list[int]:
    rows = [r for r in store.changed_rows(obj) if not r["IsDeleted"] and r.get(fld.name) == value]
    return [parse_id(r["Id"])[1] for r in rows]  # type: ignore[index]


def upsert_one(store: Store, obj: S.SObject, fld: S.Field, value: Any, record: Any,
               at: Any = None) -> tuple[str, bool]:
    """Create or update the row whose ``fld`` is ``value``; (its id, whether created)."""
    if not isinstance(record, dict):
        raise WriteError("INVALID_TYPE", "record must be a JSON object", [])
    if record.get("Id") or record.get("id"):
        raise WriteError("INVALID_FIELD", "Id is not allowed in an upsert by external id", ["Id"])
    if not isinstance(value, str) or not value:
        raise WriteError("MISSING_ARGUMENT", f"{fld.name} not specified", [fld.name])
    found = _matches(store, obj, fld, value)
    if len(found) > 1:
        raise WriteError("DUPLICATE_EXTERNAL_ID", f"{fld.name}: more than one record found "
                         f"for external id field: {value}", [fld.name])
    data = {k: v for k, v in record.items() if k != "attributes"}
    data[fld.name] = value
    if found:
        row = store.update(obj, found[0], values_for(store, obj, data, creating=False),
                           at=at, by=INTEGRATION_USER)
        return row["Id"], False
    row = store.create(obj, values_for(store, obj, data, creating=True), at=at,
                       by=INTEGRATION_USER)
    return row["Id"], True


def upsert_collection(store: Store, obj: S.SObject, field_name: str, records: list[Any],
                      all_or_none: bool) -> list[dict[str, Any]] | WriteError:
    """One collections upsert call: a result per record, or the call's own error."""
    try:
        fld = external_field(obj, field_name)
    except WriteError as exc:
        return exc
    if len(records) > MAX_COLLECTION:
        return WriteError("EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than "
                          f"{MAX_COLLECTION} records into this call", [])
    results: list[dict[str, Any]] = []
    with store.lock:
        at = now_ms(store.clock)
        for record in records:
            try:
                attributes = record.get("attributes") if isinstance(record, dict) else None
                kind = attributes.get("type") if isinstance(attributes, dict) else None
                if not isinstance(kind, str) or kind.lower() != obj.name.lower():
                    raise WriteError("INVALID_TYPE", f"the record's type must be {obj.name}", [])
                key = next((v for k, v in record.items() if k.lower() == fld.name.lower()), None)
                if all_or_none and any(not r["success"] for r in results):
                    raise WriteError("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back",
                                     [])
                record_id, created = upsert_one(store, obj, fld, key, record, at)
                results.append({"id": record_id, "success": True, "errors": [],
                                "created": created})
            except WriteError as exc:
                results.append({"success": False, "errors": [exc.error]})
    return results


def _decoded(text: Any) -> bytes:
    if not isinstance(text, str) or not text:
        raise WriteError("REQUIRED_FIELD_MISSING", "Required fields are missing: [VersionData]",
                         ["VersionData"])
    if len(text) > S.MAX_BASE64_JSON:
        raise WriteError("STRING_TOO_LONG", f"VersionData: base64 data of {len(text)} "
                         "characters is over the 37.5 MB a JSON body may carry; send the file "
                         "as a multipart request", ["VersionData"])
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WriteError("JSON_PARSER_ERROR", "Cannot deserialize instance of base64 from "
                         "VALUE_STRING value: Illegal base64 character", ["VersionData"]) from None


def _target(store: Store, record_id: Any) -> str:
    full = to18(record_id) if isinstance(record_id, str) else None
    parsed = parse_id(full) if full else None
    obj = S.BY_PREFIX.get(parsed[0]) if parsed else None
    row = store.get_by_id(obj, full) if obj is not None and full else None
    if row is None or row["IsDeleted"]:
        raise WriteError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id",
                         ["FirstPublishLocationId"])
    return str(full)


def create_content_version(store: Store, body: dict[str, Any]) -> str:
    """Validate and store a ContentVersion (and its document and link); its id."""
    data = {k: v for k, v in body.items() if k.lower() not in ("attributes", "versiondata",
                                                                 "firstpublishlocationid")}
    raw = next((v for k, v in body.items() if k.lower() == "versiondata"), None)
    where = next((v for k, v in body.items() if k.lower() == "firstpublishlocationid"), None)
    values = values_for(store, S.CONTENT_VERSION, data, creating=True)
    missing = [n for n in ("Title", "PathOnClient") if not values.get(n)]
    if missing:
        raise WriteError("REQUIRED_FIELD_MISSING",
                         f"Required fields are missing: [{', '.join(missing)}]", missing)
    content = _decoded(raw)
    linked = _target(store, where) if where is not None else None
    path = str(values["PathOnClient"])
    extension = path.rsplit(".", 1)[1].lower() if "." in path else ""
    with store.lock:
        at = now_ms(store.clock)
        version = store.create(S.CONTENT_VERSION, {
            **values, "VersionData": raw, "FirstPublishLocationId": linked,
            "ContentDocumentId": None, "ContentSize": len(content),
            "FileExtension": extension}, at=at, by=INTEGRATION_USER)
        document = store.create(S.CONTENT_DOCUMENT, {
            "Title": values["Title"], "LatestPublishedVersionId": version["Id"],
            "ContentSize": len(content)}, at=at, by=INTEGRATION_USER)
        store.update(S.CONTENT_VERSION, parse_id(version["Id"])[1],  # type: ignore[index]
                     {"ContentDocumentId": document["Id"]}, at=at, by=INTEGRATION_USER)
        if linked is not None:
            store.create(S.CONTENT_DOCUMENT_LINK, {
                "ContentDocumentId": document["Id"], "LinkedEntityId": linked,
                "ShareType": "I", "Visibility": "AllUsers"}, at=at, by=INTEGRATION_USER)
    return str(version["Id"])


def file_body(store: Store, version_id: str) -> bytes | None:
    row = store.get_by_id(S.CONTENT_VERSION, version_id)
    return None if row is None else base64.b64decode(row["VersionData"])
