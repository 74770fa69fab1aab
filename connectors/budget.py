"""The API allowance meter of one connection.

Rules kept here:
- Every call is counted. The CRM's own figure wins whenever it reports one (Salesforce
  `Sforce-Limit-Info: api-usage=USED/LIMIT`; Dataverse `x-ms-ratelimit-*` headers are recorded;
  Dataverse has no daily cap, so its meter never knows a limit and never stops a run).
- Before a call, `guard()` raises `BudgetExhausted` if that call would take usage past
  `share × limit` (less `reserve` calls, see below): the run stops cleanly with a typed
  outcome, it is not a success nor a crash.
- Between two reports, calls made since the last report are added to the reported usage.
- A new meter knows nothing until the CRM answers, so its first call could pass the share. Its
  builder seeds it (`seed`) with the last figure known elsewhere (an earlier meter, the
  connection's last recorded run) and may keep `reserve` calls of the share back from the work:
  a connector then learns the figure first (`learning()`: its login and one call that reports
  the usage, e.g. Salesforce's `limits`), which may spend a reserved call, but only when the
  seed leaves room for it. So usage never passes the share, however many fresh meters follow
  one another, and a fresh meter still sees an allowance that came back.
- Readers may share one meter from several threads (the sync reads quote lines and accounts
  side by side): `take()` checks and counts a call under one lock, so two threads never both
  spend the last call of the share. A reader that sets `call_tally` (a context variable; a
  `Prefetch` producer runs in a copy of its creator's context) has its own calls counted
  there too, so each object's calls are known apart.
- `snapshot()` shows what the CRM reported to this meter; a seed is not a report (a run that
  made no call records no figure, so an old seed is never passed on as a new one).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from connectors.base import Budget, BudgetExhausted

_SF_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


class CallTally:
    """The calls one reader made (``call_tally``)."""

    def __init__(self) -> None:
        self.calls = 0


#: Where the current reader's calls are also counted (None: nowhere else).
call_tally: ContextVar[CallTally | None] = ContextVar("call_tally", default=None)


class BudgetMeter:
    def __init__(self, share: float = 0.8, reserve: int = 0):
        self.share = share
        self.reserve = reserve
        self.calls = 0
        self.reports = 0
        self._used: int | None = None
        self._limit: int | None = None
        self._calls_at_report = 0
        self._learning = threading.local()
        self._lock = threading.Lock()
        self.details: dict[str, str] = {}

    def seed(self, used: int, limit: int) -> None:
        """Start from a figure known from elsewhere; ignored once the CRM has reported one."""
        if self.reports == 0:
            self._used, self._limit = used, limit
            self._calls_at_report = self.calls

    def _known(self) -> Budget:
        used = None if self._used is None else self._used + self.calls - self._calls_at_report
        return Budget(calls=self.calls, used=used, limit=self._limit, share=self.share,
                      details=dict(self.details))

    def snapshot(self) -> Budget:
        if self.reports == 0:
            return Budget(calls=self.calls, share=self.share, details=dict(self.details))
        return self._known()

    @contextmanager
    def learning(self) -> Iterator[None]:
        """The calls that learn the CRM's figure (a login, one call that reports it): before the
        first report they are let through when the seed leaves room for one call (or there is
        no seed), and they may spend the reserve; after it the usual rule applies."""
        self._learning.on = True
        try:
            yield
        finally:
            self._learning.on = False

    def guard(self) -> None:
        """Raise `BudgetExhausted` if one more call would exceed the configured share."""
        learning = getattr(self._learning, "on", False)
        if learning and self.reports == 0:
            # Only the seed counts: the login's token calls cost the CRM nothing.
            room = None if self._used is None or self._limit is None \
                else int(self._limit * self.share) - self._used
            if room is None or room >= 1:
                return
        budget = self._known()
        allowed = budget.allowed
        needed = 1 if learning else 1 + self.reserve
        if allowed is not None and allowed < needed:
            raise BudgetExhausted(
                f"API budget: {budget.used}/{budget.limit} used"
                f"{'' if self.reports else ' (last known)'}, share {self.share:.0%} reached",
                budget=budget,
            )

    def report(self, used: int, limit: int) -> None:
        """The CRM's figure read from a body (e.g. Salesforce's `limits`), not a header."""
        with self._lock:
            self._used, self._limit = used, limit
            self._calls_at_report = self.calls
            self.reports += 1

    def count(self) -> None:
        with self._lock:
            self._count()

    def _count(self) -> None:
        self.calls += 1
        tally = call_tally.get()
        if tally is not None:
            tally.calls += 1

    def take(self) -> None:
        """`guard()` and `count()` as one step: the call is let through and counted, or
        `BudgetExhausted` is raised and nothing is counted."""
        with self._lock:
            self.guard()
            self._count()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Record what the CRM reported in a response's headers."""
        info = headers.get("Sforce-Limit-Info")
        if info:
            match = _SF_USAGE.search(info)
            if match:
                self.report(int(match[1]), int(match[2]))
        for key, value in headers.items():
            if key.lower().startswith("x-ms-ratelimit-"):
                self.details[key.lower()] = value

    def exhausted(self, message: str, code: str | None = None) -> BudgetExhausted:
        """The CRM itself said the allowance is spent."""
        return BudgetExhausted(message, budget=self.snapshot(), code=code, status=403)
