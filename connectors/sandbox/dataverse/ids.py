"""Deterministic, reversible GUIDs and pseudo-random draws for lazily generated rows.

Rules kept:
- A row's GUID is a pure function of (seed, table, index) and maps back to the index without any
  stored state, so a million-row table costs no memory until a row is changed.
- The GUIDs look like Dataverse's sequential ones: the first 48 bits vary, the tail is constant
  per table (as the server-derived tail of real `newsequentialid()` values is).
- Draws use splitmix64: fast, pure integer arithmetic, identical on every platform.
"""

from __future__ import annotations

import hashlib

_MASK48 = (1 << 48) - 1
_MASK64 = (1 << 64) - 1
_MULT = 0x9E3779B97F4B  # odd, so invertible modulo 2**48
_INV = pow(_MULT, -1, 1 << 48)


def mix(*parts: int) -> int:
    """splitmix64 over the parts: a well-spread 64-bit number."""
    z = 0x9E3779B97F4A7C15
    for part in parts:
        z = (z + part * 0xBF58476D1CE4E5B9 + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z


def draw(salt_value: int, index: int) -> int:
    """One 64-bit draw for (salt, index): a single splitmix64 round, the hot path of seeding."""
    z = ((salt_value ^ index) * 0x9E3779B97F4A7C15 + 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def salt(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class GuidCodec:
    """Index <-> GUID for one table under one seed."""

    def __init__(self, seed: int, table: str) -> None:
        s = salt(seed, table)
        self._offset = s & _MASK48
        tail = salt(seed, table + "/tail")
        self._tail = (f"-{0xe000 | (s >> 52) & 0x0fff:04x}-{0x8000 | tail & 0x3fff:04x}"
                      f"-{tail >> 16 & _MASK48:012x}")

    def guid(self, index: int) -> str:
        e = (index * _MULT + self._offset) & _MASK48
        return f"{e & 0xFFFFFFFF:08x}-{e >> 32:04x}{self._tail}"

    def index(self, guid: str) -> int | None:
        """The index a GUID encodes, or None when it is not one of this table's GUIDs."""
        text = guid.lower()
        if len(text) != 36 or text[13:] != self._tail:
            return None
        try:
            e = int(text[:8], 16) | int(text[9:13], 16) << 32
        except ValueError:
            return None
        return ((e - self._offset) * _INV) & _MASK48


def guid_of(number: int) -> str:
    """A version-4-shaped GUID drawn from a number (tenant, client, user and org ids)."""
    text = f"{number:016x}{salt(number, 'g'):016x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-a{text[17:20]}-{text[20:32]}"


#: The one person of the sandbox org: the user of the seed rows and of admin actions (a change
#: made by hand in the CRM), never an application user.
PERSON = "person"


def user_id(seed: int, who: str) -> str:
    """The `systemuserid` of a user of the org: the application user of an app registration
    (`who` = its client id: what WhoAmI answers a token of that client, and the
    `_modifiedby_value` of every row it writes) or the person (`PERSON`)."""
    return guid_of(salt(seed, "user:" + who))
