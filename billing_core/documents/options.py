"""What rendering is configured with (``[documents]`` builds it): plain values, no heavy imports."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Seller:
    name: str = ""
    address: tuple[str, ...] = ()
    tax_id: str = ""
    email: str = ""


@dataclass(frozen=True)
class RenderOptions:
    seller: Seller = field(default_factory=Seller)
    locale: str = "en"                    # a Babel locale, or "country" (the account's)
    templates_dir: str | None = None      # the company's templates, before the built-in ones
    page_size: str = "A4"                 # A4 | letter
    font: str = "helvetica"               # PDF font: helvetica | vera | a .ttf file
    font_bold: str | None = None          # with a .ttf font: its bold (default: the same)
