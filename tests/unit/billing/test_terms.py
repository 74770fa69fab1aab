"""Committed terms on plain values (billing_core/domain/terms.py): co-terming, renewal terms,
and what a decrease or an end inside a term does under each policy."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from billing_core.domain.errors import RuleViolation, ValidationError
from billing_core.domain.terms import (
    Term,
    TermDecrease,
    check_months,
    decrease_date,
    end_date,
    first_term_end,
    make_term,
    policy,
    term_on,
)


def test_monthly_billed_term_is_co_termed_to_the_next_bill_cycle_day() -> None:
    """20 Jan 2026 + 12 months = 20 Jan 2027, extended to the next BCD 1: 1 Feb 2027. A start
    on the BCD needs no extension; BCD 31 falls on a short month's last day."""
    assert first_term_end(date(2026, 1, 20), 12, "monthly", 1, "f") == date(2027, 2, 1)
    assert first_term_end(date(2026, 1, 1), 12, "monthly", 1, "f") == date(2027, 1, 1)
    assert first_term_end(date(2026, 1, 31), 1, "monthly", 31, "f") == date(2026, 2, 28)
    assert first_term_end(date(2026, 1, 20), 1, "monthly", 15, "f") == date(2026, 3, 15)


def test_annual_billed_term_ends_on_its_anniversary_and_must_be_whole_years() -> None:
    assert first_term_end(date(2026, 3, 10), 12, "annual", 1, "f") == date(2027, 3, 10)
    assert first_term_end(date(2024, 2, 29), 12, "annual", 1, "f") == date(2025, 2, 28)
    with pytest.raises(ValidationError) as info:
        first_term_end(date(2026, 3, 10), 18, "annual", 1, "items[0].term_months")
    assert (info.value.field, info.value.value) == ("items[0].term_months", 18)


def test_renewal_terms_follow_one_another_only_with_auto_renew() -> None:
    """12 months from 20 Jan 2026 at BCD 1: [20 Jan 2026, 1 Feb 2027), then (auto-renew)
    [1 Feb 2027, 1 Feb 2028). Without auto-renew nothing is committed after the first."""
    renewing = make_term(12, date(2026, 1, 20), date(2027, 2, 1), True, "monthly", 1)
    assert term_on(renewing, date(2027, 1, 31)) == (date(2026, 1, 20), date(2027, 2, 1))
    assert term_on(renewing, date(2027, 2, 1)) == (date(2027, 2, 1), date(2028, 2, 1))
    assert term_on(renewing, date(2026, 1, 19)) is None
    single = Term(12, date(2026, 1, 20), date(2027, 2, 1), False, 1)
    assert term_on(single, date(2027, 2, 1)) is None
    assert make_term(None, date(2026, 1, 1), None, True, "monthly", 1) is None


def test_a_decrease_inside_a_term_is_refused_or_deferred_an_increase_is_not() -> None:
    term = Term(12, date(2026, 1, 1), date(2027, 1, 1), True, 1)
    five, three, eight = Decimal(5), Decimal(3), Decimal(8)
    assert decrease_date(term, "at_term_end", date(2026, 3, 10), five, three) == date(2027, 1, 1)
    assert decrease_date(term, "refuse", date(2026, 3, 10), five, eight) == date(2026, 3, 10)
    assert decrease_date(term, "refuse", date(2027, 1, 1), five, three) == date(2027, 1, 1)
    assert decrease_date(None, "refuse", date(2026, 3, 10), five, three) == date(2026, 3, 10)
    with pytest.raises(RuleViolation) as info:
        decrease_date(term, "refuse", date(2026, 3, 10), five, three)
    assert (info.value.field, info.value.value) == ("quantity", three)
    assert "2026-01-01 to 2026-12-31" in str(info.value)


@pytest.mark.parametrize(("rule", "expected"), [
    ("allowed", date(2026, 6, 15)), ("at_term_end", date(2027, 1, 1)), ("refuse", None)])
def test_an_end_inside_a_term_follows_early_termination(rule: str, expected: date | None) -> None:
    term = Term(12, date(2026, 1, 1), date(2027, 1, 1), True, 1)
    if expected is None:
        with pytest.raises(RuleViolation) as info:
            end_date(term, rule, date(2026, 6, 15))
        assert (info.value.field, info.value.value) == ("at", date(2026, 6, 15))
    else:
        assert end_date(term, rule, date(2026, 6, 15)) == expected
    # a renewal boundary is free under every policy; the first day is not
    assert end_date(term, rule, date(2027, 1, 1)) == date(2027, 1, 1)
    if rule == "at_term_end":
        assert end_date(term, rule, date(2026, 1, 1)) == date(2027, 1, 1)


def test_bad_settings_name_field_and_value() -> None:
    assert check_months(0, "term_months") is None
    assert check_months(36, "term_months") == 36
    for bad in (-1, 121, "12", True):
        with pytest.raises(ValidationError) as info:
            check_months(bad, "term_months")
        assert (info.value.field, info.value.value) == ("term_months", bad)
    assert policy(TermDecrease, "refuse", "term_decrease") == "refuse"
    with pytest.raises(ValidationError) as info:
        policy(TermDecrease, "later", "term_decrease")
    assert (info.value.field, info.value.value) == ("term_decrease", "later")
