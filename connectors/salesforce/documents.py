"""Issued documents in Salesforce: an ``Invoice__c`` record per document and its PDF as a file.

Rules kept here:
- Records are upserted by the external id field that is the ``document`` object's key in the
  field map (``Ledger_Document_Id__c``; the outbox row's ``crm_id`` is its value): sObject
  Collections upsert, ``PATCH composite/sobjects/Invoice__c/Ledger_Document_Id__c``, 200 per
  call, ``allOrNone: false``, one result per record in order. A re-sent upsert (a crash after
  Salesforce accepted it, before the outbox recorded it) updates the same record: never a
  duplicate.
- Files: a ``ContentVersion`` (``Title``, ``PathOnClient``, ``VersionData`` base64,
  ``FirstPublishLocationId`` = the record, which makes the ContentDocument and its
  ContentDocumentLink to the record). Before uploading, one query per call finds the records
  by external id and one finds the files already published to them; a file whose title is
  already on its record is not uploaded again (a crash after the upload, before the outbox
  recorded it), its ContentVersion id is the result. An upload that got no answer (a read
  timeout: Salesforce may have taken it) is not sent again by the transport's retry: it fails
  alone as ``UNCONFIRMED`` and the next push finds it on its record, or uploads it then.
- A file refused by Salesforce (too large for a JSON body: 37.5 MB of base64; a bad body) fails
  alone with Salesforce's code and message, prefixed with the document's number; a document
  whose record is not in Salesforce yet fails alone (``NOT_FOUND``) and is retried later.
  Transport failures, an exhausted budget or a refused session stop the call as in ``write``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from simple_salesforce.format import format_soql

from connectors.base import (
    AuthError,
    ConnectorError,
    FatalError,
    Record,
    UnconfirmedError,
    WriteResult,
)
from connectors.salesforce.collections import collection_bodies

if TYPE_CHECKING:
    from connectors.salesforce.connector import SalesforceConnector

CHUNK = 200


def _filled(results: list[WriteResult | None], updates: Sequence[Record], why: str,
            code: str = "NOT_SENT") -> list[WriteResult]:
    return [r or WriteResult(str(u.get("crm_id", "")), False, code, why)
            for r, u in zip(results, updates, strict=True)]


def upsert_documents(conn: SalesforceConnector, updates: Sequence[Record]) -> list[WriteResult]:
    om = conn.fieldmap.object("document")
    results, pending = collection_bodies(om, updates, om.key)
    return conn.patch_records(f"composite/sobjects/{om.crm_object}/{om.key}", pending, updates,
                              results, om.key)


def _query(conn: SalesforceConnector, query: str) -> list[dict[str, Any]]:
    return conn._call(lambda sf: list(sf.query_all_iter(query)))


def upload_files(conn: SalesforceConnector, updates: Sequence[Record]) -> list[WriteResult]:
    doc = conn.fieldmap.object("document")
    fom = conn.fieldmap.object("document_file")
    title_f, path_f = fom.fields["title"].crm, fom.fields["filename"].crm
    results: list[WriteResult | None] = [None] * len(updates)
    keys = sorted({str(u.get("crm_id", "")) for u in updates})
    try:
        record_of: dict[str, str] = {}
        for start in range(0, len(keys), CHUNK):
            found = _query(conn, format_soql(
                "SELECT Id, {:literal} FROM {:literal} WHERE {:literal} IN {}", doc.key,
                doc.crm_object, doc.key, keys[start:start + CHUNK]))
            record_of.update({str(r[doc.key]): str(r["Id"]) for r in found})
        have: dict[tuple[str, str], str] = {}
        ids = sorted(set(record_of.values()))
        for start in range(0, len(ids), CHUNK):
            found = _query(conn, format_soql(
                "SELECT Id, {:literal}, FirstPublishLocationId FROM {:literal} "
                "WHERE FirstPublishLocationId IN {}", title_f, fom.crm_object,
                ids[start:start + CHUNK]))
            have.update({(str(r["FirstPublishLocationId"])[:15], str(r[title_f])): str(r["Id"])
                         for r in found})
    except ConnectorError as exc:
        exc.partial_results = _filled(results, updates, str(exc))
        raise
    for i, update in enumerate(updates):
        key = str(update.get("crm_id", ""))
        title = str(update.get("title") or key)
        record = record_of.get(key)
        if record is None:
            results[i] = WriteResult(key, False, "NOT_FOUND", f"{title}: its {doc.crm_object} "
                                     f"record ({doc.key} = {key}) is not in Salesforce yet")
            continue
        if (record[:15], title) in have:
            results[i] = WriteResult(have[(record[:15], title)], True)
            continue
        body = {title_f: title, path_f: str(update.get("filename") or f"{title}.pdf"),
                "VersionData": base64.b64encode(bytes(update.get("_pdf") or b"")).decode(),
                "FirstPublishLocationId": record}
        try:
            answer = conn._call(lambda sf, b=body: sf.restful(  # type: ignore[misc]
                f"sobjects/{fom.crm_object}", method="POST", json=b, resend=False)) or {}
        except UnconfirmedError as exc:
            results[i] = WriteResult(key, False, "UNCONFIRMED",
                                     f"{title}: {exc.message}; looked for at the next push")
            continue
        except ConnectorError as exc:
            if not isinstance(exc, FatalError) or isinstance(exc, AuthError):
                exc.partial_results = _filled(results, updates, str(exc))
                raise
            results[i] = WriteResult(key, False, exc.code or str(exc.status or "ERROR"),
                                     f"{title}: {exc.message}")
            continue
        made = WriteResult(str(answer.get("id") or key), True)
        results[i] = made
        have[(record[:15], title)] = made.crm_id     # the same file later in this call
    return _filled(results, updates, "not sent")
