"""The one interface every CRM connector offers to the sync engine, and its error types.

Rules kept here:
- Records are plain dicts keyed by canonical names (docs/FIELDS.md) with `Decimal` numbers and
  aware UTC datetimes, plus `_etag` where the CRM has one. A value that cannot be converted is
  passed through raw: the sync engine quarantines it; a connector never raises for one bad record.
- `read_changes` yields `Page`s; each page carries the cursor that is valid *after* that page, so
  the engine can persist data and cursor in one transaction. Cursors are opaque JSON strings that
  only move forward and never pass the run's start time.
- Errors: `RetriableError` (429, 5xx, timeouts; already retried by the transport when it reaches a
  caller), `FatalError` (4xx that will not change, with the CRM's own code and message),
  `AuthError` (a `FatalError` the connector gets one re-login to fix), `BudgetExhausted` (the typed
  "budget" outcome: the run stops cleanly; neither success nor crash).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

#: The canonical CRM objects (docs/FIELDS.md), each after the objects it refers to. The sync
#: pulls them in its own order (``sync.engine.PULL_ORDER``: accounts last, after the quotes).
OBJECTS: tuple[str, ...] = ("account", "product", "price", "quote", "quote_line")
Record = dict[str, Any]
#: Called on a version conflict (HTTP 412) with the CRM's current record and the update that was
#: refused; returns the update to try once more, or None to drop it.
Redecide = Callable[[Record, Record], Record | None]


class ConnectorError(Exception):
    """Base of every error a connector raises; `code` is the CRM's own error code when known."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        #: Set by `write` when it stops part-way: one result per input, unsent ones `NOT_SENT`.
        self.partial_results: list[WriteResult] | None = None

    def __str__(self) -> str:
        parts = [p for p in (str(self.status) if self.status else None, self.code) if p]
        return f"{' '.join(parts)}: {self.message}" if parts else self.message


