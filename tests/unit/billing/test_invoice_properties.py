"""Property-based: random subscriptions, quantity changes and usage, billed month after month.

Invariants: total = sum of rounded lines + their tax; no negative total; every amount an int
and every quantity/price a Decimal (no float anywhere); billing the same period again after
marking what was billed bills nothing.
"""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.domain.invoicing import (
    AccountTerms,
    Change,
    Draft,
    Grant,
    Product,
    Sub,
    Usage,
    compute_invoice,
)
from billing_core.domain.periods import add_months, bill_period
from billing_core.domain.rating import Price, PriceBook, Tier

PRICES = [Decimal(x) for x in ("0.01", "9.99", "10.00", "12.345", "33.33", "1000")]
BASE = date(2026, 1, 1)

days = st.integers(min_value=0, max_value=150).map(lambda n: BASE + timedelta(days=n))
quantities = st.integers(min_value=1, max_value=40).map(Decimal)


@st.composite
def scenarios(draw):
    currency = draw(st.sampled_from(["USD", "JPY", "BHD"]))
    bcd = draw(st.integers(min_value=1, max_value=31))
    subs = []
    for i in range(draw(st.integers(min_value=0, max_value=3))):
        start = draw(days)
        q = draw(quantities)
        changes, current, eff = [], q, start
        for k in range(draw(st.integers(min_value=0, max_value=3))):
            eff = eff + timedelta(days=draw(st.integers(min_value=1, max_value=40)))
            new = draw(quantities)
            changes.append(Change(100 * i + k, eff, current, new))
            current = new
        subs.append(Sub(i + 1, draw(st.sampled_from([1, 2])), current,
                        draw(st.sampled_from(["monthly", "annual"])), start,
                        unit_price=draw(st.none() | st.sampled_from(PRICES)), changes=changes))
    usage = [Usage(n, 3, Decimal(draw(st.integers(0, 5000))), draw(days))
             for n in range(draw(st.integers(min_value=0, max_value=6)))]
    grants = [Grant(n, draw(st.integers(1, 50000)), draw(st.none() | days))
              for n in range(draw(st.integers(min_value=0, max_value=3)))]
    rate = draw(st.sampled_from([Decimal(0), Decimal("0.0725"), Decimal("0.2")]))
    price_change = draw(days)
    return currency, bcd, subs, usage, grants, rate, price_change


def _book(currency: str, change: date) -> PriceBook:
    tiers = (Tier(Decimal(1000), Decimal("0.013"), 0), Tier(None, Decimal("0.007"), 0))
    return PriceBook([
        Price(1, currency, date(2020, 1, 1), Decimal("10.00")),
        Price(1, currency, change, Decimal("12.50")),
        Price(2, currency, date(2020, 1, 1), Decimal("3.333")),
        Price(3, currency, date(2020, 1, 1), Decimal("0.013"), "graduated", tiers),
    ])


def _mark(draft: Draft, subs: list[Sub], usage: list[Usage], grants: list[Grant]) -> None:
    """What the bill run writes: billed_through, consumed changes/usage, grant balances."""
    for sub in subs:
        if sub.id in draft.billed_through:
            sub.billed_through = draft.billed_through[sub.id]
        for c in sub.changes:
            if c.id in draft.changes:
                c.invoiced = True
    usage[:] = [u for u in usage if u.id not in set(draft.usage)]
    for grant_id, amount in draft.draws:
        g = next(g for g in grants if g.id == grant_id)
        g.remaining_minor -= amount
        assert g.remaining_minor >= 0


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_invoices_add_up_and_rerun_bills_nothing(scenario) -> None:
    currency, bcd, subs, usage, grants, rate, price_change = scenario
    acct = AccountTerms(1, currency, bcd)
    products = {1: Product("Seat"), 2: Product("Plan", "year"), 3: Product("Calls", None)}
    book = _book(currency, price_change)
    start = bill_period(BASE, bcd)[0]
    for month in range(8):
        p_start, p_end = bill_period(add_months(start, month, bcd), bcd)
        draft = compute_invoice(acct, p_start, p_end, p_start, subs, [], list(usage), grants,
                                products, book, rate)
        if draft is None:
            continue
        for line in draft.lines:
            assert type(line.amount_minor) is int and type(line.tax_minor) is int
            for v in (line.quantity, line.unit_price, line.tax_rate):
                assert v is None or isinstance(v, Decimal)
        assert draft.subtotal_minor == sum(ln.amount_minor for ln in draft.lines)
        assert draft.tax_minor == sum(ln.tax_minor for ln in draft.lines)
        assert draft.total_minor == draft.subtotal_minor + draft.tax_minor >= 0
        _mark(draft, subs, usage, grants)
        again = compute_invoice(acct, p_start, p_end, p_start, subs, [], list(usage), grants,
                                products, book, rate)
        assert again is None
