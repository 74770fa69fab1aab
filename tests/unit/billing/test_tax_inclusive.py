"""Tax-inclusive prices: each line's priced amount holds its tax; the line keeps the net, the
invoice's total is what was priced. Exclusive (tax added on top) stays the default."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing_core.domain.invoicing import (
    AccountTerms,
    Charge,
    Grant,
    Product,
    Sub,
    Usage,
    compute_invoice,
)
from billing_core.domain.rating import Price, PriceBook

START, END = date(2026, 3, 1), date(2026, 4, 1)
RATE = Decimal("0.19")
PRODUCTS = {1: Product("Seat"), 2: Product("Setup", None), 3: Product("Calls", None)}
BOOK = PriceBook([Price(1, "EUR", date(2020, 1, 1), Decimal("119.00")),
                  Price(2, "EUR", date(2020, 1, 1), Decimal("10.00")),
                  Price(3, "EUR", date(2020, 1, 1), Decimal("0.50"))])


def _invoice(rate=RATE, inclusive=False, grants=()):
    return compute_invoice(
        AccountTerms(1, "EUR", 1), START, END, START,
        [Sub(1, 1, Decimal(1), "monthly", START)],
        [Charge(1, 2, Decimal(1), START)],
        [Usage(1, 3, Decimal(100), date(2026, 2, 10))],
        list(grants), PRODUCTS, BOOK, rate, tax_inclusive=inclusive)


def test_exclusive_adds_tax_on_top_by_default():
    draft = _invoice()
    assert [(ln.kind, ln.amount_minor, ln.tax_minor) for ln in draft.lines] == [
        ("recurring", 11900, 2261), ("one_time", 1000, 190), ("usage", 5000, 950)]
    assert (draft.subtotal_minor, draft.tax_minor, draft.total_minor) == (17900, 3401, 21301)


def test_inclusive_takes_the_tax_out_of_each_line():
    draft = _invoice(inclusive=True)
    # 119.00 holds 19.00; 10.00 holds round(1000 x 0.19 / 1.19) = round(159.66) = 1.60
    assert [(ln.kind, ln.amount_minor, ln.tax_minor) for ln in draft.lines] == [
        ("recurring", 10000, 1900), ("one_time", 840, 160), ("usage", 4202, 798)]
    assert (draft.subtotal_minor, draft.tax_minor, draft.total_minor) == (15042, 2858, 17900)
    assert all(ln.tax_rate == RATE for ln in draft.lines)


def test_inclusive_credit_draw_removes_gross_usage_and_its_tax():
    draft = _invoice(inclusive=True, grants=[Grant(7, 2000, None)])
    draw = next(ln for ln in draft.lines if ln.kind == "credit_draw")
    assert draw.amount_minor + draw.tax_minor == -2000
    assert draft.total_minor == 17900 - 2000
    assert draft.total_minor == draft.subtotal_minor + draft.tax_minor


def test_a_zero_rate_is_the_same_either_way():
    a, b = _invoice(rate=Decimal(0)), _invoice(rate=Decimal(0), inclusive=True)
    assert [(ln.amount_minor, ln.tax_minor) for ln in a.lines] == \
        [(ln.amount_minor, ln.tax_minor) for ln in b.lines]


@given(rate=st.sampled_from([Decimal("0.0725"), Decimal("0.19"), Decimal("0.2"),
                             Decimal("0.05"), Decimal("0.255")]),
       price=st.integers(min_value=1, max_value=10**7))
def test_every_line_keeps_what_was_priced(rate, price):
    book = PriceBook([Price(2, "EUR", date(2020, 1, 1), Decimal(price) / 100)])
    draft = compute_invoice(AccountTerms(1, "EUR", 1), START, END, START, [],
                            [Charge(1, 2, Decimal(1), START)], [], [], PRODUCTS, book, rate,
                            tax_inclusive=True)
    line = draft.lines[0]
    assert line.amount_minor + line.tax_minor == price
    assert abs(Decimal(line.tax_minor) - Decimal(price) * rate / (1 + rate)) <= Decimal("0.5")
    assert draft.total_minor == price
