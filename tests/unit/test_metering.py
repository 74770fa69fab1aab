"""billing_core.domain.metering on plain values: exact event values, metric checks, versions,
the rating of a key's parts (rounded as usage lines are)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from billing_core.domain.errors import ValidationError
from billing_core.domain.metering import (
    Metric,
    check_filters,
    check_metric,
    from_e6,
    parse_value,
    plain_properties,
    rate_parts,
    to_e6,
    version_for,
)
from billing_core.domain.rating import Price, Tier


@pytest.mark.parametrize("raw, value", [("1.5", D("1.5")), (3, D(3)), (D("0.000001"),
                                         D("0.000001")), (" -2 ", D(-2))])
def test_values_are_exact(raw, value) -> None:
    assert parse_value(raw) == value
    assert from_e6(to_e6(value)) == value


@pytest.mark.parametrize("raw, says", [(1.5, "float"), ("0.0000001", "6 decimals"),
                                       ("abc", "not a number"), (True, "bool"),
                                       ("1e12", "below"), ("NaN", "finite"), (None, "empty")])
def test_bad_values_name_the_problem(raw, says) -> None:
    with pytest.raises(ValidationError) as info:
        parse_value(raw)
    assert info.value.field == "value" and says in str(info.value)


def test_metric_checks_name_the_field() -> None:
    base = Metric("calls", date(2026, 1, 1), "sum", 1)
    assert check_metric(base) is base
    for bad, field in ((Metric("1x", date(2026, 1, 1), "sum", 1), "code"),
                       (Metric("c", date(2026, 1, 1), "avg", 1), "aggregation"),
                       (Metric("c", date(2026, 1, 1), "unique_count", 1), "property"),
                       (Metric("c", date(2026, 1, 1), "sum", 1, property="user"), "property"),
                       (Metric("c", date(2026, 1, 1), "sum", 1, group_by="a b"), "group_by")):
        with pytest.raises(ValidationError) as info:
            check_metric(bad)
        assert info.value.field == field
    assert check_filters({"env": "prod", "tier": ["a", 2]}) == {"env": ("prod",),
                                                               "tier": ("a", "2")}
    with pytest.raises(ValidationError):
        check_filters({"env": []})


def test_the_version_in_effect_on_the_period_start() -> None:
    v1 = Metric("c", date(2026, 1, 15), "count", 1)
    v2 = Metric("c", date(2026, 3, 1), "sum", 1)
    assert version_for([v1, v2], date(2026, 1, 1)) is v1      # before the first: the first
    assert version_for([v1, v2], date(2026, 2, 1)) is v1
    assert version_for([v1, v2], date(2026, 3, 1)) is v2


def test_tiers_on_the_total_across_price_rows() -> None:
    """BILLING.md rule 6: 3,000 + 4,500 units on the same ladder in two rows: 218.00 and
    327.00 (545.00 for 7,500 units)."""
    ladder = (Tier(D(1000), D("0.10")), Tier(D(5000), D("0.08")), Tier(None, D("0.05")))
    a = Price(1, "USD", date(2020, 1, 1), D(0), "graduated", ladder)
    b = Price(1, "USD", date(2026, 3, 16), D(0), "graduated", ladder)
    parts = rate_parts([(a, D(3000)), (b, D(4500))], "USD")
    assert [p.amount_minor for p in parts] == [21800, 32700]
    assert [p.price_from for p in parts] == [date(2020, 1, 1), date(2026, 3, 16)]


def test_properties_keep_no_floats() -> None:
    assert plain_properties({"cpu": D(2), "share": D("0.5"), "on": True, "x": None}) == {
        "cpu": 2, "share": "0.5", "on": True, "x": None}
    with pytest.raises(ValidationError) as info:
        plain_properties({"ratio": 0.5})
    assert info.value.field == "properties.ratio"
    with pytest.raises(ValidationError):
        plain_properties(["a"])
