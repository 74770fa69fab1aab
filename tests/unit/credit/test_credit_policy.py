"""The service's pure parts of credit control: the limit read from an account row, the
idempotency key is stable per (order, item), refused policies, reason names checked."""
from __future__ import annotations

from decimal import Decimal

import pytest

from billing_core.domain.credit import CreditPolicy, HoldReason
from billing_core.domain.errors import ValidationError
from billing_core.service.credit_control import effective_limit_minor, reevaluate_touched_hook
from billing_core.service.holds import REASONS, parse_reason
from billing_core.service.provisioning import STATES, idempotency_key


@pytest.mark.parametrize("limit,policy,expected", [
    (100000, CreditPolicy(limit_threshold=Decimal("0.9")), 90000),
    (None, CreditPolicy(), None),
    (None, CreditPolicy(no_limit_is_unlimited=False), 0),
])
def test_effective_limit_of_an_account_row(limit, policy, expected):
    assert effective_limit_minor({"credit_limit_minor": limit}, policy) == expected


def test_finance_override_wins_over_the_crm_limit():
    """CRM 1,000.00 overridden by 1,500.00 at a 90 % threshold: held above 1,350.00; an
    override of 0 is a limit of 0, not "no override"."""
    policy = CreditPolicy(limit_threshold=Decimal("0.9"))
    row = {"credit_limit_minor": 100000, "credit_limit_override_minor": 150000}
    assert effective_limit_minor(row, policy) == 135000
    assert effective_limit_minor({**row, "credit_limit_override_minor": 0}, policy) == 0
    assert effective_limit_minor({**row, "credit_limit_override_minor": None}, policy) == 90000


def test_idempotency_key_is_stable_and_distinct():
    assert idempotency_key("sf:Q1:rev1", "sub:1") == idempotency_key("sf:Q1:rev1", "sub:1")
    assert idempotency_key("sf:Q1:rev1", "sub:1") != idempotency_key("sf:Q1:rev2", "sub:1")
    assert len(idempotency_key("x" * 255, "otc:99")) <= 64


def test_hook_refuses_something_that_is_not_a_policy():
    with pytest.raises(TypeError, match="CreditPolicy"):
        reevaluate_touched_hook({"limit_threshold": "0.9"})


@pytest.mark.parametrize("value", ["Manual", "", None, 3, "held"])
def test_an_unknown_reason_is_refused_naming_the_choices(value):
    with pytest.raises(ValidationError, match="crm, credit_limit, overdue, manual"):
        parse_reason(value)


def test_choices_offered_are_plain_database_strings():
    # click.Choice would offer an enum's *names* (CRM, ...): the CLI gets the values
    assert parse_reason("overdue") is HoldReason.OVERDUE
    assert all(type(r) is str for r in REASONS + STATES)
    assert STATES == ("pending", "awaiting_hold_release", "dispatching", "dispatched",
                      "provisioned", "failed", "cancelled", "superseded")
