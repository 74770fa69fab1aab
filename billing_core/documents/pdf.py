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
import hashlib
import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from html.parser import HTMLParser
from typing import Any
from xml.sax.saxutils import escape, unescape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import TimeStamp
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Table, TableStyle
from reportlab.platypus.flowables import HRFlowable

PAGE_SIZES = {"A4": A4, "letter": LETTER}
_BLOCKS = frozenset({"p", "div", "h1", "h2", "h3", "h4", "section", "header", "footer",
                     "address", "main", "article", "li", "ul", "ol", "td", "th"})
_IGNORED = frozenset({"html", "body", "thead", "tbody", "tfoot", "colgroup", "col", "meta",
                      "link", "span"})
_SKIPPED = frozenset({"head", "style", "script"})
_INLINE = {"b": ("<b>", "</b>"), "strong": ("<b>", "</b>"), "i": ("<i>", "</i>"),
           "em": ("<i>", "</i>"), "u": ("<u>", "</u>"),
           "small": ('<font size="7">', "</font>")}
_SPACE = re.compile(r"\s+")
_GREY = colors.HexColor("#5f6b7a")
_RULE = colors.HexColor("#d5dae1")
_SHADE = colors.HexColor("#f1f3f6")

_BASE = ParagraphStyle("base", fontName="Helvetica", fontSize=9, leading=12, spaceAfter=0)
_TAGS: dict[str, dict[str, Any]] = {
    "h1": {"fontName": "Helvetica-Bold", "fontSize": 18, "leading": 22, "spaceAfter": 4},
    "h2": {"fontName": "Helvetica-Bold", "fontSize": 11, "leading": 14, "spaceBefore": 8,
           "spaceAfter": 3},
    "h3": {"fontName": "Helvetica-Bold", "fontSize": 9.5, "leading": 12, "spaceBefore": 4,
           "spaceAfter": 2},
    "h4": {"fontName": "Helvetica-Bold", "fontSize": 9, "leading": 12},
    "p": {"spaceAfter": 4},
    "th": {"fontName": "Helvetica-Bold", "fontSize": 8, "leading": 10, "textColor": _GREY},
    "td": {"leading": 11},
}
_CLASSES: dict[str, dict[str, Any]] = {
    "num": {"alignment": TA_RIGHT}, "right": {"alignment": TA_RIGHT},
    "center": {"alignment": TA_CENTER}, "muted": {"textColor": _GREY},
    "small": {"fontSize": 7.5, "leading": 9.5}, "strong": {"fontName": "Helvetica-Bold"},
    "total": {"fontName": "Helvetica-Bold"},
    "note": {"fontSize": 8, "leading": 10.5, "textColor": _GREY},
}
#: (regular, bold) font names: the standard Helvetica (no font embedded), or TrueType fonts
#: registered by :func:`font_family`.
Family = tuple[str, str]
HELVETICA: Family = ("Helvetica", "Helvetica-Bold")
_STYLES: dict[tuple[str, frozenset[str], int, Family], ParagraphStyle] = {}
_REGISTERED: dict[tuple[str, str], Family] = {}


def font_family(regular: str | None, bold: str | None = None) -> Family:
    """The fonts a PDF is set in: Helvetica (``None``, ``helvetica``), the Bitstream Vera
    that ReportLab ships (``vera``: Latin Extended too, e.g. ł, č), or a TrueType file (and its
    bold; the regular one when none), embedded as a subset. An unusable file raises
    ``ValueError``."""
    if regular in (None, "", "helvetica"):
        return HELVETICA
    if regular == "vera":
        regular, bold = "Vera.ttf", "VeraBd.ttf"
    key = (str(regular), str(bold or regular))
    if key not in _REGISTERED:
        names = []
        for path in key:
            name = "LB" + hashlib.sha256(path.encode("utf-8")).hexdigest()[:12]
            if name not in pdfmetrics.getRegisteredFontNames():
                try:
                    pdfmetrics.registerFont(TTFont(name, path))
                except Exception as exc:  # noqa: BLE001 - ReportLab raises several kinds
                    raise ValueError(f"{path}: not a usable TrueType font ({exc})") from None
            names.append(name)
        _REGISTERED[key] = (names[0], names[1])
    return _REGISTERED[key]


