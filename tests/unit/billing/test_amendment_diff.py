"""The amendment difference on plain values (billing_core.domain.amendments)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from billing_core.domain.amendments import (
    AmbiguousAmendment,
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


def test_two_held_subscriptions_of_one_key_refuse_the_amendment() -> None:
    with pytest.raises(AmbiguousAmendment, match="amend by hand"):
        diff([_held(1, 10, "5"), _held(2, 10, "1")], {}, [_wanted(10, "8")], [])
