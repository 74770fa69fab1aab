"""Rating: what a quantity costs under a price (pure, no I/O).

Rules kept here
- ``per_unit``: quantity x unit price.
- ``graduated``: each unit is priced in the tier it falls in (tier i covers
  ``(up_to[i-1], up_to[i]]``), plus the flat fee of every tier that holds at least part of a unit.
- ``volume``: every unit at the unit price of the tier the *total* falls in, plus that tier's
  flat fee.
- Tier bounds ``up_to`` are inclusive; the last tier may be open (``None``). A quantity of zero
  costs nothing (no flat fee).
- The result is *unrounded* (full precision); the caller rounds once per invoice line with
  :func:`billing_core.domain.money.to_minor` (the one rounding rule, ROUND_HALF_UP).

Tiers across price rows (:func:`running_amounts`)
- Tiers apply to a period's *total* quantity: a new price row taking effect inside the period
  does not restart the ladder. Units under several rows in one period of total ``T`` cost, for
  the row holding ``q`` of them, ``rate(row, T) x q / T``: the whole period's quantity is rated
  on that row's ladder and the row takes its share by its units.
- Why this rule and not walking the ladder in date order: it is the same for every model
  (``volume`` has no position on a ladder to walk; ``per_unit`` gives exactly ``q x`` the row's
  price), it does not depend on the order the units arrived in, and with identical tiers on
  every row the rows add up to rating ``T`` once (545.00 for 3,000 + 4,500 units on
  <=1,000 @0.10, <=5,000 @0.08, above @0.05, not 260.00 + 380.00). When the rows' tiers
  differ, each row's units are charged at that row's average price for ``T`` units.
- The amounts are returned as running totals, each from one division of exact products, so the
  last is exactly ``rate(row, T)`` when the ladders are the same; the caller rounds each running
  total once and bills the differences, so the lines add up to the rounded total to the cent.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from typing import NamedTuple

from billing_core.domain.errors import NotFound, ValidationError
from billing_core.domain.money import from_minor

MODELS = ("per_unit", "graduated", "volume")
ZERO = Decimal(0)
_EXACT_DIGITS = 60


class Tier(NamedTuple):
    up_to: Decimal | None      # inclusive upper bound; None = no bound
    unit_price: Decimal
    flat_fee_minor: int = 0


@dataclass(frozen=True)
class Price:
    """The price of one product in one currency from ``effective_from`` on."""

    product_id: int
    currency: str
    effective_from: date
    unit_price: Decimal
    model: str = "per_unit"
    tiers: tuple[Tier, ...] = ()
    id: int | None = None


def check_tiers(tiers: tuple[Tier, ...], field: str = "tiers") -> None:
    """Tiers ascend strictly; only the last may be open; prices and fees are not negative."""
    if not tiers:
        raise ValidationError(field, tiers, "a tiered price needs at least one tier")
    previous = ZERO
    for i, tier in enumerate(tiers):
        if tier.unit_price < 0:
            raise ValidationError(f"{field}[{i}].unit_price", tier.unit_price, "must not be negative")
        if tier.flat_fee_minor < 0:
            raise ValidationError(f"{field}[{i}].flat_fee", tier.flat_fee_minor,
                                  "must not be negative")
        if tier.up_to is None:
            if i != len(tiers) - 1:
                raise ValidationError(f"{field}[{i}].up_to", None, "only the last tier may be open")
            continue
        if tier.up_to <= previous:
            raise ValidationError(f"{field}[{i}].up_to", tier.up_to,
                                  f"must be greater than the previous bound {previous}")
        previous = tier.up_to


def rate(price: Price, quantity: Decimal) -> Decimal:
    """The unrounded amount for ``quantity`` units under ``price``."""
    if quantity == 0:
        return ZERO
    if price.model == "per_unit" or not price.tiers:
        return quantity * price.unit_price
    if price.model == "volume":
        tier = _tier_of(price.tiers, quantity)
        fee = from_minor(tier.flat_fee_minor, price.currency) if tier.flat_fee_minor else ZERO
        return quantity * tier.unit_price + fee
    # graduated
    sign = Decimal(-1) if quantity < 0 else Decimal(1)
    left = abs(quantity)
    total = ZERO
    lower = ZERO
    for tier in price.tiers:
        upper = tier.up_to
        units = left if upper is None else min(left, upper - lower)
        if units > 0:
            total += units * tier.unit_price
            if tier.flat_fee_minor:
                total += from_minor(tier.flat_fee_minor, price.currency)
            left -= units
        if left <= 0 or upper is None:
            break
        lower = upper
    if left > 0:   # tiers all bounded and the quantity is above the last: last tier's price
        total += left * price.tiers[-1].unit_price
    return sign * total


def running_amounts(parts: Sequence[tuple[Price, Decimal]]) -> list[Decimal]:
    """Unrounded running totals of one period's units split across price rows (in the rows'
    date order): element k is what the units of rows 0..k cost under the rule above."""
    total = sum((q for _, q in parts), ZERO)
    if total == 0:
        return [ZERO] * len(parts)
    numerator = ZERO
    out: list[Decimal] = []
    with localcontext(prec=_EXACT_DIGITS):  # products of long decimals stay exact
        for price, quantity in parts:
            numerator += rate(price, total) * quantity
            out.append(numerator / total)
    return out


def _tier_of(tiers: tuple[Tier, ...], quantity: Decimal) -> Tier:
    q = abs(quantity)
    for tier in tiers:
        if tier.up_to is None or q <= tier.up_to:
            return tier
    return tiers[-1]


class PriceBook:
    """Every price in memory, for the bill run: lookups and day-splits without queries."""

    def __init__(self, all_prices: Iterable[Price]) -> None:
        self._by_key: dict[tuple[int, str], list[Price]] = defaultdict(list)
        for p in all_prices:
            self._by_key[(p.product_id, p.currency)].append(p)
        self._starts: dict[tuple[int, str], list[date]] = {}
        for key, plist in self._by_key.items():
            plist.sort(key=lambda p: p.effective_from)
            self._starts[key] = [p.effective_from for p in plist]
        # answers repeat across a bill run (same period, same products): remember them
        self._found: dict[tuple[int, str, date], Price] = {}
        self._segments: dict[tuple[int, str, date, date], list[tuple[date, date, Price]]] = {}

    def price_for(self, product_id: int, currency: str, on_date: date) -> Price:
        found = self._found.get((product_id, currency, on_date))
        if found is not None:
            return found
        key = (product_id, currency)
        i = bisect_right(self._starts.get(key, []), on_date) - 1
        if i < 0:
            raise NotFound("price", f"product={product_id} currency={currency} date={on_date}")
        found = self._found[(product_id, currency, on_date)] = self._by_key[key][i]
        return found

    def starts_within(self, product_id: int, start: date, end: date) -> set[date]:
        """The days in ``(start, end)`` on which a price row of the product starts, in any
        currency (the cut points of metered usage aggregated in SQL)."""
        return {p.effective_from for (pid, _), plist in self._by_key.items() if pid == product_id
                for p in plist if start < p.effective_from < end}

    def segments(self, product_id: int, currency: str, start: date,
                 end: date) -> list[tuple[date, date, Price]]:
        """``[start, end)`` split at every price change: (from, to, price) pieces."""
        memo_key = (product_id, currency, start, end)
        hit = self._segments.get(memo_key)
        if hit is None:
            hit = self._segments[memo_key] = self._split(product_id, currency, start, end)
        return hit

    def _split(self, product_id: int, currency: str, start: date,
               end: date) -> list[tuple[date, date, Price]]:
        first = self.price_for(product_id, currency, start)
        key = (product_id, currency)
        out: list[tuple[date, date, Price]] = []
        cur_from, cur_price = start, first
        for p in self._by_key[key]:
            if start < p.effective_from < end:
                out.append((cur_from, p.effective_from, cur_price))
                cur_from, cur_price = p.effective_from, p
        out.append((cur_from, end, cur_price))
        return out
