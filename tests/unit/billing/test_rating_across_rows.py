"""Issue 14: tiers apply to a usage period's total quantity across price rows; tax once per rate
on the base after credits; a grant expiring inside a usage period pays for the usage before its
expiry. Figures worked by hand in each docstring."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.domain.invoicing import (
    AccountTerms,
    Grant,
    Product,
    TaxBase,
    Usage,
    compute_invoice,
)
from billing_core.domain.money import round_minor, to_minor
from billing_core.domain.rating import Price, PriceBook, Tier, rate, running_amounts

D = Decimal
START, END = date(2026, 4, 1), date(2026, 5, 1)       # the invoice billing March's usage
LADDER = (Tier(D(1000), D("0.10")), Tier(D(5000), D("0.08")), Tier(None, D("0.05")))
PRODUCTS = {1: Product("Calls", None)}


def _book(model: str, second: tuple[Tier, ...] = LADDER) -> PriceBook:
    return PriceBook([Price(1, "USD", date(2020, 1, 1), D("0.10"), model, LADDER, id=1),
                      Price(1, "USD", date(2026, 3, 16), second[0].unit_price, model, second,
                            id=2)])


def _usage(*pairs: tuple[date, str]) -> list[Usage]:
    return [Usage(i, 1, D(q), day) for i, (day, q) in enumerate(pairs, 1)]


SPLIT = _usage((date(2026, 3, 5), "3000"), (date(2026, 3, 20), "4500"))


def _invoice(book: PriceBook, usage: list[Usage] = SPLIT, grants: list[Grant] | None = None,
             tax_rate: Decimal = Decimal(0), inclusive: bool = False):
    draft = compute_invoice(AccountTerms(1, "USD", 1), START, END, START, [], [], usage,
                            grants or [], PRODUCTS, book, tax_rate, inclusive)
    assert draft is not None
    return draft


def _usage_amounts(draft) -> list[int]:
    return [ln.amount_minor for ln in draft.lines if ln.kind == "usage"]


def test_graduated_tiers_do_not_restart_at_a_new_price_row():
    """3,000 units before and 4,500 after a new row (same tiers) on 16 March: 7,500 units.
    Graduated on the total: 1,000 x 0.10 + 4,000 x 0.08 + 2,500 x 0.05 = 100 + 320 + 125
    = 545.00 (restarting the ladder per row gave 260.00 + 380.00 = 640.00).
    Split by units: 545 x 3,000 / 7,500 = 218.00 and 545 x 4,500 / 7,500 = 327.00."""
    draft = _invoice(_book("graduated"))
    assert _usage_amounts(draft) == [21800, 32700]
    assert draft.total_minor == 54500
    assert [ln.quantity for ln in draft.lines] == [D(3000), D(4500)]
    assert "3000 of 7500" in draft.lines[0].description
    assert "price from 2026-03-16" in draft.lines[1].description


def test_volume_tiers_take_the_tier_of_the_period_total():
    """Volume: 7,500 units fall in the open tier, every unit at 0.05 = 375.00 (per row the
    3,000 and 4,500 would each have been at 0.08: 240.00 + 360.00). Split: 375 x 3,000 / 7,500
    = 150.00 and 375 x 4,500 / 7,500 = 225.00."""
    draft = _invoice(_book("volume"))
    assert _usage_amounts(draft) == [15000, 22500]
    assert draft.total_minor == 37500


def test_rows_with_different_tiers_take_their_share_of_their_own_ladder():
    """Row 2 (from the 16th): <=1,000 @0.12, <=5,000 @0.09, above @0.06. Each row rates the
    whole 7,500 on its own ladder and keeps its units' share:
    row 1: 545.00 x 3,000 / 7,500 = 218.00;
    row 2: (1,000 x 0.12 + 4,000 x 0.09 + 2,500 x 0.06 = 120 + 360 + 150 = 630.00)
           x 4,500 / 7,500 = 378.00; total 596.00."""
    dearer = (Tier(D(1000), D("0.12")), Tier(D(5000), D("0.09")), Tier(None, D("0.06")))
    draft = _invoice(_book("graduated", dearer))
    assert _usage_amounts(draft) == [21800, 37800]


def test_split_lines_round_their_running_total_so_they_add_up():
    """Three rows, one unit each, tiers <=1 @0.10, above @0.05: the 3 units cost 0.10 + 0.05 +
    0.05 = 0.20, a third each = 0.0667. Rounded line by line: 0.07 x 3 = 0.21. Rounded as a
    running total: 0.0667 -> 0.07, 0.1333 -> 0.13, 0.20 -> 0.20; lines 0.07, 0.06, 0.07."""
    tiers = (Tier(D(1), D("0.10")), Tier(None, D("0.05")))
    book = PriceBook([Price(1, "USD", day, D("0.10"), "graduated", tiers, id=i)
                      for i, day in enumerate((date(2020, 1, 1), date(2026, 3, 10),
                                               date(2026, 3, 20)), 1)])
    usage = _usage((date(2026, 3, 1), "1"), (date(2026, 3, 15), "1"), (date(2026, 3, 25), "1"))
    assert _usage_amounts(_invoice(book, usage)) == [7, 6, 7]


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(["per_unit", "graduated", "volume"]),
       bounds=st.lists(st.integers(1, 5000), min_size=1, max_size=3, unique=True),
       prices=st.lists(st.integers(0, 5000), min_size=4, max_size=4),
       fee=st.integers(0, 500),
       rows=st.integers(1, 3),
       events=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10**6), st.integers(0, 3)),
                       min_size=1, max_size=12))
def test_usage_split_across_identical_rows_costs_the_total_rated_once(model, bounds, prices,
                                                                      fee, rows, events):
    """Whatever the days and quantities, units under up to 3 rows with identical tiers cost,
    summed over the lines, exactly the period's total quantity rated once, rounded once."""
    up_to = sorted(bounds)
    tiers = tuple(Tier(D(b), D(p) / 1000, fee) for b, p in zip(up_to, prices, strict=False)) \
        + (Tier(None, D(prices[-1]) / 1000),)
    starts = [date(2020, 1, 1), date(2026, 3, 11), date(2026, 3, 21)][:rows]
    book = PriceBook([Price(1, "USD", s, tiers[0].unit_price, model, tiers, id=i)
                      for i, s in enumerate(starts, 1)])
    usage = [Usage(i, 1, D(q) / 10**scale, date(2026, 3, 1) + timedelta(days=day))
             for i, (day, q, scale) in enumerate(events, 1)]
    total = sum((u.quantity for u in usage), D(0))
    draft = compute_invoice(AccountTerms(1, "USD", 1), START, END, START, [], [], usage, [],
                            PRODUCTS, book)
    single = to_minor(rate(book.price_for(1, "USD", date(2026, 3, 1)), total), "USD")
    assert sum(_usage_amounts(draft)) == single if draft is not None else single == 0


