"""Account classes and their dunning schedules (pure: no I/O).

Rules kept here
- An account class is a lower-case name: a letter or digit, then letters, digits, ``_`` or
  ``-``, at most 64 characters (``enterprise``, ``smb``, ``public-sector``). A value from the
  CRM or finance is trimmed and lower-cased first (``Enterprise`` is ``enterprise``); anything
  else is a ``ValidationError`` naming ``account_class`` and the value.
- A schedule is a tuple of whole-day offsets from the due date, sorted and distinct. Each
  configured class has its own (``[dunning.classes.NAME]``), possibly empty (``enabled =
  false``: no reminders for that class); an account without a class uses the default
  (``[dunning] offsets``).
- An account whose class is not configured (the CRM sent a class the config does not know, or
  the class was removed from the config) gets the default schedule: :meth:`Schedules.of` says
  so, and the dunning commands name the account, the field and the value.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from billing_core.domain.errors import ValidationError

CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
FIELD = "account_class"


def normalize_class(value: object, field_name: str = FIELD) -> str | None:
    """The class as stored: trimmed, lower-case; ``None`` or ``""`` is no class."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field_name, value, "must be text (a class name)")
    text = value.strip().lower()
    if not text:
        return None
    if not CLASS_NAME.match(text):
        raise ValidationError(field_name, value, "must be a class name: a letter or digit, then "
                              "letters, digits, _ or -, at most 64 characters")
    return text


@dataclass(frozen=True)
class Schedules:
    """The default schedule and each configured class's."""

    default: tuple[int, ...]
    classes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def of_offsets(cls, offsets: tuple[int, ...] | Schedules) -> Schedules:
        return offsets if isinstance(offsets, Schedules) else cls(tuple(sorted(set(offsets))))

    def known(self, account_class: str | None) -> bool:
        return account_class is None or account_class in self.classes

    def of(self, account_class: str | None) -> tuple[int, ...]:
        """The offsets of an account of ``account_class`` (an unknown class: the default)."""
        if account_class is None:
            return self.default
        return self.classes.get(account_class, self.default)

    def earliest(self) -> int | None:
        """The smallest offset of any schedule (no document is owed anything before it)."""
        every = [o for s in (self.default, *self.classes.values()) for o in s]
        return min(every) if every else None

    def check_known(self, account_class: str | None) -> str | None:
        """``account_class`` normalized, or a ``ValidationError`` when it is not configured
        (what finance may set)."""
        name = normalize_class(account_class)
        if name is not None and name not in self.classes:
            known = ", ".join(sorted(self.classes)) or "none configured"
            raise ValidationError(FIELD, account_class, "is not a class in [dunning.classes] "
                                  f"(known: {known})")
        return name

    def unknown_note(self, account_class: str | None) -> str:
        """The warning for an account whose class is not configured ("" when it is)."""
        if self.known(account_class):
            return ""
        return (f"account_class={account_class!r} is not a class in [dunning.classes]: "
                "the default [dunning] offsets apply")
