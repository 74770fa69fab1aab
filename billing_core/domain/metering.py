"""Billable metrics and the rating of their aggregates (pure, no I/O).

Rules kept here
- A metric (``code``) is effective-dated: each version has an ``effective_from`` day and holds
  until the next version's. A usage period is rated by the version in effect on the period's
  first day; a period that starts before the metric's first version takes that first version.
- Aggregations over a usage period's events (after the filters, per group value):
  ``count`` (events), ``sum`` (values), ``max`` (largest value), ``unique_count`` (distinct
  values of ``property``; events without it do not count), ``latest`` (the value of the last
  event by timestamp, then by arrival). ``count`` and ``sum`` are additive: a period spanning
  price rows is split by row and tiered on the period's total (:func:`rating.running_amounts`,
  the same rule as product usage); the others are one figure for the period, priced at the
  price row in effect on the period's last day.
- Filters: ``{property: [values]}``, an event passes when each named property's value (as
  text) is one of the listed; ``group_by``: one line per value of that property (events
  without it form the group "(none)").
- Values are exact decimals with at most :data:`SCALE` decimals, ``|value| < 10^12``.
- Events arrive as JSON read by :func:`read_json`: numbers as exact decimals, an integer of
  any length (one past Python's 4,300-digit conversion limit becomes a Decimal, for the
  value's own check to refuse), and a document that is malformed or nests too deeply for the
  parser is a ValidationError naming it, never a ValueError or a RecursionError.
- A rated key (account, metric, group, usage period) that an earlier live invoice already
  billed is billed again only as an adjustment: ``rate(the period's aggregate now) - what was
  billed``, one line, never a change to the earlier invoice.
"""
from __future__ import annotations

import builtins
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Any

from billing_core.domain.errors import ValidationError
from billing_core.domain.money import to_minor
from billing_core.domain.rating import Price, rate, running_amounts
from billing_core.domain.text import printable, unstorable

AGGREGATIONS = ("count", "sum", "max", "unique_count", "latest")
ADDITIVE = frozenset({"count", "sum"})
SCALE = 6
E6 = Decimal(10) ** SCALE
MAX_VALUE = Decimal(10) ** 12
CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
PROPERTY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
NO_GROUP = "(none)"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Metric:
    code: str
    effective_from: date
    aggregation: str
    product_id: int
    property: str | None = None
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: str | None = None
    description: str | None = None
    id: int | None = None

    @builtins.property       # the field ``property`` shadows the builtin in this body
    def additive(self) -> bool:
        return self.aggregation in ADDITIVE


def check_code(code: object, field_name: str = "code") -> str:
    if not isinstance(code, str) or not CODE_RE.fullmatch(code.strip()):
        raise ValidationError(field_name, code, "must be 1-64 letters, digits, _ . - "
                                                "starting with a letter")
    return code.strip()


def check_property(name: object, field_name: str) -> str:
    if not isinstance(name, str) or not PROPERTY_RE.fullmatch(name):
        raise ValidationError(field_name, name, "must be 1-64 letters, digits, _ -")
    return name


def check_filters(filters: object) -> dict[str, tuple[str, ...]]:
    """``{property: value or [values]}`` with text values (numbers are compared as text)."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise ValidationError("filters", filters, "must be an object {property: [values]}")
    out: dict[str, tuple[str, ...]] = {}
    for key, values in filters.items():
        check_property(key, f"filters.{key}")
        items = values if isinstance(values, (list, tuple)) else [values]
        if not items or not all(isinstance(v, (str, int, Decimal)) and not isinstance(v, bool)
                                for v in items):
            raise ValidationError(f"filters.{key}", values,
                                  "must be a value or a non-empty list of text or numbers")
        if any(unstorable(v) for v in items):
            raise ValidationError(f"filters.{key}", [printable(str(v)) for v in items],
                                  "a value contains a NUL or an unpaired surrogate character")
        out[key] = tuple(str(v) for v in items)
    return out


def check_metric(metric: Metric) -> Metric:
    """The metric as given, or a ValidationError naming the field and the value."""
    check_code(metric.code)
    if metric.aggregation not in AGGREGATIONS:
        raise ValidationError("aggregation", metric.aggregation,
                              f"must be one of {', '.join(AGGREGATIONS)}")
    if metric.aggregation == "unique_count":
        if not metric.property:
            raise ValidationError("property", metric.property,
                                  "unique_count needs the property whose values it counts")
        check_property(metric.property, "property")
    elif metric.property:
        raise ValidationError("property", metric.property,
                              f"only unique_count takes a property ({metric.aggregation} "
                              "aggregates the event values)")
    if metric.group_by is not None:
        check_property(metric.group_by, "group_by")
    check_filters(dict(metric.filters))
    return metric


def version_for(versions: Sequence[Metric], period_start: date) -> Metric:
    """The version in effect on ``period_start`` (versions sorted by date), else the first."""
    chosen = versions[0]
    for v in versions:
        if v.effective_from <= period_start:
            chosen = v
        else:
            break
    return chosen


def parse_value(raw: object, field_name: str = "value") -> Decimal:
    """An exact decimal from a string, an int or a Decimal (JSON numbers parsed as Decimal);
    a float is refused (it is not the number that was sent)."""
    if isinstance(raw, bool) or isinstance(raw, float) or raw is None:
        raise ValidationError(field_name, raw, "must be an exact number (a string or a JSON "
                                               "number read as decimal), not "
                              + ("empty" if raw is None else type(raw).__name__))
    try:
        value = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValidationError(field_name, raw, "is not a number") from None
    if not value.is_finite():
        raise ValidationError(field_name, raw, "is not a finite number")
    if abs(value) >= MAX_VALUE:
        raise ValidationError(field_name, raw, f"must be below {MAX_VALUE:,} in size")
    if value != value.quantize(Decimal(1).scaleb(-SCALE)):
        raise ValidationError(field_name, raw, f"has more than {SCALE} decimals")
    return value


def _wide_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= 4000 else Decimal(text)


def read_json(text: str | bytes, field_name: str) -> Any:
    """A JSON document with its numbers as exact decimals (see the module rules)."""
    try:
        try:
            return json.loads(text, parse_float=Decimal)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise
        except ValueError:     # an integer over sys.get_int_max_str_digits()
            return json.loads(text, parse_float=Decimal, parse_int=_wide_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(field_name, None, f"is not JSON: {exc}") from None
    except RecursionError:
        raise ValidationError(field_name, None, "is not JSON this reader takes: it nests "
                                                "too deeply") from None


def to_e6(value: Decimal) -> int:
    return int(value * E6)


def from_e6(units: int | Decimal) -> Decimal:
    return (Decimal(units) / E6).normalize() if units else ZERO


@dataclass(frozen=True)
class RatedPart:
    """One invoice line of a rated key: its amount (priced, unrounded total rounded once),
    quantity and the price row's unit price."""

    amount_minor: int
    quantity: Decimal
    unit_price: Decimal
    price_from: date


