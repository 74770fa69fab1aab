"""The flowables the PDF layout draws with: wrapped plain text, tables sized when wrapped, and
table cells drawn as strings when they are one line (see ``pdf.py``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import Flowable, Table, TableStyle

from billing_core.documents.pdf_styles import GREY, RULE, SHADE


class Text(Flowable):  # type: ignore[misc]
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
class TableSpec:
    classes: frozenset[str]
    width: float | None
    font: str
    rows: list[list[Any]] = field(default_factory=list)
    row_classes: list[frozenset[str]] = field(default_factory=list)
    header_rows: int = 0
    widths: list[float | None] = field(default_factory=list)
    spans: list[tuple[int, int, int]] = field(default_factory=list)   # row, first col, last col



CELL_SIZE = (9, 11)


def build_table(table: TableSpec, width: float) -> Table:
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
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("FONT", (0, 0), (-1, -1), table.font, *CELL_SIZE),
        ("LEFTPADDING", (0, 0), (-1, -1), 0 if plain else 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 1 if plain else 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1 if plain else 2)]
    if "lines" in table.classes:
        if table.header_rows:
            last = table.header_rows - 1
            commands += [("BACKGROUND", (0, 0), (-1, last), SHADE),
                         ("LINEBELOW", (0, last), (-1, last), 0.8, GREY)]
        commands.append(("LINEBELOW", (0, table.header_rows), (-1, -1), 0.3, RULE))
    for index, classes in enumerate(table.row_classes):
        if "total" in classes:
            commands.append(("LINEABOVE", (0, index), (-1, index), 0.8, colors.black))
    spans = {(row, first): last for row, first, last in table.spans}
    for row, first, last in table.spans:
        commands.append(("SPAN", (first, row), (last, row)))
    padding = 3 if plain else 6
    for r, cells in enumerate(data):
        for c, cell in enumerate(cells):
            text = one_line(cell, sum(widths[c:spans.get((r, c), c) + 1]) - padding)
            if text is not None:
                cells[c] = text.text
                commands.extend(cell_style(text.style, (c, r), table.font))
    return Table(data, colWidths=widths, style=TableStyle(commands),
                 repeatRows=table.header_rows)


class Sized(Flowable):  # type: ignore[misc]
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


def one_line(cell: Any, room: float) -> Text | None:
    """The cell's plain text when it is one line that fits: the table draws it as a string
    (the cheapest way ReportLab has), else None (the cell keeps its flowables)."""
    if not (isinstance(cell, list) and len(cell) == 1 and isinstance(cell[0], Text)):
        return None
    text = cell[0]
    style = text.style
    if style.spaceBefore or style.spaceAfter or "<" in text.text:
        return None
    if stringWidth(text.text, style.fontName, style.fontSize) > room:
        return None
    return text


def cell_style(style: ParagraphStyle, cell: tuple[int, int],
                font: str) -> list[tuple[Any, ...]]:
    """The table commands drawing a string cell as its paragraph style would."""
    out: list[tuple[Any, ...]] = []
    if (style.fontName, style.fontSize, style.leading) != (font, *CELL_SIZE):
        out.append(("FONT", cell, cell, style.fontName, style.fontSize, style.leading))
    if style.textColor != colors.black:
        out.append(("TEXTCOLOR", cell, cell, style.textColor))
    if style.alignment in (TA_RIGHT, TA_CENTER):
        out.append(("ALIGN", cell, cell, "RIGHT" if style.alignment == TA_RIGHT else "CENTER"))
    return out