def drawable(family: Family) -> Callable[[str], bool]:
    """Whether the family's regular font has a glyph for every character of a text."""
    if family == HELVETICA:
        def in_winansi(text: str) -> bool:
            try:
                text.encode("cp1252")
            except UnicodeEncodeError:
                return False
            return True
        return in_winansi
    glyphs = pdfmetrics.getFont(family[0]).face.charToGlyph
    return lambda text: all(ord(ch) in glyphs for ch in text)


def _style(tag: str, classes: frozenset[str], align: int, family: Family) -> ParagraphStyle:
    key = (tag, classes, align, family)
    style = _STYLES.get(key)
    if style is None:
        options: dict[str, Any] = {"alignment": align}
        options.update(_TAGS.get(tag, {}))
        for name in sorted(classes):
            options.update(_CLASSES.get(name, {}))
        options["fontName"] = family[1] if options.get("fontName") == HELVETICA[1] else family[0]
        style = _STYLES[key] = ParagraphStyle(
            f"{tag}.{'.'.join(sorted(classes))}.{align}.{family[0]}", parent=_BASE, **options)
    return style


def _classes(attrs: list[tuple[str, str | None]]) -> frozenset[str]:
    return frozenset(" ".join(v or "" for k, v in attrs if k == "class").split())


def _percent(attrs: list[tuple[str, str | None]]) -> float | None:
    for key, value in attrs:
        if key == "width" and value and value.strip().endswith("%"):
            try:
                return max(0.0, min(100.0, float(value.strip()[:-1]))) / 100
            except ValueError:
                return None
    return None


@dataclass
class _Box:
    tag: str
    classes: frozenset[str]
    style: ParagraphStyle
    attrs: list[tuple[str, str | None]]
    flow: list[Flowable] = field(default_factory=list)
    buf: list[str] = field(default_factory=list)
    closers: list[str] = field(default_factory=list)
    columns: list[list[Flowable]] = field(default_factory=list)

    def flush(self) -> None:
        text = "".join(self.buf).strip()
        self.buf.clear()
        if not text:
            return
        if "<" in text or self.closers:
            self.flow.append(Paragraph(text + "".join(reversed(self.closers)), self.style))
        else:
            self.flow.append(_Text(unescape(text), self.style))


class _Text(Flowable):  # type: ignore[misc]
    """Plain text without markup, wrapped greedily at spaces and drawn line by line: the look
    of a Paragraph of one style at a fraction of its cost (most of a document is such text).
    A word longer than the width stays whole, as in a Paragraph."""

    def __init__(self, text: str, style: ParagraphStyle) -> None:
        super().__init__()
        self.text = text
        self.style = style
        self.spaceBefore = style.spaceBefore
        self.spaceAfter = style.spaceAfter
        self.lines: list[str] = [text]

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        font, size = self.style.fontName, self.style.fontSize
        if stringWidth(self.text, font, size) <= availWidth:
            self.lines = [self.text]
        else:
            space = stringWidth(" ", font, size)
            lines: list[str] = []
            current: list[str] = []
            used = 0.0
            for word in self.text.split(" "):
                width = stringWidth(word, font, size)
                if current and used + space + width > availWidth:
                    lines.append(" ".join(current))
                    current, used = [], 0.0
                used += (space if current else 0.0) + width
                current.append(word)
            lines.append(" ".join(current))
            self.lines = lines
        self.width, self.height = availWidth, self.style.leading * len(self.lines)
        return self.width, self.height

    def getPlainText(self) -> str:
        return self.text

    def draw(self) -> None:
        canvas, style = self.canv, self.style
        canvas.setFont(style.fontName, style.fontSize)
        canvas.setFillColor(style.textColor)
        y = self.height - style.fontSize
        for line in self.lines:
            if style.alignment == TA_RIGHT:
                canvas.drawRightString(self.width, y, line)
            elif style.alignment == TA_CENTER:
                canvas.drawCentredString(self.width / 2, y, line)
            else:
                canvas.drawString(0, y, line)
            y -= style.leading


