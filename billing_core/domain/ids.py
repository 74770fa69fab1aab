"""Ledger ids as people and files give them.

Every table's id is a positive 64-bit integer (SQLite INTEGER, PostgreSQL BIGINT). Text that
names a bigger number, zero, or digits that are not ASCII (``'²'``) names no row: looking it
up must be "not found", never a driver error (SQLite: ``OverflowError``; psycopg:
``NumericValueOutOfRange``) or a traceback.
"""
from __future__ import annotations

#: The largest id a table can hold.
MAX_ID = 2**63 - 1


def as_id(value: object) -> int | None:
    """The id ``value`` names (an int, or its ASCII decimal text), or None when it cannot be
    one: not an integer, below 1, or above :data:`MAX_ID`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip() if value is not None else ""
        if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(MAX_ID)):
            return None
        number = int(text)
    return number if 1 <= number <= MAX_ID else None
