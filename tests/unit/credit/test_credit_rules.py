"""Credit control's rules on plain values (``billing_core.domain.credit``), no database: each
reason appears and disappears at its boundary, the figures each records, what a decision places
and lifts, and properties over random facts (reasons are monotonic in exposure and in time)."""
from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.domain.credit import (
    COMPUTED,
    CreditFacts,
    CreditPolicy,
    HoldReason,
    OpenDebt,
    actor,
    decide,
    expected_reasons,
    hold_threshold_minor,
    is_overdue,
    lift_details,
    limit_applies,
    overdue_debts,
)

TODAY = date(2026, 3, 2)
CRM, LIMIT, OVERDUE, MANUAL = (HoldReason.CRM, HoldReason.CREDIT_LIMIT, HoldReason.OVERDUE,
                               HoldReason.MANUAL)


def facts(**changes: object) -> CreditFacts:
    """An account in good standing: a 1,000.00 USD limit, nothing owed, no flag, no reason."""
    base = CreditFacts(currency="USD", connection="sf", limit_minor=100_000, exposure_minor=0)
    return replace(base, **changes)


def debt(due: date | None, balance: int = 500, number: str | None = "INV-000001",
         doc_id: int = 1, doc_type: str = "invoice") -> OpenDebt:
    return OpenDebt(type=doc_type, id=doc_id, number=number, due_date=due, balance_minor=balance)


def reasons(f: CreditFacts, policy: CreditPolicy | None = None, on: date = TODAY) -> set[str]:
    return set(expected_reasons(f, policy or CreditPolicy(), on))


# --- credit_limit ------------------------------------------------------------------------------

@pytest.mark.parametrize("limit,policy,expected", [
    (100000, CreditPolicy(), 100000),
    (100000, CreditPolicy(limit_threshold=Decimal("0.9")), 90000),
    (99999, CreditPolicy(limit_threshold=Decimal("0.5")), 49999),     # floor: hold sooner
    (1, CreditPolicy(limit_threshold=Decimal("0.999")), 0),
    (100, CreditPolicy(limit_threshold=Decimal("1.5")), 150),         # above the limit
    (0, CreditPolicy(), 0),
    (None, CreditPolicy(), None),                                     # unlimited
    (None, CreditPolicy(no_limit_is_unlimited=False), 0),             # any exposure holds
])
def test_hold_threshold(limit, policy, expected):
    assert hold_threshold_minor(limit, policy) == expected
    assert limit_applies(limit, policy) is (expected is not None)


@pytest.mark.parametrize("threshold,exposure,held", [
    ("1", 100_000, False), ("1", 100_001, True),             # equal to the limit: not held
    ("0.9", 90_000, False), ("0.9", 90_001, True),
    ("0.333", 33_300, False), ("0.333", 33_301, True),
])
def test_credit_limit_applies_only_above_limit_times_threshold(threshold, exposure, held):
    policy = CreditPolicy(limit_threshold=Decimal(threshold))
    assert (LIMIT in reasons(facts(exposure_minor=exposure), policy)) is held


def test_the_threshold_is_floored_so_a_fraction_of_a_cent_holds_sooner():
    policy = CreditPolicy(limit_threshold=Decimal("0.5"))       # 999 × 0.5 = 499.5 → 499
    assert LIMIT not in reasons(facts(limit_minor=999, exposure_minor=499), policy)
    assert LIMIT in reasons(facts(limit_minor=999, exposure_minor=500), policy)


def test_no_limit_is_unlimited_by_default_and_zero_when_configured():
    unlimited = facts(limit_minor=None, exposure_minor=10**12)
    assert reasons(unlimited) == set()
    strict = CreditPolicy(no_limit_is_unlimited=False)
    assert reasons(facts(limit_minor=None, exposure_minor=1), strict) == {LIMIT}
    assert reasons(facts(limit_minor=None, exposure_minor=0), strict) == set()
    assert reasons(facts(limit_minor=None, exposure_minor=-500), strict) == set()   # a credit


def test_a_zero_limit_holds_any_positive_exposure():
    assert reasons(facts(limit_minor=0, exposure_minor=0)) == set()
    assert reasons(facts(limit_minor=0, exposure_minor=1)) == {LIMIT}


def test_exposure_is_needed_only_when_a_limit_applies():
    assert reasons(facts(limit_minor=None, exposure_minor=None)) == set()
    with pytest.raises(ValueError, match="exposure_minor"):
        reasons(facts(limit_minor=100, exposure_minor=None))


