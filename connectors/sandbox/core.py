"""The contract shared by the sandbox server and its CRM sides.

Rules this module keeps:
- A `Side` serves one CRM's wire protocol; the server routes a request to the first side whose
  `matches(path)` is true and answers `/__admin__/...` itself.
- Every side gets one `SandboxContext` (base URL, seed, call counter, fault plan, clock) and uses
  nothing else that is shared.
- Faults are deterministic under the seed: the plan draws from its own `random.Random(seed)`.
- A side calls `faults.take(crm, endpoint)` once per counted call, passes the result to
  `enact_transport_fault` (which sleeps for "slow" and raises `DropConnection` for "drop"), and
  renders what is left ("429", "503", "expire_session", "concurrent_limit": the CRM's limit on
  requests running at once) in its CRM's own error shape.
- The clock is real time unless a test sets or advances it; it always answers aware UTC.
- Nothing here does work at import time; every structure is guarded by a lock (the server is
  threaded).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from werkzeug.wrappers import Request, Response

FAULT_KINDS = frozenset({"429", "503", "slow", "drop", "expire_session", "concurrent_limit"})
MAX_SLOW_DELAY = 30.0  # seconds: a "slow" fault never blocks a server thread longer than this


@dataclass(frozen=True)
class Fault:
    """One injected fault: `kind` in FAULT_KINDS; `retry_after` (s) for 429, `delay` (s) for slow."""

    kind: str
    retry_after: int = 1
    delay: float = 0.05


class DropConnection(Exception):
    """Raised by a side (via `enact_transport_fault`): the server closes the socket unanswered."""


def enact_transport_fault(fault: Fault | None) -> Fault | None:
    """Carry out the transport faults; return the fault if the side must render it, else None."""
    if fault is None:
        return None
    if fault.kind == "slow":
        time.sleep(min(max(fault.delay, 0.0), MAX_SLOW_DELAY))
        return None
    if fault.kind == "drop":
        raise DropConnection(fault.kind)
    return fault


@runtime_checkable
class Side(Protocol):
    """One CRM's wire protocol, e.g. "salesforce" or "dataverse"."""

    name: str

    def matches(self, path: str) -> bool: ...

    def handle(self, request: Request) -> Response: ...

    def admin(self, action: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def reset(self) -> None: ...


class CallCounter:
    """Counts calls by (crm, endpoint, method). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def count(self, crm: str, endpoint: str, method: str) -> None:
        with self._lock:
            self._counts[(crm, endpoint, method.upper())] += 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, crm: str | None = None) -> int:
        with self._lock:
            return sum(n for (c, _, _), n in self._counts.items() if crm is None or c == crm)

    def get(self, crm: str, endpoint: str, method: str | None = None) -> int:
        """Calls to one endpoint (all methods when `method` is None)."""
        with self._lock:
            return sum(
                n
                for (c, e, m), n in self._counts.items()
                if c == crm and e == endpoint and (method is None or m == method.upper())
            )

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {"crm": c, "endpoint": e, "method": m, "count": n}
            for (c, e, m), n in sorted(self.snapshot().items())
        ]


@dataclass
class _FaultRule:
    crm: str
    endpoint_pattern: str
    kind: str
    rate: float
    remaining: int | None
    retry_after: int
    delay: float

    def as_json(self) -> dict[str, Any]:
        return {
            "crm": self.crm,
            "endpoint": self.endpoint_pattern,
            "kind": self.kind,
            "rate": self.rate,
            "remaining": self.remaining,
            "retry_after": self.retry_after,
            "delay": self.delay,
        }


class FaultPlan:
    """Faults to inject, matched by crm ("*" for any) and an fnmatch pattern on the endpoint name.

    Rules are tried in the order added; the first rule that matches and fires wins. A rule with
    `count` fires at most that many times; `rate` < 1 fires with that probability, drawn from a
    generator seeded with the sandbox seed (so a run is reproducible).
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[_FaultRule] = []

    def add(
        self,
        crm: str,
        endpoint_pattern: str,
        kind: str,
        rate: float = 1.0,
        count: int | None = None,
        retry_after: int = 1,
        delay: float = 0.05,
    ) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r} is not one of {sorted(FAULT_KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate {rate!r} is not within [0, 1]")
        if count is not None and count < 1:
            raise ValueError(f"fault count {count!r} must be at least 1")
        rule = _FaultRule(crm, endpoint_pattern, kind, rate, count, int(retry_after), float(delay))
        with self._lock:
            self._rules.append(rule)

    def take(self, crm: str, endpoint: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.crm not in ("*", crm) or not fnmatch.fnmatchcase(
                    endpoint, rule.endpoint_pattern
                ):
                    continue
                if rule.remaining == 0:
                    continue
                if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                return Fault(rule.kind, rule.retry_after, rule.delay)
            return None

    def clear(self) -> None:
        """Drop every rule and restart the random draws, so a plan re-added replays exactly."""
        with self._lock:
            self._rules.clear()
            self._rng = random.Random(self._seed)

    def as_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_json() for r in self._rules]


class SandboxClock:
    """Real UTC time by default; `set` freezes it at a moment, `advance` moves it (frozen or not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frozen: dt.datetime | None = None
        self._offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return dt.datetime.now(dt.UTC) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            step = dt.timedelta(seconds=seconds)
            if self._frozen is not None:
                self._frozen += step
            else:
                self._offset += step

    def set(self, moment: dt.datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError(f"clock moment {moment!r} must be timezone-aware")
        with self._lock:
            self._frozen = moment.astimezone(dt.UTC)

    def reset(self) -> None:
        """Back to real time."""
        with self._lock:
            self._frozen = None
            self._offset = dt.timedelta(0)


@dataclass
class SandboxContext:
    """What the server hands to every side's constructor."""

    base_url: str
    seed: int
    counters: CallCounter = field(default_factory=CallCounter)
    faults: FaultPlan = field(default_factory=FaultPlan)
    clock: SandboxClock = field(default_factory=SandboxClock)
    token_ttl: float = 3600.0  # seconds an access token lives (both CRMs)
    notifier: Any = None  # notify.Notifier when change events are sent, else None
