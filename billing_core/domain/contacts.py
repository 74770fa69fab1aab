"""Billing contacts: the addresses an account's documents are emailed to.

Rules kept here
- An account's ``billing_email`` holds one or more addresses separated by ``;`` or ``,``;
  blanks around them are dropped, duplicates (case-insensitive) kept once, order kept.
- An address is ``local@domain``: no blanks, angle brackets, quotes or control characters, one
  ``@``, a domain with a dot and no empty label. (A syntax check only: whether the mailbox
  exists is the SMTP server's answer.) At most 10 addresses, 512 characters in all.
- A bad value raises ``ValidationError("billing_email", value, ...)`` naming the address.
"""
from __future__ import annotations

import re

from billing_core.domain.errors import ValidationError

MAX_ADDRESSES = 10
MAX_LENGTH = 512
_SPLIT = re.compile(r"[;,]")
_ADDRESS = re.compile(r"^[^\s@<>()\[\]\\\",;:]+@[^\s@<>()\[\]\\\",;:]+$")


def parse_emails(value: str | None, field: str = "billing_email") -> list[str]:
    """The addresses of ``value`` (empty for None or blank), or ``ValidationError``."""
    if value is None or not value.strip():
        return []
    if len(value) > MAX_LENGTH:
        raise ValidationError(field, value, f"is longer than {MAX_LENGTH} characters")
    found: list[str] = []
    seen: set[str] = set()
    for part in _SPLIT.split(value):
        address = part.strip()
        if not address:
            continue
        if not _ADDRESS.match(address) or not address.isprintable():
            raise ValidationError(field, value, f"{address!r} is not an email address")
        domain = address.rpartition("@")[2]
        if "." not in domain or any(not label for label in domain.split(".")):
            raise ValidationError(field, value, f"{address!r} has no valid domain")
        if address.lower() not in seen:
            seen.add(address.lower())
            found.append(address)
    if len(found) > MAX_ADDRESSES:
        raise ValidationError(field, value, f"has more than {MAX_ADDRESSES} addresses")
    return found


def normalize_emails(value: str | None, field: str = "billing_email") -> str | None:
    """The stored form: the addresses joined by ``", "``; None when there is none."""
    found = parse_emails(value, field)
    return ", ".join(found) if found else None