def test_running_amounts_end_on_the_total_exactly():
    """Identical ladders: the last running amount is rate(7,500) itself, 545 exactly."""
    price = Price(1, "USD", date(2020, 1, 1), D("0.10"), "graduated", LADDER)
    assert running_amounts([(price, D(3000)), (price, D(4500))]) == [D(218), D(545)]
    assert running_amounts([(price, D(0))]) == [D(0)]


def test_tax_is_computed_once_on_the_base_left_after_credits():
    """Usage 545.00 - prepaid credit 155.00 = 390.00 taxable at 8.25 %: 32.175 -> 32.18.
    Per line it was round(44.9625) - round(12.7875) = 44.96 - 12.79 = 32.17.
    The lines show their running share: usage round(545.00 x 8.25 %) = 44.96 (on the first
    line 218.00 -> round(17.985) = 17.99, then 44.96 - 17.99 = 26.97), the draw 32.18 - 44.96
    = -12.78; they add up to 32.18."""
    draft = _invoice(_book("graduated"), grants=[Grant(9, 15500, None)], tax_rate=D("0.0825"))
    assert [(ln.kind, ln.amount_minor, ln.tax_minor) for ln in draft.lines] == [
        ("usage", 21800, 1799), ("usage", 32700, 2697), ("credit_draw", -15500, -1278)]
    assert draft.taxes == [TaxBase(D("0.0825"), 39000, 3218)]
    assert (draft.subtotal_minor, draft.tax_minor, draft.total_minor) == (39000, 3218, 42218)


def test_tax_inclusive_takes_the_tax_out_of_the_base_left_after_credits():
    """Prices include 8.25 %: gross 545.00 - credit 155.00 = 390.00 holds
    390.00 x 0.0825 / 1.0825 = 29.7229 -> 29.72 of tax; base 390.00 - 29.72 = 360.28.
    Per line it was round(41.5358) - round(11.8129) = 41.54 - 11.81 = 29.73.
    The total stays what was priced, 390.00."""
    draft = _invoice(_book("graduated"), grants=[Grant(9, 15500, None)], tax_rate=D("0.0825"),
                     inclusive=True)
    assert draft.taxes == [TaxBase(D("0.0825"), 36028, 2972)]
    assert (draft.subtotal_minor, draft.tax_minor, draft.total_minor) == (36028, 2972, 39000)
    assert sum(ln.tax_minor for ln in draft.lines) == 2972
    assert sum(ln.amount_minor + ln.tax_minor for ln in draft.lines) == 39000


def test_without_tax_the_invoice_keeps_no_tax_base():
    assert _invoice(_book("graduated")).taxes == []


CALLS = PriceBook([Price(1, "USD", date(2020, 1, 1), D("0.50"))])
HALVES = _usage((date(2026, 3, 10), "100"), (date(2026, 3, 25), "100"))


