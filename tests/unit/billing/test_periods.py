"""Bill periods, annual terms and proration (pure)."""
from datetime import date
from decimal import Decimal as D

import pytest

from billing_core.domain.periods import annual_term, bill_period, prorate, split_by_period


@pytest.mark.parametrize("on,bcd,expected", [
    (date(2026, 1, 31), 31, (date(2026, 1, 31), date(2026, 2, 28))),
    (date(2026, 2, 28), 31, (date(2026, 2, 28), date(2026, 3, 31))),
    (date(2028, 2, 29), 31, (date(2028, 2, 29), date(2028, 3, 31))),   # leap year
    (date(2028, 2, 28), 31, (date(2028, 1, 31), date(2028, 2, 29))),
    (date(2026, 3, 14), 15, (date(2026, 2, 15), date(2026, 3, 15))),
    (date(2026, 3, 15), 15, (date(2026, 3, 15), date(2026, 4, 15))),
    (date(2026, 12, 31), 1, (date(2026, 12, 1), date(2027, 1, 1))),
])
def test_bill_period(on, bcd, expected) -> None:
    assert bill_period(on, bcd) == expected


def test_annual_term_of_a_leap_day_start() -> None:
    start = date(2028, 2, 29)
    assert annual_term(start, start) == (start, date(2029, 2, 28))
    assert annual_term(date(2029, 3, 1), start) == (date(2029, 2, 28), date(2030, 2, 28))
    assert annual_term(date(2032, 2, 29), start) == (date(2032, 2, 29), date(2033, 2, 28))


def test_split_uses_each_periods_own_length() -> None:
    pieces = list(split_by_period(date(2026, 1, 20), date(2026, 3, 10), "monthly", 1,
                                  date(2026, 1, 20)))
    assert pieces == [(date(2026, 1, 20), date(2026, 2, 1), 31),
                      (date(2026, 2, 1), date(2026, 3, 1), 28),
                      (date(2026, 3, 1), date(2026, 3, 10), 31)]


def test_prorate_full_precision() -> None:
    # 3 x 10.00 x 22/31 = 21.290322580645...: unrounded here, rounded once per line by the caller
    assert prorate(D(3), D("10.00"), 22, 31).quantize(D("0.0001")) == D("21.2903")
    assert prorate(D(3), D("10.00"), 31, 31) == D("30.00")
