"""Tables for people: every value shown whole, nothing from the CRM able to drive the terminal,
money as amounts of its currency.

Rules kept here:
- No value is cut: on a terminal, cells wrap to its width (folding a long word); with
  ``ledgerbridge --wide``, and whenever the output is not a terminal (a pipe, a file), each row
  stays on one line as wide as it takes (for ``grep``, ``less -S`` and scripts that read
  tables; rich would otherwise wrap piped output at 80 columns).
- Text reaches the terminal through ``safe``: control characters (C0, DEL, C1: escape
  sequences, NUL, carriage returns, newlines, tabs) and the bidirectional overrides are
  written as visible escapes (``\\x1b``, ``\\n``, ``\\u202e``), and every cell is a rich
  ``Text``, so a CRM name like ``[bold]`` or ``[link=...]`` is shown, never interpreted.
- Progress (``progress_bar``, on stderr, only on a terminal): with a known total it shows the
  bar, done/total, the elapsed time and the time remaining; the sync, whose total is unknown
  until the CRM is read, shows a count instead.
- Money: a ``*_minor`` value in a row that has a ``currency`` is shown in major units with the
  currency (``1234.50 USD``) under the name without ``_minor``. ``--json`` keeps minor units
  and the currency (``emit`` does not call this module for JSON).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from billing_core.domain.money import from_minor

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
WIDE = 100_000


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def safe(text: str) -> str:
    """``text`` with every character that could drive a terminal written as an escape."""
    return _UNSAFE.sub(_escape, text)


def major_units(row: dict[str, Any]) -> dict[str, Any]:
    """``*_minor`` values of a row with a currency, as amounts of that currency."""
    currency = row.get("currency")
    if not isinstance(currency, str) or not any(k.endswith("_minor") for k in row):
        return row
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_minor") and isinstance(value, int) and not isinstance(value, bool):
            out[key.removesuffix("_minor")] = f"{from_minor(value, currency)} {currency}"
        else:
            out[key] = value
    return out


def column_name(col: str, rows: Sequence[dict[str, Any]]) -> str:
    """The name a column has after ``major_units`` (``total_minor`` -> ``total``)."""
    if col.endswith("_minor") and rows and col not in rows[0]:
        return col.removesuffix("_minor")
    return col


def cell(value: Any, formatter: Callable[[Any], str] | None = None) -> Text:
    if formatter is not None:
        text = formatter(value)
    elif value is None:
        text = ""
    elif isinstance(value, (date, datetime)):
        text = value.isoformat()
    else:
        text = str(value)
    return Text(safe(text))


def console(wide: bool) -> tuple[Console, bool]:
    """The console for a table and whether rows stay on one line (see the module's rules)."""
    probe = Console()
    if wide or not probe.is_terminal:
        return Console(soft_wrap=False, width=WIDE), True
    return probe, False


def _numeric(rows: Sequence[dict[str, Any]], col: str) -> bool:
    return any(isinstance(r.get(col), (int, Decimal)) and not isinstance(r.get(col), bool)
               for r in rows)


def key_value_table(row: dict[str, Any], *, title: str | None, wide: bool,
                    fmt: dict[str, Callable[[Any], str]]) -> Table:
    table = Table(title=safe(title) if title else None, show_header=False)
    table.add_column("field", style="bold", no_wrap=wide, overflow="fold")
    table.add_column("value", no_wrap=wide, overflow="fold")
    for key, value in major_units(row).items():
        table.add_row(cell(key), cell(value, fmt.get(key)))
    return table


def rows_table(rows: list[dict[str, Any]], columns: Sequence[str], *, title: str | None,
               wide: bool, fmt: dict[str, Callable[[Any], str]]) -> Table:
    rows = [major_units(r) for r in rows]
    names = [column_name(c, rows) for c in columns]
    table = Table(title=safe(title) if title else None)
    for name in names:
        table.add_column(safe(name), justify="right" if _numeric(rows, name) else "left",
                         no_wrap=wide, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(name), fmt.get(name)) for name in names))
    return table


def progress_bar() -> Progress:
    """A transient progress bar on stderr: description, bar, done/total, elapsed, remaining."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)
