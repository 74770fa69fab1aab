"""The HTML subset of the templates, read into ReportLab flowables (see ``pdf.py`` for the
tags and classes it knows)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from xml.sax.saxutils import escape, unescape

from reportlab.lib.enums import TA_LEFT
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, Paragraph, Table, TableStyle
from reportlab.platypus.flowables import HRFlowable

from billing_core.documents.pdf_flowables import Sized, TableSpec, Text, build_table
from billing_core.documents.pdf_styles import RULE, Family, style

_BLOCKS = frozenset({"p", "div", "h1", "h2", "h3", "h4", "section", "header", "footer",
                     "address", "main", "article", "li", "ul", "ol", "td", "th"})
_SKIPPED = frozenset({"head", "style", "script"})
_INLINE = {"b": ("<b>", "</b>"), "strong": ("<b>", "</b>"), "i": ("<i>", "</i>"),
           "em": ("<i>", "</i>"), "u": ("<u>", "</u>"),
           "small": ('<font size="7">', "</font>")}
_SPACE = re.compile(r"\s+")


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
            self.flow.append(Text(unescape(text), self.style))



class Layout(HTMLParser):
    def __init__(self, width: float, family: Family) -> None:
        super().__init__(convert_charrefs=True)
        self.width = width
        self.family = family
        self.stack: list[_Box | TableSpec] = [
            _Box("body", frozenset(), style("body", frozenset(), TA_LEFT, family), [])]
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
            self.stack.append(TableSpec(_classes(attrs), _percent(attrs), self.family[0]))
        elif tag == "tr" and isinstance(self.stack[-1], TableSpec):
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
            box.flow.append(HRFlowable(width="100%", thickness=0.6, color=RULE,
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
            if isinstance(table, TableSpec):
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
        if isinstance(self.stack[-1], TableSpec):
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
        if isinstance(self.stack[-1], TableSpec):
            table = self.stack[-1]
            if not table.rows:
                table.rows.append([])
                table.row_classes.append(frozenset())
            classes = classes | table.row_classes[-1]
            inherited = TA_LEFT
        self.stack.append(_Box(tag, classes, style(tag, classes, inherited, self.family), attrs,
                               closers=list(parent.closers)))
        if parent.closers:
            self._top_box().buf.extend(_reopen(parent.closers))

    def _close_block(self, tag: str) -> None:
        if not any(isinstance(b, _Box) and b.tag == tag for b in self.stack[1:]):
            return                                      # a stray end tag
        while True:
            top = self.stack[-1]
            if isinstance(top, TableSpec):              # a table left open inside the block
                self.handle_endtag("table")
                continue
            if top.tag == tag:
                break
            self._close_block(top.tag)
        box = self._top_box()
        self.stack.pop()
        box.flush()
        parent = self.stack[-1]
        if isinstance(parent, TableSpec):
            self._add_cell(parent, box)
            return
        if "page-footer" in box.classes:
            self.footer.append(" ".join(p.getPlainText() for p in box.flow
                                        if isinstance(p, Paragraph | Text)))
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
    def _add_cell(self, table: TableSpec, cell: _Box) -> None:
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

    def _table(self, table: TableSpec) -> Flowable | None:
        if not any(table.rows):
            return None
        return Sized(lambda width: build_table(table, width),
                      "RIGHT" if "right" in table.classes else "LEFT", 4, 6)

    def _columns(self, box: _Box) -> Flowable:
        columns = [col or "" for col in box.columns]

        def build(width: float) -> Table:
            share = width / len(columns)
            return Table([columns], colWidths=[share] * len(columns),
                         style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                           ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                           ("RIGHTPADDING", (0, 0), (-1, -1), 8)]))
        return Sized(build, "LEFT", 0, 6)

    def result(self) -> list[Flowable]:
        while len(self.stack) > 1:
            top = self.stack[-1]
            self.handle_endtag("table" if isinstance(top, TableSpec) else top.tag)
        root = self._top_box()
        root.flush()
        return root.flow



def _reopen(closers: list[str]) -> list[str]:
    openers = {"</b>": "<b>", "</i>": "<i>", "</u>": "<u>", "</font>": '<font color="#5f6b7a">'}
    return [openers.get(c, "") for c in closers]


