"""The limit rule on its own: threshold share, rounding down to a whole minor unit, accounts
without a limit; the idempotency key is stable per (order, item); refused policies."""
from __future__ import annotations

from decimal import Decimal

import pytest

from billing_core.service.credit_control import effective_limit_minor, reevaluate_touched_hook
from billing_core.service.provisioning import idempotency_key
from billing_core.domain.credit import CreditPolicy


@pytest.mark.parametrize("limit,policy,expected", [
    (100000, CreditPolicy(), 100000),
    (100000, CreditPolicy(limit_threshold=Decimal("0.9")), 90000),
    (99999, CreditPolicy(limit_threshold=Decimal("0.5")), 49999),     # floor: hold sooner
    (0, CreditPolicy(), 0),
    (None, CreditPolicy(), None),                                     # unlimited
    (None, CreditPolicy(no_limit_is_unlimited=False), 0),             # any exposure holds
])
def test_effective_limit(limit, policy, expected):
    assert effective_limit_minor({"credit_limit_minor": limit}, policy) == expected


def test_idempotency_key_is_stable_and_distinct():
    assert idempotency_key("sf:Q1:rev1", "sub:1") == idempotency_key("sf:Q1:rev1", "sub:1")
    assert idempotency_key("sf:Q1:rev1", "sub:1") != idempotency_key("sf:Q1:rev2", "sub:1")
    assert len(idempotency_key("x" * 255, "otc:99")) <= 64


def test_hook_refuses_something_that_is_not_a_policy():
    with pytest.raises(TypeError, match="CreditPolicy"):
        reevaluate_touched_hook({"limit_threshold": "0.9"})
