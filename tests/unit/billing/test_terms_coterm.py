"""Rule 5 of billing_core.domain.terms: a subscription an amendment adds is co-termed with
its deal's current term."""
from __future__ import annotations

from datetime import date

from billing_core.domain.terms import coterm_end, make_term, term_on


def test_added_subscription_ends_its_first_term_with_the_deal() -> None:
    """Deal term [1 Jan 2026, 1 Jan 2027), bill cycle day 1. A seat added on 20 March 2026:
    its first term is [20 Mar 2026, 1 Jan 2027), 9 months and 12 days, not the 12 months to
    1 April 2027 it would get alone; its next term (12 months, auto-renew) is
    [1 Jan 2027, 1 Jan 2028)."""
    end = coterm_end(date(2027, 1, 1), date(2026, 3, 20), "monthly", 1)
    assert end == date(2027, 1, 1)
    term = make_term(12, date(2026, 3, 20), end, True, "monthly", 1)
    assert term_on(term, date(2026, 12, 31)) == (date(2026, 3, 20), date(2027, 1, 1))
    assert term_on(term, date(2027, 1, 1)) == (date(2027, 1, 1), date(2028, 1, 1))


def test_a_deal_end_off_the_bill_cycle_day_moves_to_the_next_one() -> None:
    """A deal term ending 10 March 2027 (an annual-billed anchor), bill cycle day 15: a
    monthly-billed seat's term ends on the next bill cycle day, 15 March 2027."""
    assert coterm_end(date(2027, 3, 10), date(2026, 5, 2), "monthly", 15) == date(2027, 3, 15)


def test_annual_billing_and_a_deal_term_already_over_keep_their_own_term() -> None:
    assert coterm_end(date(2027, 1, 1), date(2026, 3, 20), "annual", 1) is None
    assert coterm_end(date(2026, 3, 20), date(2026, 3, 20), "monthly", 1) is None
