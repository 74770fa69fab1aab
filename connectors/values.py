"""Single CRM values in and out: what the field map's types (fieldmap.TYPES) stand for.

Rules kept here:
- Reading never raises for a CRM value, whatever it is (a JSON object, a list, a bool, NaN,
  Infinity, 1e400, 10,000 digits): a value that cannot be converted comes back as it was, raw,
  for the sync boundary to quarantine with its field and reason. A crash here would fail the
  whole page on every run and so block the connection for good.
- Numbers become `Decimal` (never float) and only finite ones. Text counts as a number only in
  plain notation (`-12.50`, `1E+3`): not `NaN`, `Infinity`, ` 1_000 `. A bool is never a
  number, although Python's bool is an int. An integer must be integral and fit 64 bits (the
  widest integer column either CRM has); anything larger passes raw instead of growing into
  an int with thousands of digits.
- Timestamps: ISO 8601 extended format with an offset (`Z`, `+01:00`, Salesforce's `+0000`)
  become aware UTC. Without an offset a timestamp is never guessed to be local or UTC: raw.
- Dates: `YYYY-MM-DD` and nothing else (not `2026-12-01garbage`, not week dates, not a
  timestamp cut to its first ten characters), unless the column's behaviour says otherwise:
  Dataverse serves a "User Local" date-only column (quote.effectivefrom,
  quotedetail.requestdeliveryby) as the UTC instant of the local midnight of the user who
  entered it: `2025-12-31T23:00:00Z` is 1 January entered in UTC+1. Such a value is read in
  the connection's time zone and its date taken, and a date is written back as the UTC
  instant of its local midnight there. "Time zone independent" columns are served at `T00:00:00Z`
  whatever the zone: read and written in UTC. The `FormattedValue` annotation would show the
  user's date too, but in the user's locale format (`1/1/2026`, `01.01.2026`): fragile to
  parse, and asking for it makes every page larger; the time zone needs neither.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

DATE_ONLY, USER_LOCAL, TIME_ZONE_INDEPENDENT = "date_only", "user_local", "time_zone_independent"
BEHAVIORS = (DATE_ONLY, USER_LOCAL, TIME_ZONE_INDEPENDENT)
INT_LIMIT = 2**63  # |value| below this fits a signed 64-bit column

# re.ASCII: `\d` would otherwise take any script's digits, which Decimal() then accepts.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+-]\d{2}:?\d{2})?", re.ASCII)


def decimal_in(value: Any) -> Any:
    """A finite `Decimal`, or the raw value."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))  # JSON parsed without parse_float: its shortest repr
    elif isinstance(value, str) and _NUMBER.fullmatch(value):
        try:
            number = Decimal(value)
        except InvalidOperation:  # an exponent beyond Decimal's range
            return value
    else:
        return value
    return number if number.is_finite() else value


def int_in(value: Any) -> Any:
    """An `int` of an integral value that fits 64 bits, or the raw value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # already an int: a range beyond the column is the boundary's to judge
    number = decimal_in(value)
    # copy_abs, not abs(): abs() rounds to the context and overflows on 1E+999999999
    if not isinstance(number, Decimal) or not number.is_finite() or number.copy_abs() >= INT_LIMIT:
        return value
    return int(number) if number == number.to_integral_value() else value


def bool_in(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.lower(), value)
    return value


def parse_datetime(value: Any) -> Any:
    """CRM timestamp → aware UTC; the raw value when it has no offset or is not ISO 8601."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value
    if not isinstance(value, str):
        return value
    text = value.strip()
    match = _TIMESTAMP.fullmatch(text)
    if match is None or match[2] is None:
        return value
    try:    # what the pattern admits, Python 3.11's parser reads as is (+0000 and Z included)
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, or an instant beyond year 1..9999 in UTC
        return value


def date_in(value: Any, behavior: str = DATE_ONLY, zone: tzinfo = UTC) -> Any:
    """A `date`, or the raw value. `YYYY-MM-DD` always; an instant with its offset only for a
    user-local (read in `zone`) or time-zone-independent (read in UTC) column."""
    if isinstance(value, datetime):
        instant = value
    elif isinstance(value, date):
        return value
    elif isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    else:
        instant = parse_datetime(value)
    if behavior == DATE_ONLY or not isinstance(instant, datetime) or instant.tzinfo is None:
        return value
    try:
        return instant.astimezone(zone if behavior == USER_LOCAL else UTC).date()
    except (ValueError, OverflowError):  # 0001-01-01T00:00:00Z read west of UTC
        return value


def date_out(value: date, behavior: str = DATE_ONLY, zone: tzinfo = UTC) -> str:
    """What a date column takes: `YYYY-MM-DD`, or for the other behaviours the UTC instant
    of the date's midnight in `zone` (user local) or in UTC (time zone independent)."""
    if behavior == DATE_ONLY:
        return value.isoformat()
    midnight = datetime.combine(value, time(), zone if behavior == USER_LOCAL else UTC)
    return midnight.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_zone(name: str) -> tzinfo | None:
    """The IANA time zone `name` ("Europe/Berlin", "UTC"), or None when there is none such."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # unknown key, a path, not a zone file
        return None
