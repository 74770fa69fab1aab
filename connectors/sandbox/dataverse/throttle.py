"""Service protection: a per-user request budget over a sliding window on the sandbox clock.

Rules kept:
- At most `limit` requests per user within `window` seconds; the next one answers 429 with
  `Retry-After` (whole seconds until the oldest request leaves the window, at least 1) and the
  error code 0x80072322, as Dataverse's "number of requests" limit does.
- Answers within the budget carry `x-ms-ratelimit-burst-remaining-xrm-requests` and
  `x-ms-ratelimit-time-remaining-xrm-requests` (execution time is not modelled: a constant).
- A `$batch` counts as one request (only its own HTTP call is seen here).
"""

from __future__ import annotations

import math
from collections import deque

from .wire import RATE_LIMITED, DataverseError

TIME_REMAINING = "1,200.00"


class Throttle:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def admit(self, user: str, now: float) -> dict[str, str]:
        """Record one request; its rate-limit headers, or a 429 DataverseError."""
        seen = self._seen.setdefault(user, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) >= self.limit:
            wait = max(1, math.ceil(seen[0] + self.window - now))
            raise DataverseError(429, RATE_LIMITED, f"Number of requests exceeded the limit of "
                                 f"{self.limit} over time window of {int(self.window)} seconds.",
                                 {"Retry-After": str(wait)})
        seen.append(now)
        return {"x-ms-ratelimit-burst-remaining-xrm-requests": str(self.limit - len(seen)),
                "x-ms-ratelimit-time-remaining-xrm-requests": TIME_REMAINING}

    def configure(self, limit: int | None = None, window: float | None = None) -> None:
        if limit is not None:
            self.limit = int(limit)
        if window is not None:
            self.window = float(window)

    def reset(self) -> None:
        self._seen.clear()