class RetriableError(ConnectorError):
    """429, 5xx, connection errors and timeouts; `retry_after` is in seconds when the CRM said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UnconfirmedError(ConnectorError):
    """A call that creates (``resend=False``) was sent and no answer came (a read timeout, the
    connection lost after sending): the CRM may have applied it. Never re-sent blindly: the
    caller looks for what it made before sending it again."""


class FatalError(ConnectorError):
    """A 4xx (or a broken answer) that retrying will not change."""


class AuthError(FatalError):
    """Credentials refused or a session expired; re-login once, then treat as fatal."""


class ConflictError(FatalError):
    """A write refused because the record changed since it was read (HTTP 412)."""


class BudgetExhausted(ConnectorError):
    """The configured share of the CRM's API allowance is spent (or the CRM said so): stop."""

    def __init__(self, message: str, *, budget: Budget | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.budget = budget


@dataclass(frozen=True)
class Deletion:
    """A record that disappeared from the CRM: deleted, or missing from a full resync."""

    crm_id: str
    deleted_at: datetime | None = None
    reason: str = "deleted"  # "deleted" | "missing"


@dataclass(frozen=True)
class Page:
    """One page of changes and the cursor valid after it has been applied."""

    records: list[Record]
    deletions: list[Deletion]
    cursor: str | None


class Sweep(Protocol):
    """Where a full read leaves the ids it returned, so that what billing knows and the CRM no
    longer returns can be reported as "missing" (deleted with no trace left in the CRM's
    recycle bin or change log). The engine keeps them in the database, not in memory.

    A connector calls ``begin()`` when a full read starts (again: the ids seen so far are
    forgotten), ``saw(ids)`` for every page of that read before handing the page out, and
    ``missing()`` once, only after the read's last page was read to its end."""

    def begin(self) -> None: ...

    def saw(self, crm_ids: Sequence[str]) -> None: ...

    def missing(self) -> list[str]: ...


def page_ids(records: Iterable[Record], deletions: Iterable[Deletion] = ()) -> list[str]:
    """The CRM ids a page returned (what a full read tells its ``Sweep``)."""
    return [str(r.get("crm_id")) for r in records] + [d.crm_id for d in deletions]


def missing_deletions(sweep: Sweep | None) -> list[Deletion]:
    """The end of a full read: what billing knows that the read did not return."""
    return [] if sweep is None else [Deletion(i, None, "missing") for i in sweep.missing()]


@dataclass(frozen=True)
class WriteResult:
    """The CRM's answer for one input update, in input order."""

    crm_id: str
    ok: bool
    code: str | None = None
    message: str | None = None
    fields: tuple[str, ...] = ()
    etag: str | None = None


@dataclass(frozen=True)
class Budget:
    """API allowance as last reported by the CRM; `None` where the CRM has not said."""

    calls: int
    used: int | None = None
    limit: int | None = None
    share: float = 0.8
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def remaining(self) -> int | None:
        return None if self.used is None or self.limit is None else self.limit - self.used

    @property
    def allowed(self) -> int | None:
        """Calls this worker may still make before reaching its share of the allowance."""
        if self.used is None or self.limit is None:
            return None
        return int(self.limit * self.share) - self.used


@dataclass(frozen=True)
class CheckResult:
    """One line of `ledgerbridge doctor`: status is "ok", "fail" or "cannot verify"."""

    connection: str
    check: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@runtime_checkable
class Connector(Protocol):
    """What the sync engine uses for every CRM."""

    name: str

    def objects(self) -> Sequence[str]:
        """Canonical object names this connection maps (account, product, price, quote, ...)."""
        ...

    def read_changes(
        self,
        obj: str,
        cursor: str | None,
        *,
        run_started: datetime | None = None,
        sweep: Sweep | None = None,
    ) -> Iterator[Page]:
        """Pages changed since `cursor`. `cursor=None` is a full resync; so is the fallback
        when the CRM refuses a saved cursor (an expired change-tracking token). A full read
        tells `sweep` what it returned and ends with a page reporting, as "missing", what
        `sweep` says billing knows and the read did not return."""
        ...

    def read_one(self, obj: str, crm_id: str) -> Record | None: ...

    def lookup(self, obj: str, field: str, value: Any) -> list[Record]:
        """Records whose canonical `field` equals `value` (every page; literal escaped)."""
        ...

    def write(
        self, obj: str, updates: Sequence[Record], *, redecide: Redecide | None = None
    ) -> list[WriteResult]:
        """Apply `updates` (canonical names, each with `crm_id`, optionally `_etag`)."""
        ...

    def check(self) -> list[CheckResult]: ...

    def api_budget(self) -> Budget: ...

    def accepted_quote_states(self) -> frozenset[str]: ...


class FieldMapped:
    """The part of the interface every connector answers from its field map and transport."""

    fieldmap: Any
    transport: Any

    def objects(self) -> Sequence[str]:
        return list(self.fieldmap.objects)

    def accepted_quote_states(self) -> frozenset[str]:
        return frozenset(self.fieldmap.object("quote").accepted_states)

    def api_budget(self) -> Budget:
        return self.transport.budget.snapshot()  # type: ignore[no-any-return]


def field_map_check(connection: str, label: str, mapped: int, missing: Iterable[str],
                    locked: Iterable[str], *, missing_text: str, locked_text: str) -> CheckResult:
    """How `ledgerbridge doctor` judges one object's field map once the CRM has described it:
    a mapped field the CRM lacks fails, then a field billing writes that the user cannot
    update fails, else the map is fine. The texts say it in the CRM's own words."""
    missing, locked = sorted(missing), sorted(locked)
    if missing:
        return CheckResult(connection, label, "fail", f"{missing_text}: {', '.join(missing)}")
    if locked:
        return CheckResult(connection, label, "fail", f"{locked_text}: {', '.join(locked)}")
    return CheckResult(connection, label, "ok", f"{mapped} fields mapped")

