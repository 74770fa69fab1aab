"""The file a customer was given: the first render of a posted document, kept and served again.

Rules kept here
- Only issued documents are kept: invoices, credit memos and debit memos that are not drafts
  (a void invoice or a cancelled memo keeps the file it had). Drafts and statements are always
  rendered from the ledger as it is now.
- One file per (document, format), written once (a unique key): the first render after
  posting by whatever issues it (``ledgerbridge ... render``, the demo; later the mail and the
  CRM push) and never replaced, so a later change of the templates, the seller's details or the
  account does not change a document already issued. Its template digest and SHA-256 are kept
  with it.
- ``issued_file`` returns the kept file when there is one; otherwise renders, keeps (when the
  unit of work may write and the document is issued) and returns it. Two first renders at once
  keep one file: the loser reads the winner's (same bytes when the templates are the same).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import document_files

KEPT_KINDS = ("invoice", "credit_memo", "debit_memo")


def kept_file(conn: Connection, kind: str, doc_id: int, fmt: str) -> RowMapping | None:
    return conn.execute(select(document_files).where(
        document_files.c.doc_type == kind, document_files.c.doc_id == doc_id,
        document_files.c.format == fmt)).mappings().first()


def is_issued(doc: Mapping[str, Any]) -> bool:
    return doc["kind"] in KEPT_KINDS and not doc["draft"]


def issued_file(uow: UnitOfWork, doc: Mapping[str, Any], fmt: str, render: Callable[[], bytes],
                template_digest: str, *, keep: bool = True) -> tuple[bytes, bool]:
    """The document's file and whether it is the kept one (see the module's rules); ``keep``
    false (a read-only unit of work) serves a kept file but writes none."""
    if not is_issued(doc):
        return render(), False
    row = kept_file(uow.conn, doc["kind"], int(doc["id"]), fmt)
    if row is not None:
        return bytes(row["body"]), True
    body = render()
    if not keep:
        return body, False
    try:
        with uow.savepoint():
            uow.conn.execute(insert(document_files).values(
                doc_type=doc["kind"], doc_id=int(doc["id"]), format=fmt,
                template_digest=template_digest, sha256=hashlib.sha256(body).hexdigest(),
                body=body, created_at=uow.now()))
    except IntegrityError:
        row = kept_file(uow.conn, doc["kind"], int(doc["id"]), fmt)
        if row is None:
            raise
        return bytes(row["body"]), True
    return body, True
