import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.domain.errors import CurrencyMismatch, InvalidAmount, UnknownCurrency
from billing_core.domain.money import (
    MAX_MINOR,
    Money,
    from_minor,
    parse_amount,
    round_money,
    to_decimal,
    to_minor,
)


@pytest.mark.parametrize("currency,amount,minor", [
    ("USD", "10.005", 1001), ("USD", "10.004", 1000), ("JPY", "1234.5", 1235),
    ("BHD", "1.0005", 1001), ("EUR", "-0.005", -1),
])
def test_round_half_up_to_minor_units(currency, amount, minor):
    assert to_minor(Decimal(amount), currency) == minor


def test_floats_are_refused_with_the_field_named():
    with pytest.raises(InvalidAmount, match="amount=0.1"):
        to_decimal(0.1, "amount")


def test_parse_amount_refuses_excess_decimals_and_negatives():
    assert parse_amount("12.34", "USD") == 1234
    with pytest.raises(InvalidAmount, match="more decimals"):
        parse_amount("12.345", "USD")
    with pytest.raises(InvalidAmount, match="negative"):
        parse_amount("-1", "USD")
    with pytest.raises(InvalidAmount, match="not a plain decimal"):
        parse_amount("ten", "USD")
    for huge in ("1000000000000000", "-100000000000000000000"):
        with pytest.raises(InvalidAmount, match="too large|negative"):
            parse_amount(huge, "BHD")
    with pytest.raises(UnknownCurrency, match="XXX"):
        parse_amount("1", "XXX")


@pytest.mark.parametrize("currency, largest, shown", [
    ("USD", "10000000000000.00", "10,000,000,000,000.00"),
    ("JPY", "1000000000000000", "1,000,000,000,000,000"),
    ("BHD", "1000000000000.000", "1,000,000,000,000.000"),
])
def test_the_amount_limit_is_one_count_of_minor_units_in_every_currency(currency, largest, shown):
    """One limit (MAX_MINOR minor units) for every amount a user gives, documents and credit
    limits alike: the largest passes, one minor unit more is refused and the message names
    the limit in the currency."""
    assert parse_amount(largest, currency) == MAX_MINOR
    assert parse_amount("-" + largest, currency, allow_negative=True) == -MAX_MINOR
    above = str(from_minor(MAX_MINOR + 1, currency))
    with pytest.raises(InvalidAmount, match=re.escape(f"too large (the limit is {shown} {currency})")):
        parse_amount(above, currency)


def test_to_minor_accepts_a_currency_in_any_case_and_refuses_an_unknown_one():
    assert to_minor(Decimal("1.005"), "usd") == to_minor(Decimal("1.005"), "USD") == 101
    with pytest.raises(UnknownCurrency):
        to_minor(Decimal(1), "XXX")


def test_money_never_mixes_currencies():
    with pytest.raises(CurrencyMismatch):
        Money(Decimal("1"), "USD") + Money(Decimal("1"), "EUR")
    assert (Money(Decimal("1.10"), "USD") + Money(Decimal("2.05"), "USD")).minor == 315


@given(st.integers(min_value=-10**15, max_value=10**15),
       st.sampled_from(["USD", "JPY", "BHD"]))
def test_minor_round_trip(minor, currency):
    assert to_minor(from_minor(minor, currency), currency) == minor
    assert round_money(from_minor(minor, currency), currency) == from_minor(minor, currency)


@pytest.mark.parametrize("text", ["1e3", "1E+3", "1e30", "\uff11\uff10", "1_000", "1,000.00",
                                  "10.", ".5", "NaN", "Infinity", "0x10", "--1", ""])
def test_an_amount_given_as_text_is_written_plainly(text):
    """What the API's Amount pattern refuses, the service refuses too (the CLI calls it
    directly): 1e3 was taken as 1000.00 and full-width digits as 10.00."""
    with pytest.raises(InvalidAmount) as refused:
        parse_amount(text, "USD")
    assert refused.value.field == "amount" and refused.value.value == text


def test_plain_amounts_and_exact_numbers_are_taken():
    assert [parse_amount(v, "USD") for v in ("10", " 10.50 ", "+3", "0.01")] == [
        1000, 1050, 300, 1]
    assert parse_amount(Decimal("1E+3"), "USD") == 100000       # a number, not text
    assert parse_amount(7, "JPY") == 7
