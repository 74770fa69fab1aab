"""Billing conventions: periods and proration. Every date rule of the bill run lives here.

The conventions (the README quotes this docstring)

1. **Bill periods.** An account's monthly period runs from its bill cycle day (BCD) to the BCD of
   the next month, ``[start, end)``. A BCD past a month's end falls on that month's last day:
   BCD 31 gives 31 Jan -> 28 Feb (29 in a leap year) -> 31 Mar. One invoice per account per
   period, issued on the date of the run that bills it (the period start when the run is on
   time; a run on 5 Apr for the period from 1 Apr issues it on 5 Apr) and due the account's
   payment terms after that.
2. **Annual terms.** An annual subscription's term runs twelve months from its own start date
   (its anniversary is its own; a 29 Feb start renews on 28 Feb). Each term is billed in advance,
   whole, on the first invoice whose period starts on or after the term start.
3. **In advance / in arrears.** Recurring charges are billed in advance: the invoice for
   ``[start, end)`` charges that period. Usage is billed in arrears: events dated (UTC) before the
   period start go on that invoice. One-time charges go on the first invoice after their order
   activates (charge date before the invoice period's end).
4. **Proration.** ``quantity x unit price x days / days_in_period``, where ``days`` counts
   calendar days in ``[from, to)`` and ``days_in_period`` is the length of the period (monthly bill
   period or annual term) that contains ``from``; computed at full precision and rounded once
   per line. A charge range that crosses period boundaries is cut at each boundary (each piece
   uses its own period's length), at each price change (each day is charged at the price in
   effect that day) and at each quantity change. A whole period at one price and one quantity is
   exactly ``quantity x unit price``.
5. **Catch-up.** A mid-period start or a quantity change that falls in a period already billed
   goes on the account's next regular invoice as a prorated line (a decrease as a negative
   line); nothing is invoiced on its own.
"""
from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache

from billing_core.domain.errors import ValidationError

FREQUENCIES = ("monthly", "annual")


def month_day(year: int, month: int, day: int) -> date:
    """``day`` of the month, or the month's last day when the month is shorter."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def add_months(anchor: date, months: int, day: int | None = None) -> date:
    """``anchor`` moved by whole months, on ``day`` (default: the anchor's day), clamped."""
    index = anchor.year * 12 + anchor.month - 1 + months
    return month_day(index // 12, index % 12 + 1, day or anchor.day)


def check_billable_date(on: date, field: str = "date") -> None:
    """Refuse a date whose monthly bill period (of any BCD) ends past the last date Python and
    the ledger can represent (9999-12-31): a ``ValidationError`` naming ``field`` and the date,
    not a ``ValueError`` from deep inside a bill run."""
    try:
        for bcd in range(1, 32):
            bill_period(on, bcd)
    except (ValueError, OverflowError):
        raise ValidationError(field, on.isoformat(), f"its bill period ends after {date.max}, "
                                                     f"the last date the ledger can represent"
                              ) from None


@lru_cache(maxsize=8192)
def bill_period(on: date, bcd: int) -> tuple[date, date]:
    """The monthly bill period ``[start, end)`` of a BCD that contains ``on``."""
    start = month_day(on.year, on.month, bcd)
    if start > on:
        start = add_months(start, -1, bcd)
    return start, add_months(start, 1, bcd)


@lru_cache(maxsize=8192)
def annual_term(on: date, term_start: date) -> tuple[date, date]:
    """The annual term ``[start, end)`` anchored at ``term_start`` that contains ``on``."""
    years = on.year - term_start.year
    start = add_months(term_start, 12 * years, term_start.day)
    if start > on:
        start = add_months(term_start, 12 * (years - 1), term_start.day)
    elif add_months(term_start, 12 * (years + 1), term_start.day) <= on:
        start = add_months(term_start, 12 * (years + 1), term_start.day)
    return start, add_months(term_start, 12 * (start.year - term_start.year + 1), term_start.day)


def period_of(on: date, frequency: str, bcd: int, anchor: date) -> tuple[date, date]:
    """The billing period that contains ``on``: a bill period (monthly) or an annual term."""
    if frequency == "annual":
        return annual_term(on, anchor)
    return bill_period(on, bcd)


def split_by_period(start: date, end: date, frequency: str, bcd: int,
                    anchor: date) -> Iterator[tuple[date, date, int]]:
    """``[start, end)`` cut at period boundaries: (from, to, days_in_that_period) pieces."""
    cur = start
    while cur < end:
        p_start, p_end = period_of(cur, frequency, bcd, anchor)
        to = min(p_end, end)
        yield cur, to, (p_end - p_start).days
        cur = to


def prorate(quantity: Decimal, unit_price: Decimal, days: int, days_in_period: int) -> Decimal:
    """The unrounded prorated amount (convention 4). A whole period is exactly q x price."""
    if days == days_in_period:
        return quantity * unit_price
    return quantity * unit_price * days / days_in_period


def days_between(start: date, end: date) -> int:
    return (end - start).days


def last_day(start: date) -> date:
    """The day before ``start`` (the last day of a period that ends at ``start``)."""
    return start - timedelta(days=1)


def parse_date(value: object, field: str) -> date:
    """A date given as a date or as ``YYYY-MM-DD`` text; else a ``ValidationError`` naming
    ``field`` and the value."""
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValidationError(field, value, "must be a date (YYYY-MM-DD)")