@pytest.mark.parametrize("include_unbilled", [True, False])
def test_credit_limit_figures(include_unbilled):
    policy = CreditPolicy(limit_threshold=Decimal("0.80"), include_unbilled_orders=include_unbilled)
    found = expected_reasons(facts(exposure_minor=80_001), policy, TODAY)
    assert found == {LIMIT: {"exposure_minor": 80_001, "limit_minor": 100_000,
                             "threshold": "0.80", "currency": "USD",
                             "include_unbilled": include_unbilled, "on_date": TODAY}}


# --- overdue -----------------------------------------------------------------------------------

@pytest.mark.parametrize("grace,days_past_due,late", [
    (0, 0, False), (0, 1, True),                    # due today is not late; due yesterday is
    (5, 5, False), (5, 6, True),                    # grace days: late the day after they end
    (30, 29, False), (30, 31, True),
])
def test_overdue_starts_the_day_after_due_date_plus_grace(grace, days_past_due, late):
    due = TODAY - timedelta(days=days_past_due)
    policy = CreditPolicy(overdue_grace_days=grace)
    assert is_overdue(due, TODAY, grace) is late
    assert (OVERDUE in reasons(facts(debts=(debt(due),)), policy)) is late


def test_a_document_without_a_due_date_is_never_overdue():
    assert not is_overdue(None, TODAY, 0)
    assert reasons(facts(debts=(debt(None),))) == set()


def test_overdue_figures_list_the_most_overdue_first_and_at_most_twenty():
    debts = tuple(debt(TODAY - timedelta(days=1 + n % 7), balance=100 + n, number=f"INV-{n:06}",
                       doc_id=n) for n in range(25))
    found = expected_reasons(facts(debts=debts), CreditPolicy(overdue_grace_days=0), TODAY)
    figures = found[OVERDUE]
    assert figures["overdue_minor"] == sum(100 + n for n in range(25))
    assert figures["grace_days"] == 0 and figures["on_date"] == TODAY
    assert figures["currency"] == "USD"
    listed = figures["documents"]
    assert len(listed) == 20
    assert [d["due_date"] for d in listed] == sorted(d["due_date"] for d in listed)
    assert listed[0] == {"type": "invoice", "id": 6, "number": "INV-000006",
                         "due_date": TODAY - timedelta(days=7), "balance_minor": 106}


def test_overdue_debts_skip_what_is_not_late_and_order_by_due_date_then_number():
    early = debt(TODAY - timedelta(days=9), number="DM-000002", doc_type="debit_memo")
    same_day = debt(TODAY - timedelta(days=9), number="DM-000001", doc_type="debit_memo")
    later = debt(TODAY - timedelta(days=2), number="INV-000001")
    unnumbered = debt(TODAY - timedelta(days=2), number=None)
    not_late = debt(TODAY - timedelta(days=1))
    assert overdue_debts([later, not_late, early, unnumbered, same_day], TODAY, 1) == [
        same_day, early, unnumbered, later]


# --- crm, manual, combinations -----------------------------------------------------------------

def test_the_crm_flag_is_a_reason_of_its_own_with_its_connection():
    assert expected_reasons(facts(crm_hold=True), CreditPolicy(), TODAY) == {
        CRM: {"flag": True, "connection": "sf"}}


def test_manual_is_never_computed_placed_or_lifted():
    held = facts(held=(MANUAL,))
    assert reasons(held) == set()
    decision = decide(held, CreditPolicy(), TODAY)
    assert (dict(decision.place), dict(decision.lift)) == ({}, {})
    assert decision.reasons == (MANUAL,) and decision.on_hold


def test_every_reason_at_once_in_a_fixed_order():
    everything = facts(crm_hold=True, exposure_minor=100_001,
                       debts=(debt(TODAY - timedelta(days=3)),), held=(MANUAL,))
    assert list(expected_reasons(everything, CreditPolicy(), TODAY)) == [CRM, LIMIT, OVERDUE]
    decision = decide(everything, CreditPolicy(), TODAY)
    assert list(decision.place) == [CRM, LIMIT, OVERDUE]
    assert decision.reasons == (MANUAL, CRM, LIMIT, OVERDUE)


# --- decisions and lifts -----------------------------------------------------------------------

