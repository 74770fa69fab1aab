"""Rating by hand: per unit, graduated and volume tiers (amounts unrounded)."""
from datetime import date
from decimal import Decimal as D

import pytest

from billing_core.domain.errors import ValidationError
from billing_core.domain.rating import Price, Tier, check_tiers, rate

TIERS = (Tier(D(100), D("0.10"), 0), Tier(D(1000), D("0.08"), 0), Tier(None, D("0.05"), 0))


def _price(model: str, tiers=TIERS, currency="USD") -> Price:
    return Price(1, currency, date(2026, 1, 1), tiers[0].unit_price if tiers else D("2.5"),
                 model, tiers)


def test_per_unit() -> None:
    assert rate(_price("per_unit", ()), D(3)) == D("7.5")


def test_graduated_prices_each_unit_in_its_tier() -> None:
    # 1500 units: 100 x 0.10 = 10 ; 900 x 0.08 = 72 ; 500 x 0.05 = 25 -> 107
    assert rate(_price("graduated"), D(1500)) == D(107)
    # exactly on a bound: 100 x 0.10 = 10
    assert rate(_price("graduated"), D(100)) == D(10)


def test_volume_prices_every_unit_at_the_tier_of_the_total() -> None:
    # 1500 units fall in the open tier: 1500 x 0.05 = 75
    assert rate(_price("volume"), D(1500)) == D(75)
    # 1000 falls in the second tier (bound inclusive): 1000 x 0.08 = 80
    assert rate(_price("volume"), D(1000)) == D(80)


def test_flat_fees_per_tier_touched() -> None:
    tiers = (Tier(D(10), D(1), 500), Tier(None, D("0.5"), 200))   # fees 5.00 and 2.00
    # graduated 12: 10 x 1 + 5.00 + 2 x 0.5 + 2.00 = 18
    assert rate(_price("graduated", tiers), D(12)) == D(18)
    # volume 12: 12 x 0.5 + 2.00 = 8
    assert rate(_price("volume", tiers), D(12)) == D(8)
    assert rate(_price("volume", tiers), D(0)) == 0


@pytest.mark.parametrize("tiers,field", [
    ((), "tiers"),
    ((Tier(None, D(1)), Tier(D(5), D(1))), "tiers[0].up_to"),
    ((Tier(D(5), D(1)), Tier(D(5), D(1))), "tiers[1].up_to"),
    ((Tier(D(5), D(-1)),), "tiers[0].unit_price"),
])
def test_bad_tiers_name_the_field(tiers, field) -> None:
    with pytest.raises(ValidationError) as info:
        check_tiers(tiers)
    assert info.value.field == field
