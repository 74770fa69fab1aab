"""The API allowance meter of one connection.

Rules kept here:
- Every call is counted. The CRM's own figure wins whenever it reports one (Salesforce
  `Sforce-Limit-Info: api-usage=USED/LIMIT`; Dataverse `x-ms-ratelimit-*` headers are recorded).
- Before a call, `guard()` raises `BudgetExhausted` if that call would take usage past
  `share × limit`: the run stops cleanly with a typed outcome, it is not a success nor a crash.
- Between two reports, calls made since the last report are added to the reported usage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from connectors.base import Budget, BudgetExhausted

_SF_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


class BudgetMeter:
    def __init__(self, share: float = 0.8):
        self.share = share
        self.calls = 0
        self._used: int | None = None
        self._limit: int | None = None
        self._calls_at_report = 0
        self.details: dict[str, str] = {}

    def snapshot(self) -> Budget:
        used = None if self._used is None else self._used + self.calls - self._calls_at_report
        return Budget(calls=self.calls, used=used, limit=self._limit, share=self.share,
                      details=dict(self.details))

    def guard(self) -> None:
        """Raise `BudgetExhausted` if one more call would exceed the configured share."""
        budget = self.snapshot()
        allowed = budget.allowed
        if allowed is not None and allowed < 1:
            raise BudgetExhausted(
                f"API budget: {budget.used}/{budget.limit} used, share {self.share:.0%} reached",
                budget=budget,
            )

    def count(self) -> None:
        self.calls += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Record what the CRM reported in a response's headers."""
        info = headers.get("Sforce-Limit-Info")
        if info:
            match = _SF_USAGE.search(info)
            if match:
                self._used, self._limit = int(match[1]), int(match[2])
                self._calls_at_report = self.calls
        for key, value in headers.items():
            if key.lower().startswith("x-ms-ratelimit-"):
                self.details[key.lower()] = value

    def exhausted(self, message: str, code: str | None = None) -> BudgetExhausted:
        """The CRM itself said the allowance is spent."""
        return BudgetExhausted(message, budget=self.snapshot(), code=code, status=403)
