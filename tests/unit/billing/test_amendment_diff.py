"""The amendment difference on plain values (billing_core.domain.amendments)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal as D

from billing_core.domain.amendments import (
    HeldSub,
    QuantityChange,
    WantedCharge,
    WantedSub,
    diff,
)

DAY = date(2027, 1, 20)


def _held(sid: int, product: int, quantity: str, price: str | None = None) -> HeldSub:
    return HeldSub(sid, product, None if price is None else D(price), "monthly", D(quantity))


def _wanted(product: int, quantity: str, price: str | None = None) -> WantedSub:
    return WantedSub(product, None if price is None else D(price), "monthly", D(quantity), DAY)


def test_unchanged_revision_is_an_empty_plan() -> None:
    plan = diff([_held(1, 10, "5")], {20: D(1)}, [_wanted(10, "5")],
                [WantedCharge(20, None, D(1), DAY)])
    assert plan.empty


def test_quantity_change_added_and_removed() -> None:
    plan = diff([_held(1, 10, "5"), _held(2, 11, "2")], {}, [_wanted(10, "8"), _wanted(12, "1")],
                [])
    assert plan.changes == (QuantityChange(1, 10, D(5), D(8)),)
    assert [w.product_id for w in plan.added] == [12]
    assert [h.id for h in plan.removed] == [2]


def test_new_price_ends_the_old_subscription_and_adds_one() -> None:
    plan = diff([_held(1, 10, "5", "12.00")], {}, [_wanted(10, "5", "11.00")], [])
    assert [h.id for h in plan.removed] == [1]
    assert [(w.product_id, w.unit_price) for w in plan.added] == [(10, D("11.00"))]
    assert plan.changes == ()


def test_lines_of_one_key_are_summed() -> None:
    plan = diff([_held(1, 10, "5")], {}, [_wanted(10, "3"), _wanted(10, "2")], [])
    assert plan.empty


def test_one_time_items_are_never_charged_twice() -> None:
    """Setup x1 charged by revision 1; revision 2 orders 3: 2 more; revision 3 orders 1: none."""
    more = diff([], {20: D(1)}, [], [WantedCharge(20, None, D(3), DAY)])
    assert [(c.product_id, c.quantity) for c in more.charges] == [(20, D(2))]
    fewer = diff([], {20: D(3)}, [], [WantedCharge(20, None, D(1), DAY)])
    assert fewer.empty


def test_two_held_subscriptions_of_one_key_are_matched_line_by_line() -> None:
    """Regression (issue 14): two subscriptions of product 10 at one price (ids 1: 10 seats,
    2: 5 seats, from two lines of the first quote) made every amendment of the deal raise
    ``AmbiguousAmendment``. They are matched line by line instead:
    - lines 10 and 8: the 10 matches subscription 1 exactly; the 8 pairs with the one left,
      subscription 2: 5 -> 8;
    - lines 12 and 5: the 5 matches subscription 2; the 12 pairs with subscription 1: 10 -> 12;
    - one line of 10: subscription 1 unchanged, subscription 2 removed;
    - lines 10, 5 and 3: both unchanged, the 3 is added as a subscription of its own;
    - lines 10 and 5 again: nothing."""
    held = [_held(1, 10, "10"), _held(2, 10, "5")]
    plan = diff(held, {}, [_wanted(10, "10"), _wanted(10, "8")], [])
    assert (plan.changes, plan.added, plan.removed) == (
        (QuantityChange(2, 10, D(5), D(8)),), (), ())
    plan = diff(held, {}, [_wanted(10, "12"), _wanted(10, "5")], [])
    assert (plan.changes, plan.added, plan.removed) == (
        (QuantityChange(1, 10, D(10), D(12)),), (), ())
    plan = diff(held, {}, [_wanted(10, "10")], [])
    assert (plan.changes, plan.added, [h.id for h in plan.removed]) == ((), (), [2])
    plan = diff(held, {}, [_wanted(10, "10"), _wanted(10, "5"), _wanted(10, "3")], [])
    assert (plan.changes, [w.quantity for w in plan.added], plan.removed) == ((), [D(3)], ())
    assert diff(held, {}, [_wanted(10, "5"), _wanted(10, "10")], []).empty


def test_line_matching_does_not_depend_on_the_held_rows_order() -> None:
    """The held subscriptions are taken in creation order (id) whatever order they come in:
    held 2 (5 seats) and 1 (10 seats), lines 7 and 9 (no exact match) -> 1: 10 -> 7 and
    2: 5 -> 9, the first line with the first-created subscription."""
    plan = diff([_held(2, 10, "5"), _held(1, 10, "10")], {}, [_wanted(10, "7"), _wanted(10, "9")],
                [])
    assert sorted(plan.changes, key=lambda c: c.subscription_id) == [
        QuantityChange(1, 10, D(10), D(7)), QuantityChange(2, 10, D(5), D(9))]
