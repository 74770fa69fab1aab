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
  already there (a crash after the upload, before the outbox recorded it) is the result. A
  note's POST that got no answer (a read timeout: Dataverse may have taken it) is not sent
  again by the transport's retry: it fails alone as ``UNCONFIRMED``, found at the next push.
- The native ``invoice`` (a map whose ``document`` object has ``logical_name = "invoice"``,
  config/fieldmaps/dynamics_invoice.toml): its totals are Dataverse's, computed from its
  ``invoicedetail`` rows, so a ``total`` mapped to one of them is not written; the lines (the
  payload's ``_lines``, the ``document_line`` object) are upserted by their own alternate key
  (``<document key>-<line no>``) right after the row, bound to it by its alternate key, so a
  re-sent push writes no line twice. Its state follows the ledger's status
  (:data:`NATIVE_STATES`): a status change first sets the row active (a paid or cancelled
  invoice is read-only in Dataverse; a missing row's 404 is expected), then writes the fields
  and lines, then closes it (Paid / Canceled) when the status says so. All of one document's
  requests go in one ``$batch``; its result is the first that failed, else the row's.
- A note Dataverse refuses (over the org's attachment size, 5 MB by default; a bad body) fails
  alone with Dataverse's code and message, prefixed with the document's number; a document whose
  row is not in Dataverse yet fails alone (``NOT_FOUND``) and is retried later. Transport
  failures, an exhausted budget or a refused token stop the call as in ``write``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connectors.base import (
    AuthError,
    ConnectorError,
    FatalError,
    Record,
    UnconfirmedError,
    WriteResult,
)
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


#: The native invoice's (statecode, statuscode) for each ledger status (unconfirmed: the
#: Dynamics 365 Sales invoice's Active 0 / Billed 4, Paid 2 / Complete 100001, Canceled 3 /
#: Canceled 100003). A partly paid document stays active: a Paid invoice is read-only.
NATIVE_STATES = {"posted": (0, 4), "partially_paid": (0, 4), "open": (0, 4),
                 "paid": (2, 100001), "applied": (2, 100001),
                 "void": (3, 100003), "cancelled": (3, 100003)}
#: Columns Dataverse computes from the invoice's lines (never written).
COMPUTED = frozenset({"totalamount", "totallineitemamount", "totaltax"})


def _native(conn: DynamicsConnector) -> bool:
    return bool(conn.fieldmap.object("document").logical_name == "invoice")


def _line_subs(conn: DynamicsConnector, update: Record, doc_url: str) -> list[odata.SubRequest]:
    lines = update.get("_lines") or []
    if not lines:
        return []
    lom = conn.fieldmap.object("document_line")
    parent = lom.fields.get("document_crm_id")
    if parent is None:
        raise FieldMapError("document_line.document_crm_id is not in the field map")
    nav = parent.crm[:-len("@odata.bind")] if parent.crm.endswith("@odata.bind") \
        else parent.crm[1:-6] if parent.crm.startswith("_") else parent.crm
    subs = []
    for line in lines:
        body = lom.to_crm({k: _line_value(k, v) for k, v in line.items()
                           if k in lom.fields and k != "key"})
        body[f"{nav}@odata.bind"] = "/" + doc_url
        body["isproductoverridden"] = True          # a write-in line: no catalog product
        subs.append(odata.SubRequest("PATCH", conn.base + _keyed(
            lom.crm_object, lom.key, str(line["key"])), body, {}))
    return subs


def _line_value(name: str, value: Any) -> Any:
    return Decimal(value) if name in ("quantity", "unit_price", "tax") else value


def _document_subs(conn: DynamicsConnector, update: Record,
                   key: str) -> tuple[list[odata.SubRequest], int]:
    """The requests of one document, and how many leading ones may answer 404 (a reopen of a
    row not there yet)."""
    om = conn.fieldmap.object("document")
    url = _keyed(om.crm_object, om.key, key)
    body = _body(conn, update)
    if not _native(conn):
        return [odata.SubRequest("PATCH", conn.base + url, body, {})], 0
    for name in COMPUTED:
        body.pop(name, None)
    if "invoicenumber" in body:     # the invoice's name (required in its form) is its number
        body["name"] = body["invoicenumber"]
    status = update.get("status")
    state = NATIVE_STATES.get(str(status)) if status is not None else None
    if status is not None and state is None:
        raise FieldMapError(f"document.status={status!r} has no invoice state")
    subs: list[odata.SubRequest] = []
    tolerated = 0
    if state is not None:
        subs.append(odata.SubRequest("PATCH", conn.base + url,
                                     {"statecode": 0, "statuscode": 4}, {"If-Match": "*"}))
        tolerated = 1
    if state is not None and state[0] == 0:
        body.update({"statecode": 0, "statuscode": 4})
    subs.append(odata.SubRequest("PATCH", conn.base + url, body, {}))
    subs += _line_subs(conn, update, url)
    if state is not None and state[0] != 0:
        subs.append(odata.SubRequest("PATCH", conn.base + url,
                                     {"statecode": state[0], "statuscode": state[1]},
                                     {"If-Match": "*"}))
    return subs, tolerated


def _combined(key: str, answers: list[odata.SubResponse | None], tolerated: int) -> WriteResult:
    row = _result(key, answers[tolerated] if len(answers) > tolerated else None)
    for n, answer in enumerate(answers):
        if n < tolerated and answer is not None and answer.status == 404:
            continue
        result = _result(key, answer)
        if not result.ok:
            return result
    return row


def upsert_documents(conn: DynamicsConnector, updates: Sequence[Record]) -> list[WriteResult]:
    results: list[WriteResult | None] = [None] * len(updates)
    pending: list[tuple[int, str, list[odata.SubRequest], int]] = []
    for i, update in enumerate(updates):
        key = str(update.get("crm_id", ""))
        try:
            subs, tolerated = _document_subs(conn, update, key)
        except (FieldMapError, FatalError) as exc:
            results[i] = WriteResult(key, False, "INVALID_FIELD", str(exc))
            continue
        pending.append((i, key, subs, tolerated))
    chunk: list[tuple[int, str, list[odata.SubRequest], int]] = []
    size = 0
    for n, item in enumerate(pending):
        chunk.append(item)
        size += len(item[2])
        nxt = pending[n + 1] if n + 1 < len(pending) else None
        if nxt is not None and size + len(nxt[2]) <= BATCH_MAX:
            continue
        try:
            answers = _send(conn, [sub for _, _, subs, _ in chunk for sub in subs])
        except ConnectorError as exc:
            exc.partial_results = _filled(results, updates, str(exc))
            raise
        at = 0
        for i, key, subs, tolerated in chunk:
            mine = [answers[at + k] if at + k < len(answers) else None
                    for k in range(len(subs))]
            results[i] = _combined(key, mine, tolerated)
            at += len(subs)
        chunk, size = [], 0
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
                resp = conn.request("POST", fom.crm_object, json=body, resend=False)
            except UnconfirmedError as exc:
                results[i] = WriteResult(key, False, "UNCONFIRMED",
                                         f"{title}: {exc.message}; looked for at the next push")
                continue
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
