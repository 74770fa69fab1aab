"""The org's daily API allowance, as Salesforce reports it in `Sforce-Limit-Info`.

Rules this module keeps:
- Every authenticated REST call spends one unit; token requests and refused calls spend none.
- When the allowance is spent, calls answer 403 REQUEST_LIMIT_EXCEEDED until an admin resets or
  raises it (the sandbox has no rolling 24-hour window: tests control it).
- Thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any


class ApiUsage:
    def __init__(self, limit: int = 100_000, used: int = 0) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self.used = used
        self._initial = (limit, used)

    def spend(self) -> bool:
        """Spend one call; False (nothing spent) when the allowance is already used up."""
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def set(self, used: int | None = None, limit: int | None = None) -> None:
        with self._lock:
            if limit is not None:
                self.limit = int(limit)
            if used is not None:
                self.used = int(used)

    def reset(self) -> None:
        with self._lock:
            self.limit, self.used = self._initial

    def header(self) -> dict[str, str]:
        with self._lock:
            return {"Sforce-Limit-Info": f"api-usage={self.used}/{self.limit}"}

    def as_limits_json(self) -> dict[str, Any]:
        with self._lock:
            return {"DailyApiRequests": {"Max": self.limit, "Remaining": self.limit - self.used}}