@dataclass
class _TableBox:
    classes: frozenset[str]
    width: float | None
    font: str
    rows: list[list[Any]] = field(default_factory=list)
    row_classes: list[frozenset[str]] = field(default_factory=list)
    header_rows: int = 0
    widths: list[float | None] = field(default_factory=list)
    spans: list[tuple[int, int, int]] = field(default_factory=list)   # row, first col, last col


class _Layout(HTMLParser):
    def __init__(self, width: float, family: Family) -> None:
        super().__init__(convert_charrefs=True)
        self.width = width
        self.family = family
        self.stack: list[_Box | _TableBox] = [
            _Box("body", frozenset(), _style("body", frozenset(), TA_LEFT, family), [])]
        self.skipping = 0
        self.in_title = False
        self.title: list[str] = []
        self.footer: list[str] = []

    # -- the parser's hooks -----------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skipping or tag in _SKIPPED:
            self.skipping += tag in _SKIPPED
            return
        if tag == "title":
            self.in_title = True
        elif tag == "table":
            self._top_box().flush()
            self.stack.append(_TableBox(_classes(attrs), _percent(attrs), self.family[0]))
        elif tag == "tr" and isinstance(self.stack[-1], _TableBox):
            table = self.stack[-1]
            table.rows.append([])
            table.row_classes.append(_classes(attrs))
        elif tag in _BLOCKS:
            self._open_block(tag, attrs)
        elif tag == "br":
            self._top_box().buf.append("<br/>")
        elif tag == "hr":
            box = self._top_box()
            box.flush()
            box.flow.append(HRFlowable(width="100%", thickness=0.6, color=_RULE,
                                       spaceBefore=4, spaceAfter=4))
        elif tag in _INLINE or tag == "span":
            self._open_inline(tag, _classes(attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            self.skipping -= tag in _SKIPPED
            return
        if tag == "title":
            self.in_title = False
        elif tag == "table":
            table = self.stack[-1]
            if isinstance(table, _TableBox):
                self.stack.pop()
                built = self._table(table)
                if built is not None:
                    self._top_box().flow.append(built)
        elif tag in _BLOCKS:
            self._close_block(tag)
        elif tag in _INLINE or tag == "span":
            box = self._top_box()
            if box.closers:
                box.buf.append(box.closers.pop())

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.in_title:
            self.title.append(data)
            return
        if isinstance(self.stack[-1], _TableBox):
            return                      # whitespace between rows and cells
        self._top_box().buf.append(escape(_SPACE.sub(" ", data)))

    # -- boxes --------------------------------------------------------------------------------
    def _top_box(self) -> _Box:
        for item in reversed(self.stack):
            if isinstance(item, _Box):
                return item
        raise RuntimeError("the layout lost its root")     # the root box is never popped

    def _open_block(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self._top_box()
        parent.flush()
        classes = _classes(attrs)
        inherited = parent.style.alignment
        if isinstance(self.stack[-1], _TableBox):
            table = self.stack[-1]
            if not table.rows:
                table.rows.append([])
                table.row_classes.append(frozenset())
            classes = classes | table.row_classes[-1]
            inherited = TA_LEFT
        self.stack.append(_Box(tag, classes, _style(tag, classes, inherited, self.family), attrs,
                               closers=list(parent.closers)))
        if parent.closers:
            self._top_box().buf.extend(_reopen(parent.closers))

    def _close_block(self, tag: str) -> None:
        if not any(isinstance(b, _Box) and b.tag == tag for b in self.stack[1:]):
            return                                      # a stray end tag
        while True:
            top = self.stack[-1]
            if isinstance(top, _TableBox):              # a table left open inside the block
                self.handle_endtag("table")
                continue
            if top.tag == tag:
                break
            self._close_block(top.tag)
        box = self._top_box()
        self.stack.pop()
        box.flush()
        parent = self.stack[-1]
        if isinstance(parent, _TableBox):
            self._add_cell(parent, box)
            return
        if "page-footer" in box.classes:
            self.footer.append(" ".join(p.getPlainText() for p in box.flow
                                        if isinstance(p, Paragraph | _Text)))
            return
        if "columns" in box.classes:
            box.flow = [self._columns(box)] if box.columns else box.flow
        if "columns" in parent.classes and box.tag == "div":
            parent.columns.append(box.flow)
        else:
            parent.flow.extend(box.flow)

    def _open_inline(self, tag: str, classes: frozenset[str]) -> None:
        box = self._top_box()
        opener, closer = _INLINE.get(tag, ("", ""))
        if "muted" in classes:
            opener, closer = opener + '<font color="#5f6b7a">', "</font>" + closer
        if "strong" in classes:
            opener, closer = opener + "<b>", "</b>" + closer
        box.buf.append(opener)
        box.closers.append(closer)

    # -- tables ---------------------------------------------------------------------------------
    def _add_cell(self, table: _TableBox, cell: _Box) -> None:
        row = table.rows[-1]
        if len(table.rows) == 1 or not table.widths:
            table.widths.append(_percent(cell.attrs))
        span = 1
        for key, value in cell.attrs:
            if key == "colspan" and value and value.isdigit():
                span = max(1, int(value))
        if cell.tag == "th" and len(table.rows) == table.header_rows + 1 and len(row) == 0:
            table.header_rows += 1
        row.append(cell.flow or "")
        if span > 1:
            table.spans.append((len(table.rows) - 1, len(row) - 1, len(row) + span - 2))
            row.extend([""] * (span - 1))

    def _table(self, table: _TableBox) -> Flowable | None:
        if not any(table.rows):
            return None
        return _Sized(lambda width: _build_table(table, width),
                      "RIGHT" if "right" in table.classes else "LEFT", 4, 6)

    def _columns(self, box: _Box) -> Flowable:
        columns = [col or "" for col in box.columns]

        def build(width: float) -> Table:
            share = width / len(columns)
            return Table([columns], colWidths=[share] * len(columns),
                         style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                           ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                           ("RIGHTPADDING", (0, 0), (-1, -1), 8)]))
        return _Sized(build, "LEFT", 0, 6)

    def result(self) -> list[Flowable]:
        while len(self.stack) > 1:
            top = self.stack[-1]
            self.handle_endtag("table" if isinstance(top, _TableBox) else top.tag)
        root = self._top_box()
        root.flush()
        return root.flow


_CELL_SIZE = (9, 11)


def _build_table(table: _TableBox, width: float) -> Table:
    """The ReportLab table of ``table`` in ``width`` points (percent widths are of it)."""
    ncols = max(len(r) for r in table.rows)
    data = [list(r) + [""] * (ncols - len(r)) for r in table.rows]
    total = width * (table.width or 1.0)
    given = (table.widths + [None] * ncols)[:ncols]
    fixed = sum(w for w in given if w)
    free = [i for i, w in enumerate(given) if not w]
    rest = max(0.0, 1.0 - fixed) / len(free) if free else 0.0
    widths = [total * (w if w else rest) for w in given]
    plain = "plain" in table.classes
    commands: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("FONT", (0, 0), (-1, -1), table.font, *_CELL_SIZE),
        ("LEFTPADDING", (0, 0), (-1, -1), 0 if plain else 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 1 if plain else 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1 if plain else 2)]
    if "lines" in table.classes:
        if table.header_rows:
            last = table.header_rows - 1
            commands += [("BACKGROUND", (0, 0), (-1, last), _SHADE),
                         ("LINEBELOW", (0, last), (-1, last), 0.8, _GREY)]
        commands.append(("LINEBELOW", (0, table.header_rows), (-1, -1), 0.3, _RULE))
    for index, classes in enumerate(table.row_classes):
        if "total" in classes:
            commands.append(("LINEABOVE", (0, index), (-1, index), 0.8, colors.black))
    spans = {(row, first): last for row, first, last in table.spans}
    for row, first, last in table.spans:
        commands.append(("SPAN", (first, row), (last, row)))
    padding = 3 if plain else 6
    for r, cells in enumerate(data):
        for c, cell in enumerate(cells):
            text = _one_line(cell, sum(widths[c:spans.get((r, c), c) + 1]) - padding)
            if text is not None:
                cells[c] = text.text
                commands.extend(_cell_style(text.style, (c, r), table.font))
    return Table(data, colWidths=widths, style=TableStyle(commands),
                 repeatRows=table.header_rows)


