"""The PDF's look: colours, paragraph styles by tag and class, and fonts (see ``pdf.py``).

Rules kept here
- One style per (tag, classes, alignment, font family), built once and shared by every render.
- Fonts: Helvetica, the PDF standard font (nothing embedded), or a TrueType family embedded as
  a subset (``vera``, the Bitstream Vera ReportLab ships, or a file), registered once per
  process under a name derived from its path.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

GREY = colors.HexColor("#5f6b7a")
RULE = colors.HexColor("#d5dae1")
SHADE = colors.HexColor("#f1f3f6")

BASE = ParagraphStyle("base", fontName="Helvetica", fontSize=9, leading=12, spaceAfter=0)
_TAGS: dict[str, dict[str, Any]] = {
    "h1": {"fontName": "Helvetica-Bold", "fontSize": 18, "leading": 22, "spaceAfter": 4},
    "h2": {"fontName": "Helvetica-Bold", "fontSize": 11, "leading": 14, "spaceBefore": 8,
           "spaceAfter": 3},
    "h3": {"fontName": "Helvetica-Bold", "fontSize": 9.5, "leading": 12, "spaceBefore": 4,
           "spaceAfter": 2},
    "h4": {"fontName": "Helvetica-Bold", "fontSize": 9, "leading": 12},
    "p": {"spaceAfter": 4},
    "th": {"fontName": "Helvetica-Bold", "fontSize": 8, "leading": 10, "textColor": GREY},
    "td": {"leading": 11},
}
_CLASSES: dict[str, dict[str, Any]] = {
    "num": {"alignment": TA_RIGHT}, "right": {"alignment": TA_RIGHT},
    "center": {"alignment": TA_CENTER}, "muted": {"textColor": GREY},
    "small": {"fontSize": 7.5, "leading": 9.5}, "strong": {"fontName": "Helvetica-Bold"},
    "total": {"fontName": "Helvetica-Bold"},
    "note": {"fontSize": 8, "leading": 10.5, "textColor": GREY},
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


def style(tag: str, classes: frozenset[str], align: int, family: Family) -> ParagraphStyle:
    key = (tag, classes, align, family)
    style = _STYLES.get(key)
    if style is None:
        options: dict[str, Any] = {"alignment": align}
        options.update(_TAGS.get(tag, {}))
        for name in sorted(classes):
            options.update(_CLASSES.get(name, {}))
        options["fontName"] = family[1] if options.get("fontName") == HELVETICA[1] else family[0]
        style = _STYLES[key] = ParagraphStyle(
            f"{tag}.{'.'.join(sorted(classes))}.{align}.{family[0]}", parent=BASE, **options)
    return style

