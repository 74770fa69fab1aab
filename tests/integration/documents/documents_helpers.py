"""Helpers of the document tests: fixed dates, the seller, custom template folders, PDF text."""
from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

from pypdf import PdfReader

from billing_core.documents.render import Seller

BILL_DATE = date(2026, 3, 10)
SELLER = Seller("Northwind Billing Ltd", ("1 Main Street", "Dublin"), "IE1234567T")


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def custom_templates(folder: Path, **files: str) -> str:
    """A templates folder holding ``name.html`` = text for each keyword."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.html").write_text(text, encoding="utf-8")
    return str(folder)


def text_of(pdf: bytes) -> str:
    """The PDF's text, whitespace collapsed (a wrapped line reads as one)."""
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def squeeze(text: str) -> str:
    return " ".join(text.split())
