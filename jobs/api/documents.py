"""Rendered documents over HTTP: ``Accept: application/pdf`` or ``text/html`` on a document's
``GET`` returns the document itself (docs/DOCUMENTS.md); JSON stays the default.

Rules kept here
- Negotiation by the ``Accept`` header's media ranges and q-values: the best of
  ``application/json``, ``application/pdf``, ``text/html`` wins; a tie goes to JSON, then to the
  one listed first; ``*/*``, no header or only other types: JSON.
- A ``GET`` writes nothing: it serves the file kept when the document was first rendered after
  posting (``billing_core.service.document_files``) or, before that, renders the ledger as it
  is now.
- A template with an error answers 500 ``template_error`` naming the template file and line
  (the server's configuration, not the request, is at fault); nothing else is affected.
"""
from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from billing_core.adapters.db import UnitOfWork
from config.settings import Settings
from jobs.api.errors import body

MEDIA = {"application/json": "json", "application/pdf": "pdf", "text/html": "html"}
CONTENT = {"pdf": "application/pdf", "html": "text/html; charset=utf-8"}
#: The OpenAPI ``responses`` entry of a route that negotiates a rendered document.
RENDERED_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {
    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
    "text/html": {"schema": {"type": "string"}}}}}


def negotiate(accept: str | None) -> str:
    """``json``, ``pdf`` or ``html`` for an ``Accept`` header (see the module's rules)."""
    choices: list[tuple[float, int, int, str]] = []     # q, JSON first, listed first, format
    for position, item in enumerate((accept or "").split(",")):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        fmt = MEDIA.get(media.lower())
        if fmt is not None and q > 0:
            choices.append((q, fmt == "json", -position, fmt))
    return max(choices)[3] if choices else "json"


def rendered(request: Request, uow: UnitOfWork, kind: str, ref: str, fmt: str) -> Response:
    """The document as ``fmt`` (``pdf`` or ``html``), or the template's error as a 500."""
    from billing_core.documents.render import Renderer, TemplateError
    from billing_core.service.rendering import render_document

    settings: Settings = request.app.state.api.settings
    renderer = getattr(request.app.state, "document_renderer", None)
    if renderer is None:
        renderer = request.app.state.document_renderer = Renderer(
            settings.documents.render_options())
    try:
        done = render_document(uow, renderer, kind, ref, fmt, keep=False,
                               tax_inclusive=settings.billing.tax_inclusive)
    except TemplateError as exc:
        return JSONResponse(body(exc.code, exc.field, exc.value, str(exc)), status_code=500)
    name = done.doc["number"] or f"{kind}-draft-{done.doc['id']}"
    return Response(done.body, media_type=CONTENT[fmt], headers={
        "Content-Disposition": f'inline; filename="{name}.{fmt}"', "Vary": "Accept"})
