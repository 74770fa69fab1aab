"""A subscription's effective-dated quantity history, and what a bill run owes against it.

The history is the subscription's ordered quantity (``base``) and its active quantity changes
in (effective date, id) order: the quantity on a day is the new quantity of the last change
dated on or before it, or the base. The order in which changes were *recorded* plays no part,
except that of two changes on the same day the later-recorded one wins. The subscription ends
on its ``end_date`` (exclusive): from then on its quantity is 0.

What was billed, on any day before ``billed_through``, is the history of the changes already
invoiced: every change dated before ``billed_through`` when a bill run reads the subscription
is invoiced by that run (as a catch-up, or inside the range it bills), so a change that is not
invoiced yet and is dated before ``billed_through`` was recorded after its days were billed.

The catch-up rules (they keep "billed = history" on every billed day):

1. A change not yet invoiced, dated before ``billed_through``, is charged (or credited)
   ``new - old`` from its date up to the next later-dated change that is already invoiced
   (those days were billed at that change's quantity, which still holds), or up to
   ``billed_through``, or up to the end date, whichever comes first. ``old`` is the quantity in
   effect just before its date: the previous change's new quantity in the history, or the base.
   Uninvoiced changes telescope: two recorded out of order add up to the right quantity on
   every day (8 from 1 March recorded first, then 3 from 20 January, base 5: -2 from 20 January
   and +5 from 1 March, i.e. 3 then 8).
2. An end date before ``billed_through`` (a cancellation of days billed in advance) credits
   what was billed on each day of ``[end_date, billed_through)``: the invoiced history's
   quantity there, negated; ``billed_through`` then moves back to the end date, so the credit
   is given once (the bill run's guarded mark of ``billed_through`` makes that exact).
3. Amounts follow :mod:`billing_core.domain.periods` (convention 4, proration by the days of
   the period containing each piece); the caller cuts pieces at periods and prices.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from itertools import pairwise
from typing import Protocol, TypeVar


class Step(Protocol):
    """What the rules read of a quantity change."""

    @property
    def id(self) -> int: ...
    @property
    def effective_date(self) -> date: ...
    @property
    def new_quantity(self) -> Decimal: ...
    @property
    def invoiced(self) -> bool: ...


S = TypeVar("S", bound=Step)

def ordered(changes: Sequence[S]) -> list[S]:
    """The history's order: effective date, then recording order (id)."""
    return sorted(changes, key=lambda c: (c.effective_date, c.id))


def quantity_on(timeline: Sequence[Step], base: Decimal, day: date) -> Decimal:
    """The quantity in effect on ``day`` (``timeline`` in history order)."""
    q = base
    for c in timeline:
        if c.effective_date > day:
            break
        q = c.new_quantity
    return q


def catch_ups(timeline: Sequence[S], base: Decimal, billed: date,
                       end: date | None) -> list[tuple[S, Decimal, date, date]]:
    """Rule 1: per uninvoiced change dated before ``billed``, (change, old quantity, from, to);
    ``to`` may equal ``from`` (nothing to charge, the change is still settled)."""
    limit = billed if end is None or end > billed else end
    out = []
    for i, c in enumerate(timeline):
        if c.invoiced or c.effective_date >= billed:
            continue
        old = timeline[i - 1].new_quantity if i else base
        stop = next((n.effective_date for n in timeline[i + 1:] if n.invoiced), limit)
        out.append((c, old, c.effective_date, max(c.effective_date, min(stop, limit))))
    return out


def billed_pieces(timeline: Sequence[Step], base: Decimal, start: date,
                  stop: date) -> list[tuple[date, date, Decimal]]:
    """Rule 2's quantities: ``[start, stop)`` cut where the invoiced history changes, with the
    quantity billed on each piece (pieces at quantity 0 left out)."""
    invoiced = [c for c in timeline if c.invoiced]
    cuts = [start, *sorted({c.effective_date for c in invoiced if start < c.effective_date < stop}),
            stop]
    out = []
    for a, b in pairwise(cuts):
        q = quantity_on(invoiced, base, a)
        if q:
            out.append((a, b, q))
    return out
