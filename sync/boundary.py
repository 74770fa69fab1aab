"""The sync boundary's value checks: what a CRM value must be before billing sees it.

Rules kept here:
- Pure functions, no I/O. Each takes the canonical record and a field name and returns the
  value as billing will store it, or raises ``Invalid`` naming the field, the value and the
  problem. The connectors pass a value they cannot convert through raw (a bool, an object, a
  list, ``NaN``, ``2026-12-01garbage``, a timestamp without its zone): it is refused here.
- Text is ``str`` and nothing else (a bool, number, object or list is not a name), holds no
  control character (C0, C1, DEL) and no lone surrogate (neither can be stored as text on
  PostgreSQL, and neither belongs in a name or a code), and fits its column: a value longer
  than the column is refused, never cut. The limits are in ``TEXT_LIMITS`` (the ledger's and
  the sync's column sizes, which are sized to what the CRMs allow where billing keeps it).
- Ids fit ``sync_records.crm_id`` (64). On Dataverse every id and lookup is a GUID.
- Every CRM id has one form, given by :func:`same_id` and nothing else, applied to every id
  field of a record (``ID_FIELDS``) as it enters the sync (:func:`one_form`), to ids named
  by events, deletions and targets, and by :func:`crm_id`: a Salesforce id in its
  15-character (case-sensitive) form becomes its 18-character form (the 3-character suffix
  computed from the case of the 15), an 18-character one given in another case gets the case
  its suffix says, and a GUID is lower case. So a line naming its quote by ``0Q0...Pi`` and
  the quote read as ``0Q0...PiEAI`` name one record, and ids are compared exactly.
- A reference that is not a usable id (an object, a list, a number) is refused naming its
  field; :func:`ids_within` reads the ids it may hold (a nested ``Id``, a GUID, the end of a
  URL), so the record it may name is held while it waits, never handed on without it.
- Numbers are finite ``Decimal`` within the ranges billing can bill without overflowing a
  64-bit minor-unit amount (``MAX_QUANTITY``, ``MAX_PRICE``), with at most ``SCALE`` decimal
  places (the ledger's ``Numeric(28, 10)``: more would be rounded silently).
- Whole numbers (revisions) are ``int`` within a 32-bit ``INTEGER`` column.
- Dates are ``date`` within ``DATE_RANGE`` (billing adds periods to them).
- ``shown`` renders any value safely for the quarantine: control characters escaped, long
  values cut with their length stated.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from billing_core.domain.errors import ValidationError


class Invalid(ValidationError):
    """A CRM record billing cannot take as it is: ``field``, ``value`` and ``problem`` go to
    quarantine (the ``reason`` column)."""

    code = "invalid_record"


#: Longest text per canonical field, in characters (the column it lands in).
TEXT_LIMITS: Mapping[str, int] = {
    "crm_id": 64, "account_crm_id": 64, "quote_crm_id": 64, "product_crm_id": 64,
    "name": 255,              # accounts.name, products.name (Salesforce Name: 255)
    "quote_name": 300,        # kept by the sync only (Dataverse quote name: 300)
    "number": 64,             # accounts.number (Salesforce 40, Dataverse 20)
    "quote_number": 100,      # kept by the sync only (Dataverse quotenumber: 100)
    "region": 64,             # accounts.region, tax_rates.region (state codes; Dataverse 50)
    "sku": 255,               # products.sku (Salesforce ProductCode: 255), migration 0006
    "status": 64, "billing_type": 64, "billing_frequency": 64,
}
MAX_QUANTITY = Decimal(10) ** 9         # units per line
MAX_PRICE = Decimal(10) ** 12           # per unit; x MAX_QUANTITY stays below 2^63 minor
MAX_LINE = Decimal(10) ** 12            # quantity x unit price of one line (major units)
SCALE = 10                              # decimal places the ledger keeps
MAX_REVISION = 2**31 - 1                # handoffs.revision is INTEGER
DATE_RANGE = (date(1900, 1, 1), date(2199, 12, 31))
SHOWN_CHARS = 200

# C0, DEL, C1 controls and lone surrogates.
_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_ID_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SF_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?")
#: The characters of a Salesforce id's suffix: a chunk's 5 case bits (1 = upper case letter,
#: its first character the lowest bit) index this.
_SF_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
#: A chunk's case bits as text (its first character first) -> its suffix character.
_CHUNK_MARK = {format(n, "05b")[::-1]: mark for n, mark in enumerate(_SF_SUFFIX)}
_UPPER_BITS = str.maketrans({chr(c): "1" if chr(c).isupper() else "0" for c in range(128)
                             if chr(c).isalnum()})
#: Canonical fields that hold a CRM id (a record's own, or one it names).
ID_FIELDS = ("crm_id", "account_crm_id", "quote_crm_id", "product_crm_id", "origin_quote",
             "renewed_quote", "origin_contract", "renewed_contract", "origin_ref")
#: How deep :func:`ids_within` looks into an object, and how many ids it reads at most.
_WITHIN_DEPTH, _WITHIN_MAX = 4, 20
_ID_TOKEN = re.compile(r"[0-9A-Za-z]+(?:-[0-9A-Za-z]+)*")


def salesforce_suffix(body: str) -> str:
    """The 3-character suffix of a 15-character Salesforce id: per chunk of 5 characters,
    the bits of its upper-case letters (the chunk's first character the lowest bit) index
    ``A-Z0-5``."""
    bits = body.translate(_UPPER_BITS)
    return _CHUNK_MARK[bits[:5]] + _CHUNK_MARK[bits[5:10]] + _CHUNK_MARK[bits[10:15]]


def same_id(value: Any) -> Any:
    """The one form of a CRM id (any other value is returned as it is): a GUID in lower case;
    a Salesforce id in its 18-character form, the 15 characters in the case the suffix says
    (an 18-character id is case-insensitive), the suffix in upper case. An 18-character text
    whose suffix does not fit it is not a Salesforce id and is kept as it is."""
    if not isinstance(value, str):
        return value
    if value in _SEEN_SAME:             # a page's lines name the same quotes and products
        return value
    one = _same_id(value)
    if one == value:
        if len(_SEEN_SAME) >= _SEEN_SAME_MAX:
            _SEEN_SAME.clear()          # bounded: memory stays flat however many ids pass
        _SEEN_SAME.add(value)
    return one


#: Ids lately found already in their one form (:func:`same_id`), at most ``_SEEN_SAME_MAX``.
_SEEN_SAME: set[str] = set()
_SEEN_SAME_MAX = 20_000


def _same_id(value: str) -> str:
    # on the sync's hot path (every id of every record): the usual 18-character id as the
    # API answers it is checked with str methods and three dict lookups, no regex
    size = len(value)
    if size == 36:
        return value.lower() if _GUID.fullmatch(value) else value
    if size not in (15, 18) or not (value.isascii() and value.isalnum()):
        return value
    if size == 15:
        return value + salesforce_suffix(value)
    if value[15:] == salesforce_suffix(value[:15]):
        return value                    # as the API answers it
    chars = list(value[:15])
    for k, mark in enumerate(value[15:].upper()):
        bits = _SF_SUFFIX.find(mark)
        for i in range(5):
            c = chars[k * 5 + i]
            if bits >> i & 1:
                if not c.isalpha():
                    return value        # a digit cannot be upper case: not a Salesforce id
                chars[k * 5 + i] = c.upper()
            else:
                chars[k * 5 + i] = c.lower()
    body = "".join(chars)
    return body + salesforce_suffix(body)


def one_form(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """``record`` with every id field (``ID_FIELDS``) in its one form (:func:`same_id`): the
    record itself when nothing changes."""
    changed = {}
    for name in ID_FIELDS:
        value = record.get(name)
        if isinstance(value, str) and (one := same_id(value)) != value:
            changed[name] = one
    return {**record, **changed} if changed else record


def ids_within(value: Any) -> set[str]:
    """The ids a reference that is not a usable id may hold, in their one form: the words of
    its text (the end of a URL, an id with blanks around it) and of the texts nested in it
    (an object's ``Id`` or ``quoteid``), that have an id's shape (a GUID, a 15- or
    18-character Salesforce id). Bounded: ``_WITHIN_DEPTH`` levels, ``_WITHIN_MAX`` ids."""
    found: set[str] = set()

    def walk(item: Any, depth: int) -> None:
        if len(found) >= _WITHIN_MAX or depth > _WITHIN_DEPTH:
            return
        if isinstance(item, str):
            for word in _ID_TOKEN.findall(item[:10_000]):
                if _GUID.fullmatch(word) or (len(word) in (15, 18) and _SF_ID.fullmatch(word)):
                    found.add(same_id(word))
        elif isinstance(item, Mapping):
            for v in list(item.values())[:100]:
                walk(v, depth + 1)
        elif isinstance(item, (list, tuple)):
            for v in item[:100]:
                walk(v, depth + 1)

    walk(value, 0)
    return found


def shown(value: Any) -> str:
    """A value as the quarantine shows it: plain short text as it is, anything else as its
    ``repr`` (control characters escaped), cut to ``SHOWN_CHARS`` with its length stated."""
    if isinstance(value, str) and len(value) <= SHOWN_CHARS and not _BAD_CHAR.search(value):
        return value
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARS:
            return repr(value)
        return f"{repr(value[:SHOWN_CHARS])[:-1]}…{repr(value)[0]} ({len(value):,} characters)"
    text = str(value) if isinstance(value, Decimal) and value.is_finite() else repr(value)
    if len(text) > SHOWN_CHARS or _BAD_CHAR.search(text):
        cut = _BAD_CHAR.sub(lambda m: repr(m[0])[1:-1], text[:SHOWN_CHARS])
        return cut if len(text) <= SHOWN_CHARS else f"{cut}… ({len(text):,} characters)"
    return text


def text(rec: Mapping[str, Any], field: str, *, required: bool = False,
         limit_key: str | None = None) -> str | None:
    """Stripped text of ``field``; None when absent or blank (``Invalid`` if required)."""
    value = rec.get(field)
    if value is None:
        if required:
            raise Invalid(field, value, "is required")
        return None
    if not isinstance(value, str):
        raise Invalid(field, value, f"is not text (a {type(value).__name__})")
    if _BAD_CHAR.search(value):
        raise Invalid(field, value, "contains a control character")
    stripped = value.strip()
    if not stripped:
        if required:
            raise Invalid(field, value, "is required")
        return None
    limit = TEXT_LIMITS.get(limit_key or field)
    if limit is not None and len(stripped) > limit:
        raise Invalid(field, value, f"is longer than {limit} characters")
    return stripped


def usable_id(value: object) -> bool:
    """Whether ``value`` may be looked up as an id (before the record is checked): text that
    fits the id columns and holds no character a database refuses."""
    return isinstance(value, str) and 0 < len(value) <= TEXT_LIMITS["crm_id"] \
        and not _BAD_CHAR.search(value)


def crm_id(rec: Mapping[str, Any], field: str = "crm_id", *, guid: bool = False) -> str:
    """A required id: text within 64 characters, a GUID on Dataverse (``guid``), in its one
    form (:func:`same_id`)."""
    value = rec.get(field)
    if isinstance(value, str) and 0 < len(value) <= 64 and not _BAD_ID_CHAR.search(value) \
            and (not guid or _GUID.fullmatch(value)):
        return str(same_id(value))      # the usual case, checked at once
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)              # a numeric external id is still an id
        rec = {field: value}
    found = text(rec, field, required=True, limit_key="crm_id")
    assert found is not None
    if found != value or any(c.isspace() for c in found):
        raise Invalid(field, value, "contains white space")
    if guid and not _GUID.fullmatch(found):
        raise Invalid(field, value, "is not a GUID (Dataverse ids are GUIDs)")
    return str(same_id(found))


def decimal(rec: Mapping[str, Any], field: str, *, required: bool = False,
            positive: bool = False, limit: Decimal | None = None) -> Decimal | None:
    value = rec.get(field)
    if value is None:
        if required:
            raise Invalid(field, value, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise Invalid(field, value, "is not a number")
    number = Decimal(value)
    if not number.is_finite():
        raise Invalid(field, value, "is not a finite number")
    if number < 0 or (positive and number == 0):
        raise Invalid(field, value, "must be greater than zero" if positive
                      else "must not be negative")
    if limit is not None and number > limit:
        raise Invalid(field, value, f"is larger than {limit:,}")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -SCALE and _places(number) > SCALE:
        raise Invalid(field, value, f"has more than {SCALE} decimal places")
    return number


def _places(number: Decimal) -> int:
    """Significant decimal places of a finite number (``1.50`` has 1), without rounding."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + zeros)) if any(digits) else 0


def whole(rec: Mapping[str, Any], field: str, default: int, maximum: int) -> int:
    value = rec.get(field)
    if value is None:
        return default
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(field, value, "is not a whole number")
    if value > maximum:
        raise Invalid(field, value, f"is larger than {maximum:,}")
    return value


def boolean(rec: Mapping[str, Any], field: str, default: bool) -> bool:
    value = rec.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Invalid(field, value, "is not true or false")
    return value


def day(rec: Mapping[str, Any], field: str) -> date | None:
    value = rec.get(field)
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise Invalid(field, value, "is not a date (YYYY-MM-DD)")
    if not DATE_RANGE[0] <= value <= DATE_RANGE[1]:
        raise Invalid(field, value, f"is outside {DATE_RANGE[0]}..{DATE_RANGE[1]}")
    return value


def stamp(rec: Mapping[str, Any], field: str = "modstamp") -> datetime | None:
    """The record's modification stamp: an aware timestamp, or absent."""
    value = rec.get(field)
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise Invalid(field, value, "is not an ISO 8601 timestamp with its time zone")
    return value