def test_a_reason_that_stays_is_neither_placed_nor_lifted():
    decision = decide(facts(exposure_minor=100_001, held=(LIMIT,)), CreditPolicy(), TODAY)
    assert (dict(decision.place), dict(decision.lift)) == ({}, {})
    assert decision.reasons == (LIMIT,)


def test_lifts_record_what_released_the_account_and_keep_the_order_of_what_stays():
    policy = CreditPolicy(overdue_grace_days=3)
    back = facts(exposure_minor=100_000, held=(OVERDUE, MANUAL, CRM, LIMIT))
    decision = decide(back, policy, TODAY)
    assert dict(decision.lift) == {
        CRM: {"flag": False, "connection": "sf"},
        LIMIT: {"exposure_minor": 100_000, "limit_minor": 100_000, "threshold": "1",
                "currency": "USD", "include_unbilled": True, "on_date": TODAY},
        OVERDUE: {"on_date": TODAY, "grace_days": 3}}
    assert decision.reasons == (MANUAL,)


def test_a_removed_limit_lifts_credit_limit_without_an_exposure_figure():
    unlimited = facts(limit_minor=None, exposure_minor=None, held=(LIMIT,))
    decision = decide(unlimited, CreditPolicy(), TODAY)
    assert decision.lift[LIMIT]["exposure_minor"] is None
    assert decision.lift[LIMIT]["limit_minor"] is None
    assert not decision.on_hold


def test_manual_has_no_lift_details_and_no_computed_actor():
    with pytest.raises(ValueError, match="manual"):
        lift_details(MANUAL, facts(), CreditPolicy(), TODAY)
    with pytest.raises(ValueError, match="manual"):
        actor(MANUAL, "sf")


def test_actors():
    assert actor(CRM, "sf") == "crm:sf"
    assert actor(LIMIT, "sf") == actor(OVERDUE, "sf") == "billing"


def test_reasons_are_the_database_strings():
    assert [r.value for r in HoldReason] == ["crm", "credit_limit", "overdue", "manual"]
    assert CRM == "crm" and f"{LIMIT}" == "credit_limit" and set(COMPUTED) == {CRM, LIMIT, OVERDUE}


# --- properties --------------------------------------------------------------------------------

policies = st.builds(
    CreditPolicy, include_unbilled_orders=st.booleans(),
    overdue_grace_days=st.integers(min_value=0, max_value=60),
    limit_threshold=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("2"), places=3),
    no_limit_is_unlimited=st.booleans())
money = st.integers(min_value=-10**9, max_value=10**9)
debts_st = st.lists(st.builds(
    debt, due=st.none() | st.integers(min_value=-90, max_value=90).map(
        lambda n: TODAY + timedelta(days=n)),
    balance=st.integers(min_value=1, max_value=10**6),
    number=st.none() | st.from_regex(r"INV-00000[0-9]", fullmatch=True),
    doc_id=st.integers(min_value=1, max_value=10**6)), max_size=8).map(tuple)
held_st = st.lists(st.sampled_from(list(HoldReason)), unique=True).map(tuple)
account_facts = st.builds(
    facts, crm_hold=st.booleans(), limit_minor=st.none() | st.integers(0, 10**9),
    exposure_minor=money, debts=debts_st, held=held_st)


@given(account_facts, policies, money, money)
def test_reasons_are_monotonic_in_exposure(f, policy, a, b):
    low, high = sorted((a, b))
    assert reasons(replace(f, exposure_minor=low), policy) <= reasons(
        replace(f, exposure_minor=high), policy)


@given(account_facts, policies, st.integers(min_value=0, max_value=60))
def test_reasons_only_grow_as_days_pass(f, policy, days):
    later = TODAY + timedelta(days=days)
    assert reasons(f, policy, TODAY) <= reasons(f, policy, later)


@given(account_facts, policies)
def test_a_decision_brings_the_reasons_in_line(f, policy):
    decision = decide(f, policy, TODAY)
    expected = set(expected_reasons(f, policy, TODAY))
    assert set(decision.reasons) == expected | ({MANUAL} & set(f.held))
    assert not set(decision.place) & set(f.held)
    assert set(decision.lift) <= set(f.held) - {MANUAL}
    # deciding again on the outcome changes nothing
    again = decide(replace(f, held=decision.reasons), policy, TODAY)
    assert (dict(again.place), dict(again.lift)) == ({}, {})
    assert again.reasons == decision.reasons
