"""Issued documents in Dataverse: a ``new_invoice`` row per document and its PDF as a note.

Rules kept here:
- Rows are upserted by the alternate key that is the ``document`` object's key in the field map
  (``new_ledgerdocumentid``; the outbox row's ``crm_id`` is its value): ``PATCH
  new_invoices(new_ledgerdocumentid='<value>')`` without ``If-Match`` (Dataverse's upsert), in a
  ``$batch`` with ``continue-on-error``, results by position. A re-sent upsert (a crash after
  Dataverse accepted it, before the outbox recorded it) updates the same row: never a duplicate.
  A lookup column read as ``_x_value`` is written as ``x@odata.bind: /accounts(<guid>)``; a map
  may name the binding itself (``customerid_account@odata.bind``, the native ``invoice``'s
  customer).
- Files: an ``annotation`` (``subject``, ``filename``, ``mimetype`` application/pdf,
  ``documentbody`` base64, ``objectid_<table>@odata.bind`` to the row). Before creating it, the
  row is read by its alternate key and the notes on it with that file name are looked for; one
  already there (a crash after the upload, before the outbox recorded it) is the result.
- A note Dataverse refuses (over the org's attachment size, 5 MB by default; a bad body) fails
  alone with Dataverse's code and message, prefixed with the document's number; a document whose
  row is not in Dataverse yet fails alone (``NOT_FOUND``) and is retried later. Transport
  failures, an exhausted budget or a refused token stop the call as in ``write``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors.base import AuthError, ConnectorError, FatalError, Record, WriteResult
from connectors.dynamics import odata
from connectors.dynamics.write import BATCH_MAX, _filled, _result, _send
from connectors.fieldmap import FieldMapError

if TYPE_CHECKING:
    from connectors.dynamics.connector import DynamicsConnector

#: The table each bound lookup of a document points at.
LOOKUP_TARGETS = {"account_crm_id": "accounts"}


def _keyed(om_set: str, key: str, value: str) -> str:
    return f"{om_set}({key}={odata.literal(str(value))})"


def _body(conn: DynamicsConnector, update: Record) -> dict[str, Any]:
    om = conn.fieldmap.object("document")
    body: dict[str, Any] = om.to_crm(update)
    body.pop(om.key, None)
    for name, target in LOOKUP_TARGETS.items():
        spec = om.fields.get(name)
        if spec is None or spec.crm not in body:
            continue
        value = body.pop(spec.crm)
        if spec.crm.endswith("@odata.bind"):            # named as written (customerid_account)
            bind = spec.crm
        else:
            nav = spec.crm[1:-6] if spec.crm.startswith("_") and spec.crm.endswith("_value") \
                else spec.crm
            bind = f"{nav}@odata.bind"
        body[bind] = None if value is None else f"/{target}({odata.guid(str(value))})"
    return body


def upsert_documents(conn: DynamicsConnector, updates: Sequence[Record]) -> list[WriteResult]:
    om = conn.fieldmap.object("document")
    results: list[WriteResult | None] = [None] * len(updates)
    pending: list[tuple[int, str, odata.SubRequest]] = []
    for i, update in enumerate(updates):
        key = str(update.get("crm_id", ""))
        try:
            sub = odata.SubRequest("PATCH", conn.base + _keyed(om.crm_object, om.key, key),
                                   _body(conn, update), {})
        except (FieldMapError, FatalError) as exc:
            results[i] = WriteResult(key, False, "INVALID_FIELD", str(exc))
            continue
        pending.append((i, key, sub))
    for start in range(0, len(pending), BATCH_MAX):
        chunk = pending[start:start + BATCH_MAX]
        try:
            answers = _send(conn, [sub for _, _, sub in chunk])
        except ConnectorError as exc:
            exc.partial_results = _filled(results, updates, str(exc))
            raise
        for n, (i, key, _) in enumerate(chunk):
            results[i] = _result(key, answers[n] if n < len(answers) else None)
    return _filled(results, updates, "not sent", "NO_RESULT")


def _existing_note(conn: DynamicsConnector, record: str, filename: str) -> str | None:
    fom = conn.fieldmap.object("document_file")
    name_f = fom.fields["filename"].crm
    params = {"$select": fom.key, "$filter": f"_objectid_value eq {odata.guid(record)} and "
              f"{name_f} eq {odata.literal(filename)}"}
    found = conn.get_json(f"{fom.crm_object}?{odata.query_string(params)}").get("value", [])
    return str(found[0][fom.key]) if found else None


def upload_files(conn: DynamicsConnector, updates: Sequence[Record]) -> list[WriteResult]:
    doc = conn.fieldmap.object("document")
    fom = conn.fieldmap.object("document_file")
    entity = doc.logical_name or doc.crm_object.rstrip("s")
    record_key = f"{entity}id"
    results: list[WriteResult | None] = [None] * len(updates)
    for i, update in enumerate(updates):
        key = str(update.get("crm_id", ""))
        title = str(update.get("title") or key)
        filename = str(update.get("filename") or f"{title}.pdf")
        try:
            try:
                row = conn.get_json(f"{_keyed(doc.crm_object, doc.key, key)}"
                                    f"?$select={record_key}")
            except FatalError as exc:
                if exc.status != 404 or isinstance(exc, AuthError):
                    raise
                results[i] = WriteResult(key, False, "NOT_FOUND", f"{title}: its {entity} row "
                                         f"({doc.key} = {key}) is not in Dataverse yet")
                continue
            record = str(row[record_key])
            existing = _existing_note(conn, record, filename)
            if existing is not None:
                results[i] = WriteResult(existing, True)
                continue
            body = {fom.fields["title"].crm: title, fom.fields["filename"].crm: filename,
                    "mimetype": "application/pdf",
                    "documentbody": base64.b64encode(bytes(update.get("_pdf") or b"")).decode(),
                    f"objectid_{entity}@odata.bind": f"/{doc.crm_object}({record})"}
            try:
                resp = conn.request("POST", fom.crm_object, json=body)
            except FatalError as exc:
                if isinstance(exc, AuthError):
                    raise
                results[i] = WriteResult(key, False, exc.code or str(exc.status or "ERROR"),
                                         f"{title}: {exc.message}")
                continue
        except ConnectorError as exc:
            exc.partial_results = _filled(results, updates, str(exc))
            raise
        entity_id = resp.headers.get("OData-EntityId", "")
        results[i] = WriteResult(entity_id.rsplit("(", 1)[-1].rstrip(")") or key, True)
    return _filled(results, updates, "not sent")
