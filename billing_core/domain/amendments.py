"""An amendment as the difference between what a deal has ordered and what its new revision
orders (no I/O).

A *deal* is an order and the amendment orders that followed it (``amends_order_id``). What it
has ordered (*held*) is, on the amendment's start date: its subscriptions not cancelled and not
ended by then, each at its latest scheduled quantity, and the quantities of its one-time items.
The new revision orders its whole content again (*wanted*); only the difference is billed.

| the new revision orders ...           | the deal holds ...         | outcome                       |
|---------------------------------------|----------------------------|-------------------------------|
| key K at quantity q                   | key K at quantity q        | nothing                       |
| key K at quantity q2 != q             | key K at quantity q        | quantity change q -> q2 from  |
|                                       |                            | the amendment's start date    |
| key K                                 | no key K                   | added: a new subscription     |
| nothing of key K                      | key K                      | removed: the subscription     |
|                                       |                            | ends on the start date        |
| one-time product P, quantity q        | P charged c times in total | a charge of q - c when q > c, |
|                                       |                            | otherwise nothing             |

- A subscription's key is (product, negotiated unit price or the catalog's, frequency): a new
  price is the old subscription ended and a new one added on the same day, so each day is
  billed at one price once.
- Lines of the new revision with the same key are one wanted quantity (their sum) while the
  deal holds at most one subscription of that key.
- Two or more held subscriptions of one key (two lines of the same product at the same price
  on the first quote) are matched line by line, deterministically (:func:`match_lines`): the
  held ones in creation order (id), the new revision's lines of that key in their order. First
  each line takes the first unmatched subscription of exactly its quantity (unchanged); then
  the remaining lines and subscriptions pair in order (a quantity change); a line left over is
  added as a subscription of its own, a subscription left over is removed. Held 10 and 5,
  lines 10 and 8: the 5 becomes 8; lines 12 and 5: the 10 becomes 12; one line of 10: the 5
  is removed.
- One-time items are never billed twice: only a quantity beyond what the deal already charged
  is charged; fewer (or none) charges nothing and gives nothing back (a credit memo does).
- A revision that changes nothing gives an empty plan (:attr:`AmendmentPlan.empty`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from billing_core.domain.errors import ValidationError

SubKey = tuple[int, Decimal | None, str]


@dataclass(frozen=True)
class HeldSub:
    id: int
    product_id: int
    unit_price: Decimal | None
    frequency: str
    quantity: Decimal

    @property
    def key(self) -> SubKey:
        return (self.product_id, self.unit_price, self.frequency)


@dataclass(frozen=True)
class WantedSub:
    product_id: int
    unit_price: Decimal | None
    frequency: str
    quantity: Decimal
    start_date: date

    @property
    def key(self) -> SubKey:
        return (self.product_id, self.unit_price, self.frequency)


@dataclass(frozen=True)
class WantedCharge:
    product_id: int
    unit_price: Decimal | None
    quantity: Decimal
    charge_date: date


@dataclass(frozen=True)
class QuantityChange:
    subscription_id: int
    product_id: int
    old_quantity: Decimal
    new_quantity: Decimal


@dataclass(frozen=True)
class AmendmentPlan:
    changes: tuple[QuantityChange, ...] = ()
    added: tuple[WantedSub, ...] = ()
    removed: tuple[HeldSub, ...] = ()
    charges: tuple[WantedCharge, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.changes or self.added or self.removed or self.charges)


class AmbiguousAmendment(ValidationError):
    """Kept for callers that catch it: the diff no longer raises it (two held subscriptions
    of one key are matched by :func:`match_lines`)."""


def match_lines(held: Sequence[HeldSub], wanted: Sequence[WantedSub]
                ) -> tuple[list[tuple[HeldSub, WantedSub]], list[WantedSub], list[HeldSub]]:
    """The module's line-by-line rule for one key: (matched pairs, lines left over,
    subscriptions left over). ``held`` in creation order, ``wanted`` in line order."""
    free = sorted(held, key=lambda h: h.id)
    pairs: list[tuple[HeldSub, WantedSub] | None] = [None] * len(wanted)
    for i, w in enumerate(wanted):
        same = next((h for h in free if h.quantity == w.quantity), None)
        if same is not None:
            free.remove(same)
            pairs[i] = (same, w)
    for i, w in enumerate(wanted):
        if pairs[i] is None and free:
            pairs[i] = (free.pop(0), w)
    rest = [w for i, w in enumerate(wanted) if pairs[i] is None]
    return [p for p in pairs if p is not None], rest, free


def _wanted_by_key(wanted: Iterable[WantedSub]) -> dict[SubKey, WantedSub]:
    out: dict[SubKey, WantedSub] = {}
    for w in wanted:
        first = out.get(w.key)
        out[w.key] = w if first is None else WantedSub(
            w.product_id, w.unit_price, w.frequency, first.quantity + w.quantity,
            min(first.start_date, w.start_date))
    return out


def diff(held: Sequence[HeldSub], charged: dict[int, Decimal], wanted: Sequence[WantedSub],
         wanted_charges: Sequence[WantedCharge]) -> AmendmentPlan:
    """The plan that brings the deal from ``held`` / ``charged`` (one-time quantity per
    product) to what the new revision orders."""
    held_keys: dict[SubKey, list[HeldSub]] = {}
    for h in held:
        held_keys.setdefault(h.key, []).append(h)
    held_by_key = {k: hs[0] for k, hs in held_keys.items() if len(hs) == 1}
    several = {k: hs for k, hs in held_keys.items() if len(hs) > 1}
    wanted_by_key = _wanted_by_key(w for w in wanted if w.key not in several)
    changes = [QuantityChange(h.id, h.product_id, h.quantity, w.quantity)
               for key, h in held_by_key.items()
               if (w := wanted_by_key.get(key)) is not None and w.quantity != h.quantity]
    added = [w for key, w in wanted_by_key.items() if key not in held_by_key]
    removed = [h for key, h in held_by_key.items() if key not in wanted_by_key]
    for key, hs in several.items():
        pairs, extra, left = match_lines(hs, [w for w in wanted if w.key == key])
        changes += [QuantityChange(h.id, h.product_id, h.quantity, w.quantity)
                    for h, w in pairs if w.quantity != h.quantity]
        added += extra
        removed += left
    per_product: dict[int, WantedCharge] = {}
    for c in wanted_charges:
        first = per_product.get(c.product_id)
        per_product[c.product_id] = c if first is None else WantedCharge(
            c.product_id, first.unit_price, first.quantity + c.quantity,
            min(first.charge_date, c.charge_date))
    charges = tuple(WantedCharge(c.product_id, c.unit_price,
                                 c.quantity - charged.get(c.product_id, Decimal(0)),
                                 c.charge_date)
                    for c in per_product.values()
                    if c.quantity > charged.get(c.product_id, Decimal(0)))
    return AmendmentPlan(tuple(changes), tuple(added), tuple(removed), charges)