def rate_parts(parts: Sequence[tuple[Price, Decimal]], currency: str) -> list[RatedPart]:
    """The lines of one key's parts (price rows in date order), rounded as usage lines are:
    the running total is rounded after each row and each line bills the difference."""
    if len(parts) == 1:
        price, quantity = parts[0]
        return [RatedPart(to_minor(rate(price, quantity), currency), quantity,
                          price.unit_price, price.effective_from)]
    running = [to_minor(a, currency) for a in running_amounts(parts)]
    return [RatedPart(b - a, q, p.unit_price, p.effective_from)
            for (a, b), (p, q) in zip(pairwise([0, *running]), parts, strict=True)]


def describe(product_name: str, metric: Metric, group: str | None, quantity: Decimal,
             events: int, period: tuple[date, date], price_from: date | None = None) -> str:
    """A usage line's text: what was aggregated, over how many events, for which period."""
    start, end = period
    grp = f" {metric.group_by}={group}" if metric.group_by else ""
    row = f", price from {price_from.isoformat()}" if price_from is not None else ""
    return (f"{product_name} [{metric.code}{grp}]: {metric.aggregation} {_n(quantity)} of "
            f"{events} event{'s' if events != 1 else ''}, {start.isoformat()} to "
            f"{(end - timedelta(days=1)).isoformat()}{row}")


def describe_adjustment(product_name: str, metric: Metric, group: str | None,
                        now: Decimal, billed: Decimal, events: int,
                        period: tuple[date, date]) -> str:
    start, end = period
    grp = f" {metric.group_by}={group}" if metric.group_by else ""
    return (f"{product_name} [{metric.code}{grp}]: adjustment for usage {start.isoformat()} to "
            f"{(end - timedelta(days=1)).isoformat()} (late or corrected events; "
            f"{metric.aggregation} now {_n(now)} of {events} events, billed {_n(billed)})")


def _n(number: Decimal) -> str:
    return format(number.normalize(), "f") if number else "0"


def plain_properties(props: Any, field_name: str = "properties") -> dict[str, Any] | None:
    """Free properties as stored: an object of scalars (text, whole numbers, booleans, null);
    a decimal with a fraction, or one of 4,000 digits or more, is kept as its text (no floats
    anywhere). No NUL in a key or a
    text, nor a lone surrogate (:mod:`billing_core.domain.text`)."""
    if props is None:
        return None
    if not isinstance(props, Mapping):
        raise ValidationError(field_name, props, "must be an object")
    if len(props) > 64:
        raise ValidationError(field_name, f"{len(props)} keys", "has more than 64 keys")
    out: dict[str, Any] = {}
    for key, value in props.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise ValidationError(f"{field_name}.{key}", key, "keys are 1-64 characters")
        if unstorable(key):
            raise ValidationError(field_name, printable(key),
                                  "a key contains a NUL or an unpaired surrogate character")
        if value is None or isinstance(value, (bool, str)):
            if isinstance(value, str) and len(value) > 255:
                raise ValidationError(f"{field_name}.{key}", value[:40] + "...",
                                      "is over 255 characters")
            if isinstance(value, str) and unstorable(value):
                raise ValidationError(f"{field_name}.{key}", printable(value[:40]),
                                      "contains a NUL or an unpaired surrogate character")
            out[key] = value
        elif isinstance(value, int):
            out[key] = value
        elif isinstance(value, Decimal):
            # 1e999999999 stays text: as an int it is a billion digits (and minutes of CPU)
            whole = value.adjusted() < 4000 and value == value.to_integral_value()
            out[key] = int(value) if whole else str(value)
        else:
            raise ValidationError(f"{field_name}.{key}", value if not isinstance(value, float)
                                  else repr(value),
                                  "must be text, a number, true/false or null")
    return out
