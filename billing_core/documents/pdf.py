"""HTML to PDF for documents: the subset of HTML the templates use, laid out with ReportLab.

Rules kept here
- One template makes both formats: the browser reads the HTML with its ``<style>``; this
  module reads the same markup and lays it out itself. It knows: ``h1``-``h4``, ``p``,
  ``div`` (and ``section``, ``header``, ``address``...), ``table`` / ``tr`` / ``th`` / ``td``
  (``colspan``, ``width="NN%"`` on the first row's cells and on the table), ``hr``, ``br``,
  and inline ``b``/``strong``, ``i``/``em``, ``u``, ``small``, ``span``. Classes shape the PDF:
  ``num``/``right`` (right-aligned), ``center``, ``muted`` (grey), ``small``, ``strong``,
  ``note``; a table's ``lines`` (ruled rows, a shaded header) or ``right`` (placed on the
  right); a row's ``total`` (bold, a rule above); ``columns`` (its child ``div``s side by
  side); ``page-footer`` (its text at the foot of every page, with the page number).
  ``<style>``, ``<script>`` and ``<head>`` are not drawn; ``<title>`` is the PDF's title.
  Any other tag is ignored and its text kept.
- Fonts (:func:`font_family`): Helvetica, the PDF standard font (nothing embedded), or a
  TrueType family embedded as a subset (``vera``, shipped with ReportLab, or a file).
- The output is byte-for-byte the same for the same markup and metadata: ReportLab's
  invariant mode, the creation date given (the document's date, midnight UTC) and the file id
  given (derived from the document and its template), no clock and no randomness.
"""
from __future__ import annotations

import calendar
import io
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.units import mm
from reportlab.lib.utils import TimeStamp
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate

from billing_core.documents.pdf_layout import Layout
from billing_core.documents.pdf_styles import BASE, GREY, HELVETICA, Family

PAGE_SIZES = {"A4": A4, "letter": LETTER}


@dataclass(frozen=True)
class PdfMeta:
    """What a PDF says about itself: all of it fixed by the document, none by the clock."""
    title: str
    author: str
    subject: str
    keywords: str
    created: date
    file_id: bytes                      # 16 bytes: the same for the same document + template


def html_to_pdf(markup: str, meta: PdfMeta, page_size: str = "A4",
                family: Family = HELVETICA) -> bytes:
    """The PDF of ``markup`` (see the module's rules), byte-for-byte reproducible."""
    size = PAGE_SIZES[page_size]
    margin = 18 * mm
    layout = Layout(size[0] - 2 * margin, family)
    layout.feed(markup)
    layout.close()
    flow = layout.result()
    title = " ".join("".join(layout.title).split()) or meta.title
    footer = " ".join(" ".join(layout.footer).split())
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=size, leftMargin=margin, rightMargin=margin,
                            topMargin=margin, bottomMargin=margin + 6 * mm, title=title,
                            author=meta.author, subject=meta.subject, keywords=meta.keywords,
                            creator="ledgerbridge", invariant=1)

    def on_page(canvas: Canvas, _doc: Any) -> None:
        pdf = canvas._doc
        if pdf._ID is None:
            stamp = TimeStamp(True)
            epoch = calendar.timegm(meta.created.timetuple())
            stamp.t, stamp.lt = epoch, time.gmtime(epoch)
            stamp.YMDhms = tuple(stamp.lt)[:6]
            pdf._timeStamp = stamp
            hexid = meta.file_id.hex().upper().encode("ascii")
            pdf._ID = b"\n[<" + hexid + b"><" + hexid + b">]\n"
        canvas.saveState()
        canvas.setFont(family[0], 7.5)
        canvas.setFillColor(GREY)
        canvas.drawString(margin, margin - 2 * mm, footer)
        canvas.drawRightString(size[0] - margin, margin - 2 * mm, f"{canvas.getPageNumber()}")
        canvas.restoreState()

    doc.build(flow or [Paragraph("", BASE)], onFirstPage=on_page, onLaterPages=on_page)
    return out.getvalue()