class _Sized(Flowable):  # type: ignore[misc]
    """A table laid out for the width it is given (a table inside a column gets the column's
    width, not the page's): built when wrapped, built again only for another width."""

    def __init__(self, build: Callable[[float], Table], align: str, before: float,
                 after: float) -> None:
        super().__init__()
        self.build = build
        self.hAlign = align
        self.spaceBefore = before
        self.spaceAfter = after
        self._built: tuple[float, Table] | None = None

    def _table(self, width: float) -> Table:
        if self._built is None or self._built[0] != width:
            self._built = (width, self.build(width))
        return self._built[1]

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        table = self._table(availWidth)
        self.width, self.height = table.wrap(availWidth, availHeight)
        return self.width, self.height

    def split(self, availWidth: float, availHeight: float) -> list[Flowable]:
        return list(self._table(availWidth).split(availWidth, availHeight))

    def draw(self) -> None:
        if self._built is not None:
            self._built[1].drawOn(self.canv, 0, 0)


def _one_line(cell: Any, room: float) -> _Text | None:
    """The cell's plain text when it is one line that fits: the table draws it as a string
    (the cheapest way ReportLab has), else None (the cell keeps its flowables)."""
    if not (isinstance(cell, list) and len(cell) == 1 and isinstance(cell[0], _Text)):
        return None
    text = cell[0]
    style = text.style
    if style.spaceBefore or style.spaceAfter or "<" in text.text:
        return None
    if stringWidth(text.text, style.fontName, style.fontSize) > room:
        return None
    return text


