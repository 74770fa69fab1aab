"""Text a database can store.

PostgreSQL refuses a NUL character in text (and in JSON), and no database takes a lone UTF-16
surrogate (``"\\ud800"``: JSON's ``\\ud800`` escape decodes to one; it cannot be encoded as
UTF-8). Input that reaches the ledger from a file, the API or the CLI is checked with
:func:`unstorable` before it is sent, so such a value is refused naming its field instead of
failing the whole statement; :func:`printable` gives a value that can be shown and stored in
an error report.
"""
from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: object) -> bool:
    """Whether ``value`` is text holding a NUL or a lone surrogate."""
    return isinstance(value, str) and _UNSTORABLE.search(value) is not None


def printable(value: str) -> str:
    """``value`` with each unstorable character replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", value)
