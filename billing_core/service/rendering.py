"""Rendering a ledger document: its data (``document_data``), the renderer
(``billing_core.documents``) and the kept file of an issued document (``document_files``), in
one call for the CLI and the API.

Rules kept here
- ``render_document`` serves an issued document's kept file when there is one (what the
  customer received), else renders it and, when ``keep``, keeps it; ``fresh`` renders the
  ledger as it is now with the current templates and neither reads nor keeps a file (a
  preview). A draft is always rendered as it is now.
- A statement is never kept: it is rendered from the ledger for its range every time.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from billing_core.adapters.db import UnitOfWork
from billing_core.service import document_data
from billing_core.service.document_files import issued_file

if TYPE_CHECKING:
    from billing_core.documents.render import Renderer

_LOADERS: dict[str, Callable[..., dict[str, Any]]] = {
    "credit_memo": document_data.credit_memo_document,
    "debit_memo": document_data.debit_memo_document,
}


@dataclass(frozen=True)
class Rendered:
    body: bytes
    kept: bool                  # the kept file of an issued document (as first issued)
    doc: dict[str, Any]


def load(conn: Connection, kind: str, ref: int | str, *,
         tax_inclusive: bool = False) -> dict[str, Any]:
    """The data of invoice, credit memo or debit memo ``ref`` (id or number)."""
    if kind == "invoice":
        return document_data.invoice_document(conn, ref, tax_inclusive=tax_inclusive)
    return _LOADERS[kind](conn, ref)


def render_document(uow: UnitOfWork, renderer: Renderer, kind: str, ref: int | str, fmt: str, *,
                    tax_inclusive: bool = False, keep: bool = True,
                    fresh: bool = False) -> Rendered:
    doc = load(uow.conn, kind, ref, tax_inclusive=tax_inclusive)
    if fresh:
        return Rendered(renderer.render(doc, fmt), False, doc)
    body, kept = issued_file(uow, doc, fmt, lambda: renderer.render(doc, fmt),
                             renderer.template_digest(kind), keep=keep)
    return Rendered(body, kept, doc)


def render_statement(conn: Connection, renderer: Renderer, account: int | str, date_from: date,
                     date_to: date, fmt: str) -> Rendered:
    doc = document_data.statement_document(conn, account, date_from, date_to)
    return Rendered(renderer.render(doc, fmt), False, doc)
