"""The shared contract (connectors/sandbox/core.py): counters, fault plans, clock."""

from __future__ import annotations

import datetime as dt

import pytest

from connectors.sandbox.core import (
    CallCounter,
    DropConnection,
    Fault,
    FaultPlan,
    SandboxClock,
    enact_transport_fault,
)


def test_counter_counts_by_crm_endpoint_and_method() -> None:
    counter = CallCounter()
    counter.count("salesforce", "query", "get")
    counter.count("salesforce", "query", "GET")
    counter.count("dataverse", "accounts", "PATCH")
    assert counter.snapshot() == {("salesforce", "query", "GET"): 2,
                                  ("dataverse", "accounts", "PATCH"): 1}
    assert counter.total() == 3 and counter.total("salesforce") == 2
    assert counter.get("salesforce", "query") == 2
    counter.reset()
    assert counter.total() == 0


def test_fault_plan_count_pattern_and_order() -> None:
    plan = FaultPlan(seed=1)
    plan.add("salesforce", "query*", "429", count=2, retry_after=7)
    plan.add("*", "*", "503", count=1)
    assert plan.take("salesforce", "queryAll") == Fault("429", 7, 0.05)
    assert plan.take("dataverse", "accounts") == Fault("503", 1, 0.05)
    assert plan.take("salesforce", "query") == Fault("429", 7, 0.05)
    assert plan.take("salesforce", "query") is None
    plan.add("salesforce", "token", "slow", delay=0.01)
    assert plan.take("salesforce", "token") == Fault("slow", 1, 0.01)
    plan.clear()
    assert plan.take("salesforce", "token") is None


def test_fault_plan_rate_is_deterministic_under_the_seed() -> None:
    def draws(seed: int) -> list[bool]:
        plan = FaultPlan(seed)
        plan.add("salesforce", "*", "503", rate=0.3)
        return [plan.take("salesforce", "query") is not None for _ in range(200)]

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)
    assert 30 < sum(draws(5)) < 90


def test_fault_plan_refuses_bad_rules() -> None:
    plan = FaultPlan()
    with pytest.raises(ValueError):
        plan.add("salesforce", "*", "explode")
    with pytest.raises(ValueError):
        plan.add("salesforce", "*", "503", rate=2)


def test_transport_faults_are_enacted_and_others_passed_on() -> None:
    assert enact_transport_fault(None) is None
    assert enact_transport_fault(Fault("slow", delay=0.001)) is None
    with pytest.raises(DropConnection):
        enact_transport_fault(Fault("drop"))
    assert enact_transport_fault(Fault("429")) == Fault("429")


def test_clock_real_by_default_then_set_and_advanced() -> None:
    clock = SandboxClock()
    assert abs(clock.now() - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    moment = dt.datetime(2026, 11, 21, 23, 43, 43, tzinfo=dt.UTC)
    clock.set(moment)
    assert clock.now() == moment
    clock.advance(90)
    assert clock.now() == moment + dt.timedelta(seconds=90)
    with pytest.raises(ValueError):
        clock.set(dt.datetime(2026, 1, 1))
    clock.reset()
    assert clock.now().year >= 2026
