"""Credit control's rules on plain values: the policy and the hold reasons it implies.

Billing defines the policy; ``config`` builds it from the ``[credit]`` table.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class CreditPolicy:
    include_unbilled_orders: bool = True          # accepted, not yet invoiced orders count
    overdue_grace_days: int = 0                   # days past due before 'overdue' applies
    limit_threshold: Decimal = Decimal("1")       # share of the limit that triggers a hold
    no_limit_is_unlimited: bool = True            # no limit: never 'credit_limit'