def _cell_style(style: ParagraphStyle, cell: tuple[int, int],
                font: str) -> list[tuple[Any, ...]]:
    """The table commands drawing a string cell as its paragraph style would."""
    out: list[tuple[Any, ...]] = []
    if (style.fontName, style.fontSize, style.leading) != (font, *_CELL_SIZE):
        out.append(("FONT", cell, cell, style.fontName, style.fontSize, style.leading))
    if style.textColor != colors.black:
        out.append(("TEXTCOLOR", cell, cell, style.textColor))
    if style.alignment in (TA_RIGHT, TA_CENTER):
        out.append(("ALIGN", cell, cell, "RIGHT" if style.alignment == TA_RIGHT else "CENTER"))
    return out


def _reopen(closers: list[str]) -> list[str]:
    openers = {"</b>": "<b>", "</i>": "<i>", "</u>": "<u>", "</font>": '<font color="#5f6b7a">'}
    return [openers.get(c, "") for c in closers]


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
    layout = _Layout(size[0] - 2 * margin, family)
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
        canvas.setFillColor(_GREY)
        canvas.drawString(margin, margin - 2 * mm, footer)
        canvas.drawRightString(size[0] - margin, margin - 2 * mm, f"{canvas.getPageNumber()}")
        canvas.restoreState()

    doc.build(flow or [Paragraph("", _BASE)], onFirstPage=on_page, onLaterPages=on_page)
    return out.getvalue()
