"""The renderer: a document's data + its template -> HTML or PDF bytes (see the package's rules)."""
from __future__ import annotations

import hashlib
from typing import Any

from billing_core.documents.formatting import BY_COUNTRY, Formats, resolve_locale
from billing_core.documents.options import RenderOptions, Seller
from billing_core.documents.pdf import PAGE_SIZES, PdfMeta, html_to_pdf
from billing_core.documents.pdf_styles import drawable, font_family
from billing_core.documents.templating import TemplateError, Templates
from billing_core.domain.errors import ValidationError

__all__ = ["FORMATS", "KIND_TITLES", "RenderOptions", "Renderer", "Seller", "TemplateError"]

FORMATS = ("pdf", "html")
KIND_TITLES = {"invoice": "Invoice", "credit_memo": "Credit memo", "debit_memo": "Debit memo",
               "statement": "Statement"}


class Renderer:
    """Renders documents with one set of options; templates load once and are cached."""

    def __init__(self, options: RenderOptions | None = None) -> None:
        self.options = options or RenderOptions()
        if self.options.page_size not in PAGE_SIZES:
            raise ValidationError("documents.page_size", self.options.page_size,
                                  f"must be one of {', '.join(PAGE_SIZES)}")
        if self.options.locale != BY_COUNTRY:
            resolve_locale(self.options.locale, None)
        try:
            self.family = font_family(self.options.font, self.options.font_bold)
        except ValueError as exc:
            raise ValidationError("documents.font", self.options.font, str(exc)) from None
        self.drawable = drawable(self.family)
        self.templates = Templates(self.options.templates_dir)

    def template_name(self, kind: str) -> str:
        if kind not in KIND_TITLES:
            raise ValidationError("kind", kind, f"must be one of {', '.join(KIND_TITLES)}")
        return f"{kind}.html"

    def template_digest(self, kind: str) -> str:
        """SHA-256 of the template sources a kind renders with (changes when they change)."""
        return self.templates.digest(self.template_name(kind))

    def html(self, doc: dict[str, Any], *, for_pdf: bool = False) -> str:
        """The document's HTML; ``for_pdf``: the markup the PDF is laid out from (amounts whose
        currency sign the PDF's font lacks show the ISO code)."""
        locale = resolve_locale(self.options.locale, doc["buyer"].get("country"))
        formats = Formats(locale, doc["currency"], self.drawable if for_pdf else None)
        context = {"doc": doc, "seller": self.options.seller, "language": locale.language,
                   **formats.functions()}
        return self.templates.render(self.template_name(doc["kind"]), context)

    def pdf(self, doc: dict[str, Any]) -> bytes:
        markup = self.html(doc, for_pdf=True)
        kind = doc["kind"]
        digest = self.template_digest(kind)
        title = f"{KIND_TITLES[kind]} {doc.get('number') or '(draft)'}"
        file_id = hashlib.sha256("\0".join(
            (kind, str(doc.get("number") or f"draft:{doc['id']}"), digest, markup))
            .encode("utf-8")).digest()[:16]
        meta = PdfMeta(title=title, author=self.options.seller.name, subject=KIND_TITLES[kind],
                       keywords=f"ledgerbridge template {digest[:16]}",
                       created=doc["issue_date"], file_id=file_id)
        return html_to_pdf(markup, meta, self.options.page_size, self.family)

    def render(self, doc: dict[str, Any], fmt: str) -> bytes:
        """The document as ``pdf`` or ``html`` (UTF-8) bytes."""
        if fmt == "pdf":
            return self.pdf(doc)
        if fmt == "html":
            return self.html(doc).encode("utf-8")
        raise ValidationError("--format", fmt, f"must be one of {', '.join(FORMATS)}")
