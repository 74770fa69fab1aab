"""The budget meter knows the usage before the first call (issue 13, item 6): a seeded meter,
its reserve, and the calls that learn the CRM's figure. Limit 11, share 0.8: 8 calls allowed."""
from __future__ import annotations

import pytest

from connectors.base import BudgetExhausted
from connectors.budget import BudgetMeter


def call(meter: BudgetMeter, crm_used: list[int], limit: int = 11) -> None:
    """One metered call to a CRM that counts it and reports its figure."""
    meter.guard()
    meter.count()
    crm_used[0] += 1
    meter.observe({"Sforce-Limit-Info": f"api-usage={crm_used[0]}/{limit}"})


def work(meter: BudgetMeter, crm_used: list[int]) -> None:
    """Work calls until the guard stops them."""
    with pytest.raises(BudgetExhausted):
        for _ in range(100):
            call(meter, crm_used)


def fresh(seed: tuple[int, int] | None) -> BudgetMeter:
    meter = BudgetMeter(0.8, reserve=1)
    if seed is not None:
        meter.seed(*seed)
    return meter


def test_fresh_meters_one_after_another_never_pass_the_share() -> None:
    crm = [0]
    seed: tuple[int, int] | None = None
    for _ in range(5):
        meter = fresh(seed)
        try:
            with meter.learning():
                meter.guard()          # the login: free at the CRM, not counted against it
                call(meter, crm)       # the call that learns the figure
        except BudgetExhausted:
            pass
        else:
            work(meter, crm)
        seed = (meter.snapshot().used or 0, 11) if meter.reports else seed
        assert crm[0] <= 8
    assert crm[0] == 8


def test_the_work_keeps_one_call_back_for_the_next_meter() -> None:
    crm = [0]
    meter = fresh(None)
    with meter.learning():
        call(meter, crm)
    work(meter, crm)
    assert crm[0] == 7


def test_a_seed_at_the_share_refuses_even_the_learning_call() -> None:
    meter = fresh((8, 11))
    with pytest.raises(BudgetExhausted, match=r"8/11 used \(last known\)"), meter.learning():
        meter.guard()


def test_a_seed_with_room_lets_the_learning_through_and_the_crm_figure_replaces_it() -> None:
    meter = fresh((7, 11))
    with meter.learning():
        meter.guard()
        meter.count()                  # a token call
        meter.guard()                  # still learning: the seed's room counts, not calls
        meter.count()
        meter.observe({"Sforce-Limit-Info": "api-usage=1/11"})   # the allowance came back
    assert meter.snapshot().used == 1
    meter.guard()                      # work goes on


def test_a_seed_is_not_a_report_and_is_ignored_after_one() -> None:
    meter = fresh((5, 11))
    assert meter.snapshot().used is None and meter.snapshot().limit is None
    meter.observe({"Sforce-Limit-Info": "api-usage=2/11"})
    meter.seed(9, 11)
    assert (meter.snapshot().used, meter.snapshot().limit) == (2, 11)


def test_a_meter_without_a_reserve_stops_at_the_share_as_before() -> None:
    crm = [0]
    meter = BudgetMeter(0.8)
    work(meter, crm)
    assert crm[0] == 8
