"""Terminal output rules (issue 15, item 8) on plain values: escaping, money, whole values."""
from __future__ import annotations

from io import StringIO

from rich.console import Console

from jobs.cli.render import major_units, rows_table, safe


def test_control_characters_and_bidi_overrides_become_visible_escapes() -> None:
    crm = "Acme\x1b[2J\x00 Ltd\r\nline\t2\x9b\u202eevil\x7f"
    out = safe(crm)
    assert out == "Acme\\x1b[2J\\x00 Ltd\\r\\nline\\t2\\x9b\\u202eevil\\x7f"
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in out)
    assert safe("Zürich — 東京") == "Zürich — 東京"          # printable text is left alone


def test_minor_units_are_shown_as_amounts_of_the_rows_currency() -> None:
    row = {"number": "INV-1", "currency": "JPY", "total_minor": 3000, "applied_minor": 0}
    assert major_units(row) == {"number": "INV-1", "currency": "JPY", "total": "3000 JPY",
                                "applied": "0 JPY"}
    assert major_units({"currency": "USD", "total_minor": 123456})["total"] == "1234.56 USD"
    assert major_units({"total_minor": 5}) == {"total_minor": 5}   # no currency: as it is


def _render(table: object, width: int) -> str:
    out = StringIO()
    Console(file=out, width=width, soft_wrap=False).print(table)
    return out.getvalue()


def test_cells_wrap_instead_of_being_cut_and_markup_is_shown_not_applied() -> None:
    name = "[bold]Very long customer name " + "x" * 90 + " END"
    rows = [{"id": 1, "name": name, "currency": "EUR", "balance_minor": 1999}]
    text = _render(rows_table(rows, ["id", "name", "balance_minor"], title="Accounts",
                              wide=False, fmt={}), 60)
    assert "…" not in text and "END" in text and "[bold]" in text
    assert max(len(line) for line in text.splitlines()) <= 60
    assert "19.99 EUR" in text and "balance " in text
    wide = _render(rows_table(rows, ["id", "name"], title=None, wide=True, fmt={}), 100_000)
    assert any(name in line for line in wide.splitlines())       # one line, whole