def test_a_grant_expiring_inside_the_usage_period_pays_for_the_usage_before_its_expiry():
    """200 units at 0.50 = 100.00, 100 of them on 10 March, 100 on 25 March. Grant A (80.00)
    expires 15 March: it may pay for the usage dated up to then, 100.00 x 100 / 200 = 50.00,
    and draws 50.00. Grant B (100.00, no expiry) draws the other 50.00.
    (Before: A, expired before 31 March, drew nothing and B drew 100.00.)"""
    draft = _invoice(CALLS, HALVES, grants=[Grant(1, 8000, date(2026, 3, 15)),
                                            Grant(2, 10000, None)])
    assert draft.draws == [(1, 5000), (2, 5000)]
    assert draft.total_minor == 0


def test_a_grant_expiring_inside_the_period_draws_at_most_its_remainder():
    """Grant A (30.00, expires 15 March) may pay up to 50.00 of the 10 March usage: draws its
    30.00; nothing else to draw from, the invoice is 100.00 - 30.00 = 70.00."""
    draft = _invoice(CALLS, HALVES, grants=[Grant(1, 3000, date(2026, 3, 15))])
    assert draft.draws == [(1, 3000)]
    assert draft.total_minor == 7000


def test_a_grant_expired_before_all_the_usage_draws_nothing():
    """Grant A expires 9 March, before the first usage day (10 March): it pays for nothing."""
    draft = _invoice(CALLS, HALVES, grants=[Grant(1, 3000, date(2026, 3, 9))])
    assert draft.draws == []
    assert draft.total_minor == 10000


def test_grants_expiring_inside_the_period_never_draw_more_than_the_usage_before_them():
    """Grant A (40.00, 12 March) and grant C (40.00, 20 March) may both pay only for the 10
    March usage (50.00): A takes 40.00, C the 10.00 left of it; grant B (no expiry) pays the
    25 March half, 50.00."""
    draft = _invoice(CALLS, HALVES, grants=[Grant(1, 4000, date(2026, 3, 12)),
                                            Grant(3, 4000, date(2026, 3, 20)),
                                            Grant(2, 10000, None)])
    assert draft.draws == [(1, 4000), (3, 1000), (2, 5000)]


@settings(max_examples=200, deadline=None)
@given(rate_=st.sampled_from([D("0.0825"), D("0.19"), D("0.2"), D("0.0725"), D("0.10")]),
       inclusive=st.booleans(),
       events=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10**5)), min_size=1,
                       max_size=10),
       grants=st.lists(st.tuples(st.integers(1, 20_000), st.none() | st.integers(0, 40)),
                       max_size=4))
def test_tax_and_draws_keep_their_rules_on_any_invoice(rate_, inclusive, events, grants):
    """Whatever the usage and grants: tax = round(base x rate) (or the tax a gross base holds),
    the lines' taxes add up to it; every grant draws at most its remainder, and the grants
    expiring by a day never draw more than the usage dated up to that day costs (its share of
    the usage by units, within a cent per usage line: each line's share is rounded)."""
    usage = [Usage(i, 1, D(q), date(2026, 3, 1) + timedelta(days=day))
             for i, (day, q) in enumerate(events, 1)]
    given_grants = [Grant(i, amount, None if days is None else date(2026, 3, 1)
                          + timedelta(days=days)) for i, (amount, days) in enumerate(grants, 1)]
    draft = _invoice(_book("graduated"), usage, [Grant(g.id, g.remaining_minor, g.expires_on)
                                                 for g in given_grants], rate_, inclusive)
    [tax] = draft.taxes
    gross = sum(ln.amount_minor + (ln.tax_minor if inclusive else 0) for ln in draft.lines
                if ln.kind != "credit_memo")
    if inclusive:
        assert tax.tax_minor == round_minor(D(gross) * rate_ / (1 + rate_))
        assert tax.base_minor == gross - tax.tax_minor
    else:
        assert (tax.base_minor, tax.tax_minor) == (gross, round_minor(D(gross) * rate_))
    assert sum(ln.tax_minor for ln in draft.lines) == draft.tax_minor == tax.tax_minor
    drawn = dict(draft.draws)
    remaining = {g.id: g.remaining_minor for g in given_grants}
    assert all(0 < amount <= remaining[gid] for gid, amount in drawn.items())
    usage_amount = sum(ln.amount_minor + (ln.tax_minor if inclusive else 0)
                       for ln in draft.lines if ln.kind == "usage")
    assert sum(drawn.values()) <= usage_amount
    lines = sum(1 for ln in draft.lines if ln.kind == "usage")
    total_units = sum((u.quantity for u in usage), D(0))
    for g in given_grants:
        if g.expires_on is None:
            continue
        units = sum((u.quantity for u in usage if u.day <= g.expires_on), D(0))
        # the draw code values each usage line's share (rounded per line): within a cent a line
        cap = D(usage_amount) * units / total_units + lines
        assert sum(drawn.get(h.id, 0) for h in given_grants if h.expires_on is not None
                   and h.expires_on <= g.expires_on) <= cap
