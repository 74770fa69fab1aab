"""The PDF of an issued document for the CRM push: the kept file a customer was given.

Rules kept here:
- ``pdf_files`` returns the callable :func:`sync.push.push` takes as ``files``: it serves the
  document's kept file (``billing_core.service.document_files``), or renders it with the
  configured ``[documents]`` options and keeps it (the first render of a posted document is
  what the customer was given, wherever it happens), in one short unit of work per document.
- The renderer (templates, fonts) is built once per callable, on first use.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from billing_core.adapters.db import UnitOfWork

if TYPE_CHECKING:
    from billing_core.documents.options import RenderOptions


def pdf_files(engine: Engine, options: RenderOptions | None = None, *,
              tax_inclusive: bool = False) -> Callable[[str, int], bytes]:
    made: dict[str, Any] = {}

    def pdf(kind: str, doc_id: int) -> bytes:
        from billing_core.documents.options import RenderOptions
        from billing_core.documents.render import Renderer
        from billing_core.service.rendering import render_document

        if "renderer" not in made:
            made["renderer"] = Renderer(options or RenderOptions())
        with UnitOfWork(engine) as uow:
            done = render_document(uow, made["renderer"], kind, doc_id, "pdf",
                                   tax_inclusive=tax_inclusive)
            uow.commit()
        return done.body

    return pdf
