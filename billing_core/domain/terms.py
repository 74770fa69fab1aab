"""Committed terms and renewals of a subscription, decided on plain values (no I/O).

A subscription's *term* (how long the customer is committed) is independent of its billing
*frequency* (how often it is invoiced): a 12-month term billed monthly (the CSP "NCE" model), a
12-month term billed annually, or no term (monthly or annual, cancellable any day).

Tables (written by :mod:`billing_core.service.subscriptions` and
:mod:`billing_core.service.orders`; migration 0011)
- ``products``: the defaults and the policy. ``term_months`` (NULL: no term) and
  ``auto_renew`` are copied onto each new subscription unless its order says otherwise;
  ``term_decrease`` and ``early_termination`` are read when a change is decided, so a policy
  change applies to changes decided from then on.
- ``subscriptions``: ``term_months`` (NULL: no term), ``term_end`` (the first term's end,
  exclusive, co-termed), ``auto_renew``. The first term starts on the subscription's
  ``start_date``; no other column holds a term start.
- ``orders.renews_order_id``: the order of the deal a renewal order renews.

Rules
1. **Co-terming.** The first term runs from the start date for ``term_months`` months and is
   extended to the next bill-period boundary, so that its end (and every renewal) falls where
   an invoice period starts: for monthly billing the first bill cycle day (BCD) on or after
   ``start + term_months`` (20 Jan 2026, 12 months, BCD 1 -> 1 Feb 2027); for annual billing
   the anniversary itself (annual periods run from the subscription's own start), so an
   annual-billed term must be a whole number of years.
2. **Renewal terms.** An auto-renew subscription's next term starts where the last ended and
   lasts ``term_months`` months, ending on the BCD (monthly billing; the account's BCD when the
   decision is made) or the start's day of the month (annual billing). Renewal is a date rule,
   not a job: nothing runs at a term end, the same subscription keeps billing (same quantity,
   its negotiated price, or the catalog price in effect each day), so the boundary period is
   billed exactly once and a missed daemon cycle cannot skip or double a renewal. Without
   auto-renew the subscription ends at its term end (``end_date`` = ``term_end``).
3. **Decreases** (:func:`decrease_date`) dated inside a committed term, after its first day,
   follow the product's ``term_decrease``: ``refuse`` (a ``RuleViolation`` naming the
   quantity) or ``at_term_end`` (the change is recorded from the term end instead). A change
   on a term's first day, an increase, or any change without a term takes effect on its date
   (an increase is prorated by the usual rules).
4. **Early termination** (:func:`end_date`): an end dated inside a committed term, other than
   on a renewal boundary, follows the product's ``early_termination``: ``refuse``,
   ``at_term_end`` (the end moves to the term end), or ``allowed`` (ends on the date asked;
   the days billed in advance after it are credited by the cancellation rule, and no fee is
   charged). Ending on the first term's start is an early termination too: the commitment
   started that day.
5. **Co-terming an added subscription** (:func:`coterm_end`). A subscription an amendment adds
   to a deal whose subscriptions are committed joins the deal's current term: its first term
   ends where the deal's term holding the amendment's start ends (a prorated first term, not
   ``term_months`` from its own start), moved to the next bill cycle day when that end is not
   one (monthly billing); its renewals then follow rule 2 from there. An annual-billed
   subscription keeps a term of its own (annual periods run from its own start, so its terms
   are whole years), and so does one added to a deal without a committed term.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

from billing_core.domain.errors import RuleViolation, ValidationError
from billing_core.domain.periods import add_months, bill_period

MAX_TERM_MONTHS = 120


class TermDecrease(StrEnum):
    """What a decrease inside a committed term does."""

    REFUSE = "refuse"
    AT_TERM_END = "at_term_end"


class EarlyTermination(StrEnum):
    """What an end inside a committed term does."""

    REFUSE = "refuse"
    AT_TERM_END = "at_term_end"
    ALLOWED = "allowed"


@dataclass(frozen=True)
class Term:
    """A subscription's commitment: the first term ``[start, end)``, its length in months,
    whether it renews, and the day of the month later terms end on."""

    months: int
    start: date
    end: date
    auto_renew: bool
    day: int


def check_months(value: object, field: str) -> int | None:
    """A term length: None or 0 (no term), or 1 to ``MAX_TERM_MONTHS`` months."""
    if value is None or value == 0:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_TERM_MONTHS:
        raise ValidationError(field, value, f"must be a whole number of months from 0 (no term) "
                                            f"to {MAX_TERM_MONTHS}")
    return value


def policy(kind: type[TermDecrease] | type[EarlyTermination], value: object,
           field: str) -> str:
    """``value`` as a member of the policy ``kind``, or a ``ValidationError`` naming it."""
    try:
        return kind(str(value)).value
    except ValueError:
        raise ValidationError(field, value, f"must be one of {', '.join(kind)}") from None


def first_term_end(start: date, months: int, frequency: str, bcd: int, field: str) -> date:
    """Rule 1: where the first term ends (exclusive)."""
    if frequency == "annual":
        if months % 12:
            raise ValidationError(field, months, "an annual-billed term must be a whole number "
                                                 "of years (12, 24, 36 ... months)")
        return add_months(start, months, start.day)
    end = add_months(start, months, start.day)
    period_start, period_end = bill_period(end, bcd)
    return end if period_start == end else period_end


def make_term(months: int | None, start: date, end: date | None, auto_renew: bool,
              frequency: str, bcd: int) -> Term | None:
    """The term of a subscription row (None without one)."""
    if not months or end is None:
        return None
    return Term(months, start, end, auto_renew, start.day if frequency == "annual" else bcd)


def term_on(term: Term | None, day: date) -> tuple[date, date] | None:
    """Rule 2: the committed term ``[start, end)`` holding ``day``, or None (no term, before
    the start, or after the last term of a subscription that does not renew)."""
    if term is None or day < term.start:
        return None
    start, end = term.start, term.end
    while day >= end:
        if not term.auto_renew:
            return None
        start, end = end, add_months(end, term.months, term.day)
    return start, end


def _last(end: date) -> str:
    return (end - timedelta(days=1)).isoformat()


def decrease_date(term: Term | None, rule: str, on: date, old: Decimal, new: Decimal) -> date:
    """Rule 3: the date a change from ``old`` to ``new`` asked from ``on`` takes effect."""
    held = term_on(term, on)
    if new >= old or held is None or held[0] == on:
        return on
    if rule == TermDecrease.REFUSE:
        raise RuleViolation("quantity", new, f"is below the {old} in effect on {on} during the "
                            f"committed term {held[0]} to {_last(held[1])}: the product refuses "
                            "a decrease before the term end (term_decrease=refuse)")
    return held[1]


def end_date(term: Term | None, rule: str, at: date) -> date:
    """Rule 4: where an end asked at ``at`` falls."""
    held = term_on(term, at)
    if held is None or term is None or (held[0] == at and at > term.start):
        return at
    if rule == EarlyTermination.ALLOWED:
        return at
    if rule == EarlyTermination.REFUSE:
        raise RuleViolation("at", at, f"is inside the committed term {held[0]} to "
                            f"{_last(held[1])}: the product refuses an early termination "
                            "(early_termination=refuse); end it at the term end "
                            f"{held[1]}")
    return held[1]


def coterm_end(deal_end: date, start: date, frequency: str, bcd: int) -> date | None:
    """Rule 5: the first term end of a subscription starting ``start`` added to a deal whose
    current term ends ``deal_end``; None when it keeps a term of its own (annual billing, or
    the deal's term ends on or before the start)."""
    if frequency == "annual" or deal_end <= start:
        return None
    period_start, period_end = bill_period(deal_end, bcd)
    return deal_end if period_start == deal_end else period_end
