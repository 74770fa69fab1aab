"""Salesforce record ids for the sandbox: 18 characters, prefix + index, real checksum suffix.

Rules this module keeps:
- An id encodes (key prefix, row index) and nothing else, so an id maps back to its row in O(1)
  and nothing needs storing for rows that were never changed.
- The 15-character body uses base 62 in ASCII order with a fixed width, so comparing ids as
  strings orders them by row index (the sandbox relies on this for `ORDER BY ..., Id`).
- The 3-character suffix is Salesforce's case-safe checksum; 15- and 18-character forms are both
  accepted on input, and everything is answered in the 18-character form.
"""

from __future__ import annotations

import functools

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE = {c: i for i, c in enumerate(_DIGITS)}
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_POD = "Dn0"  # instance/pod characters: constant in the sandbox
_WIDTH = 9  # base-62 digits of the row index: room for 62**9 rows


_UPPER_BITS = str.maketrans({c: ("1" if "A" <= c <= "Z" else "0") for c in _DIGITS})
_PAIRS = tuple(a + b for a in _DIGITS for b in _DIGITS)  # two base-62 digits per lookup


def _chunk_char(chunk: str) -> str:
    return _SUFFIX[int(chunk.translate(_UPPER_BITS)[::-1], 2)]


_cached_chunk_char = functools.lru_cache(maxsize=65536)(_chunk_char)


def _checksum(body: str) -> str:
    return (_cached_chunk_char(body[:5]) + _cached_chunk_char(body[5:10])
            + _chunk_char(body[10:15]))


def make_id(prefix: str, index: int) -> str:
    """The 18-character id of row `index` of the object whose key prefix is `prefix`."""
    n, low = divmod(index, 62)
    parts = [_DIGITS[low]]
    for _ in range((_WIDTH - 1) // 2):
        n, r = divmod(n, 3844)
        parts.append(_PAIRS[r])
    body = prefix + _POD + "".join(reversed(parts))
    return body + _checksum(body)


def to18(value: str) -> str | None:
    """Normalise a 15- or 18-character id to 18 characters; None if it is not a valid id."""
    if len(value) == 15 and all(c in _VALUE for c in value):
        return value + _checksum(value)
    if len(value) == 18 and all(c in _VALUE for c in value[:15]):
        body = value[:15]
        return body + _checksum(body) if value[15:].upper() == _checksum(body) else None
    return None


#: The org's users: the integration user every API session acts as, and the user every other
#: change (seeded rows, admin edits: a person in the CRM) is stamped with (``LastModifiedById``).
INTEGRATION_USER = make_id("005", 1)
ADMIN_USER = make_id("005", 2)


def parse_id(value: str) -> tuple[str, int] | None:
    """(prefix, index) of a sandbox id, or None when `value` is not one."""
    full = to18(value)
    if full is None or full[3:6] != _POD:
        return None
    index = 0
    for char in full[6:15]:
        index = index * 62 + _VALUE[char]
    return full[:3], index
