"""The Salesforce connector: declarations from the field map plus read/write hooks.

Rules kept here:
- One `Transport` per connection (timeouts, CA bundle, retries, budget, call log); simple-
  salesforce is given it as `session=` and `parse_float=Decimal`.
- A refused session (`INVALID_SESSION_ID`, surfaced as `AuthError`) gets exactly one re-login
  per call (per page for reads); a second refusal in a row is a fatal `AuthError` that says so.
  A refused login itself (`LoginRefused`) is never retried. A read interrupted by it restarts from
  the cursor of the last page handed out, so nothing is skipped or handed out twice.
- Incremental reads use queryAll (`include_deleted`) so live rows and `IsDeleted = true` rows
  come in one ordered stream: `WHERE SystemModstamp >= cursor - overlap ORDER BY SystemModstamp,
  Id`, paged by `query_all_iter` (`Sforce-Query-Options: batchSize`), de-duplicated by
  (Id, SystemModstamp), cursor capped at the run's start. `cursor=None` is a full resync (query,
  not queryAll): each page's ids go to the engine's `Sweep`, and the last page reports what
  billing knows and the read did not return as "missing".
- Writes: sObject Collections PATCH, 200 records per call, `allOrNone: false`, one result per
  input in input order; a record the map cannot encode fails alone.
- Our own writes: after the first accepted write the connector asks which CRM user its session
  is (`/services/oauth2/userinfo`, once per connector): the user our writes are stamped with. A
  read of an object that begins after writes of ours to it, runs to its end and saw no write in
  flight meanwhile, claims them in its cursor (`connectors.cursor`: the next reads leave out the
  rows last modified by us inside the range it read back); :meth:`settles_writes` tells the
  engine such a read pays.
- `REQUEST_LIMIT_EXCEEDED` (403) is classified by its message: `TotalRequests` (the org's daily
  allowance, shared by every user of the org) and any message we do not know become
  `BudgetExhausted`, never retried; `ConcurrentRequests` (too many long-running calls at once)
  is a `RetriableError`, retried with the transport's bounded backoff like a 429.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from simple_salesforce.api import Salesforce

from connectors.base import (
    AuthError,
    BudgetExhausted,
    CheckResult,
    ConnectorError,
    Deletion,
    FatalError,
    FieldMapped,
    Page,
    Record,
    Redecide,
    RetriableError,
    Sweep,
    WriteResult,
    missing_deletions,
    page_ids,
)
from connectors.budget import BudgetMeter
from connectors.cursor import StampTracker
from connectors.fieldmap import FieldMap, FieldMapError, ObjectMap
from connectors.prefetch import Prefetch
from connectors.salesforce import soql
from connectors.salesforce.auth import LoginRefused, SalesforceSession, login
from connectors.salesforce.collections import collection_bodies
from connectors.settings import ConnectionSettings
from connectors.transport import Transport, retry_after_seconds
from connectors.values import parse_datetime

T = TypeVar("T")
CHUNK = 200
_SOAP_FAULT = re.compile(r"<sf:exceptionCode>([^<]+)</sf:exceptionCode>")
#: REQUEST_LIMIT_EXCEEDED messages of the concurrency limits ("ConcurrentRequests (Concurrent
#: API Requests) Limit exceeded.", "ConcurrentPerOrgLongTxn Limit exceeded."): transient.
_CONCURRENT = re.compile(r"^\s*Concurrent")


def classify(resp: requests.Response, code: str | None, message: str) -> ConnectorError | None:
    """Salesforce-specific statuses; everything else falls to the shared table."""
    if code == "REQUEST_LIMIT_EXCEEDED" and _CONCURRENT.match(message):
        return RetriableError(f"Salesforce: {message}", code=code, status=resp.status_code,
                              retry_after=retry_after_seconds(resp))
    if code == "REQUEST_LIMIT_EXCEEDED":  # TotalRequests, or a limit we do not know: stop
        return BudgetExhausted(f"Salesforce: {message}", code=code, status=resp.status_code)
    if "/services/Soap/" in resp.url and resp.status_code == 500:  # SOAP login faults are 500
        fault = _SOAP_FAULT.search(resp.text or "")
        return AuthError("SOAP login refused", code=fault[1] if fault else None, status=500)
    return None


class SalesforceConnector(FieldMapped):
    crm = "salesforce"

    def __init__(self, settings: ConnectionSettings, fieldmap: FieldMap, transport: Transport,
                 credentials: Callable[[], dict[str, Any]],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.name = settings.name
        self.settings = settings
        self.fieldmap = fieldmap
        self.transport = transport
        self._credentials = credentials
        self.clock = clock
        self._session: SalesforceSession | None = None
        self._sf: Salesforce | None = None
        self._user: str | None = None      # the CRM user our writes are stamped with
        self._wrote: set[str] = set()      # objects written since their last read began
        self._login_lock = threading.Lock()    # readers side by side log in once

    # -- session -------------------------------------------------------------------------
    def _client(self) -> Salesforce:
        with self._login_lock:
            if self._sf is None:
                meter = self.transport.budget
                with meter.learning():  # the budget guard knows the usage before the first call
                    self._session = login(self.settings, self._credentials(), self.transport)
                    self._sf = self._session.client(self.settings, self.transport)
                    if meter.reports == 0 and meter.reserve:
                        self._learn_usage(self._sf, meter)
            return self._sf

    def _learn_usage(self, sf: Salesforce, meter: BudgetMeter) -> None:
        """Ask `limits` (its answer's `Sforce-Limit-Info` header, else its DailyApiRequests);
        a user without "View Setup and Configuration" is refused the body but not the header."""
        try:
            daily = (sf.limits() or {}).get("DailyApiRequests") or {}
        except FatalError as exc:
            if isinstance(exc, AuthError):
                raise
            return
        if meter.reports == 0 and isinstance(daily.get("Max"), int) \
                and isinstance(daily.get("Remaining"), int):
            meter.report(daily["Max"] - daily["Remaining"], daily["Max"])

    def _drop_session(self) -> None:
        self._sf = None
        self._session = None

    def _call(self, fn: Callable[[Salesforce], T]) -> T:
        relogin = _ReloginOnce(self.name, self._drop_session)
        while True:
            try:
                return fn(self._client())
            except AuthError as exc:
                relogin.after(exc)

    # -- interface -----------------------------------------------------------------------
    def read_changes(self, obj: str, cursor: str | None, *, run_started: datetime | None = None,
                     sweep: Sweep | None = None) -> Iterator[Page]:
        om = self.fieldmap.object(obj)
        started = run_started or self.clock()
        overlap = timedelta(seconds=self.settings.overlap_seconds)
        full = not cursor
        sweep = sweep if full else None
        if sweep is not None:
            sweep.begin()
        last_cursor, relogin = cursor, _ReloginOnce(self.name, self._drop_session)
        wrote_before = obj in self._wrote
        self._wrote.discard(obj)
        while True:
            tracker = StampTracker(last_cursor, overlap, started, user=self._user)
            query = soql.changes(om, tracker.since, with_deleted=not full,
                                 by=tracker.user is not None, exclude=tracker.excluded)
            batch = max(200, min(2000, self.settings.page_size))  # the range Salesforce takes
            headers = {"Sforce-Query-Options": f"batchSize={batch}"}
            records: list[Record] = []
            deletions: list[Deletion] = []
            try:
                batches = Prefetch(_batches(self._client(), query, not full, headers),
                                   name=f"{self.name}-{obj}-batches")
                with batches:
                    for rows in batches:
                        for row in rows:
                            crm_id = str(row.get(om.key))
                            record = om.to_canonical(row)
                            if not tracker.admit(crm_id, record.get("modstamp"),
                                                 row.get("LastModifiedById")):
                                continue
                            if row.get("IsDeleted") is True:
                                stamp = record.get("modstamp")
                                deletions.append(Deletion(
                                    crm_id, stamp if isinstance(stamp, datetime) else None))
                            else:
                                records.append(record)
                            if len(records) + len(deletions) >= self.settings.page_size:
                                last_cursor = tracker.cursor()
                                if sweep is not None:
                                    sweep.saw(page_ids(records, deletions))
                                yield Page(records, deletions, last_cursor)
                                records, deletions = [], []
                                relogin.progressed()
            except AuthError as exc:
                relogin.after(exc)
                continue
            if wrote_before and obj not in self._wrote:
                tracker.claim()
            last_cursor = tracker.cursor() or last_cursor
            if sweep is not None:
                sweep.saw(page_ids(records, deletions))
                deletions += missing_deletions(sweep)
            yield Page(records, deletions, last_cursor)
            return

    def read_one(self, obj: str, crm_id: str) -> Record | None:
        found = self.lookup(obj, "crm_id", crm_id)
        return found[0] if found else None

    def read_by_ids(self, obj: str, ids: Sequence[str]) -> list[Record]:
        """The records of ``ids`` the CRM still has (deleted ones are not returned: ``query``,
        not ``queryAll``), one ``Id IN (...)`` query per 200 ids."""
        om = self.fieldmap.object(obj)
        return self._query_in(om, ids, lambda chunk: soql.by_ids(om, chunk))

    def list_stamps(self, obj: str) -> Iterator[tuple[str, datetime | None]]:
        """Every live row's id and modification stamp (the drift sweep: ``sync.drift``):
        ``SELECT Id, SystemModstamp FROM <object>`` (``query``, not ``queryAll``: deleted rows
        are not listed), paged by ``nextRecordsUrl`` in batches of up to 2,000 rows."""
        om = self.fieldmap.object(obj)
        query = soql.stamps(om)
        headers = {"Sforce-Query-Options": "batchSize=2000"}
        result = self._call(lambda sf: sf.query(query, headers=headers))
        while True:
            for row in result["records"]:
                stamp = parse_datetime(row.get(om.modstamp))
                yield str(row.get(om.key)), stamp if isinstance(stamp, datetime) else None
            if result["done"]:
                return
            url = result["nextRecordsUrl"]
            result = self._call(lambda sf, u=url: sf.query_more(  # type: ignore[misc]
                u, identifier_is_url=True, headers=headers))

    def lookup(self, obj: str, field: str, value: Any) -> list[Record]:
        """Records whose canonical `field` equals `value` (the literal is escaped)."""
        om = self.fieldmap.object(obj)
        query = soql.by_field(om, _field(om, obj, field), value)
        rows = self._call(lambda sf: list(sf.query_all_iter(query)))
        return [om.to_canonical(r) for r in rows]

    def lookup_in(self, obj: str, field: str, values: Sequence[Any]) -> list[Record]:
        """Records whose canonical `field` is one of `values` (the targeted resync's lines of
        accepted quotes): one ``field IN (...)`` query per ``IDS_PER_QUERY`` values."""
        om = self.fieldmap.object(obj)
        crm = _field(om, obj, field)
        return self._query_in(om, values, lambda chunk: soql.by_field_in(om, crm, chunk))

    def _query_in(self, om: ObjectMap, values: Sequence[Any],
                  query_for: Callable[[list[Any]], str]) -> list[Record]:
        """The mapped rows of one query per ``soql.IDS_PER_QUERY`` values (``query_for``
        builds it from a chunk), every page read."""
        found: list[Record] = []
        for start in range(0, len(values), soql.IDS_PER_QUERY):
            query = query_for(list(values[start:start + soql.IDS_PER_QUERY]))
            rows = self._call(lambda sf, q=query: list(sf.query_all_iter(q)))  # type: ignore[misc]
            found += [om.to_canonical(r) for r in rows]
        return found

    def write(self, obj: str, updates: Sequence[Record], *, redecide: Redecide | None = None
              ) -> list[WriteResult]:
        """PATCH composite/sobjects in chunks of 200; `redecide` is unused (no etags here).
        Documents: upserts by external id and file uploads (``connectors.salesforce.documents``).
        """
        if obj in ("document", "document_file"):
            from connectors.salesforce import documents

            # not read back (never pulled): no entry in ``_wrote``
            return (documents.upsert_documents(self, updates) if obj == "document"
                    else documents.upload_files(self, updates))
        om = self.fieldmap.object(obj)
        # Marked when the write starts and again when it ends: no read that ran while a write
        # was in flight (the CRM provisioner writes from another thread) may claim it.
        self._wrote.add(obj)
        results, pending = collection_bodies(om, updates, "id")
        done = self.patch_records("composite/sobjects", pending, updates, results, "id")
        self._wrote.add(obj)
        if self._user is None and any(r.ok for r in done):
            self._user = self._whoami()
        return done

    def patch_records(self, path: str, pending: list[tuple[int, dict[str, Any]]],
                      updates: Sequence[Record], results: list[WriteResult | None],
                      key: str) -> list[WriteResult]:
        """PATCH ``pending`` (index into ``updates``, record body) to ``path`` (composite
        sObject collections: an update by id, or an upsert by external id) in chunks of
        ``CHUNK``, ``allOrNone`` false; each record's result goes into ``results`` under its
        ``key`` field (``id``, or the external id: an upsert answers with the CRM's own id,
        which is kept only for an update). A retriable or auth failure raises with the results
        so far; a fatal one fails its chunk's records alone."""
        upsert = key != "id"
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start:start + CHUNK]
            payload = {"allOrNone": False, "records": [r for _, r in chunk]}
            try:
                answer = self._call(lambda sf, p=payload: sf.restful(  # type: ignore[misc]
                    path, method="PATCH", json=p)) or []
            except ConnectorError as exc:
                if not isinstance(exc, FatalError) or isinstance(exc, AuthError):
                    exc.partial_results = _filled(results, updates, str(exc))
                    raise
                answer = [{"success": False, "errors": [
                    {"statusCode": exc.code, "message": exc.message}]}] * len(chunk)
            for (i, record), item in zip(chunk, answer, strict=False):
                results[i] = _result(str(record[key]), {**item, "id": None} if upsert else item)
        return _filled(results, updates, "Salesforce returned no result for this record",
                       "NO_RESULT")

    def settles_writes(self, obj: str) -> bool:
        """Whether reading ``obj`` back after writing it lets the next reads leave our writes
        out (we know the CRM user they are stamped with)."""
        return self._user is not None and obj in self._wrote

    def whoami(self) -> str | None:
        """The CRM user this connection acts as (None: the CRM did not say): the daemon's
        event receivers skip the echo of its writes (``connectors.events.by_user``)."""
        return self._user or self._whoami()

    def _whoami(self) -> str | None:
        """The CRM user this session acts as (OAuth ``userinfo``): the one our writes name as
        last modifier. Asked of the session, never guessed from a record (a person may have
        changed it since)."""
        try:
            answer = self._call(lambda sf: sf.oauth2("userinfo"))
        except ConnectorError:
            return None      # not known: our writes are simply read again, as before
        user = answer.get("user_id") if isinstance(answer, dict) else None
        return user if isinstance(user, str) and user else None

    def check(self) -> list[CheckResult]:
        from connectors.salesforce.describe import check

        return check(self)


class _ReloginOnce:
    """The one re-login rule, for one call or one read: a refused session (``AuthError``) drops
    it, so the next attempt logs in again; a second refusal with no progress in between is a
    fatal ``AuthError`` that says so. A refused login (``LoginRefused``) is never retried."""

    def __init__(self, name: str, drop_session: Callable[[], None]) -> None:
        self.name = name
        self.drop_session = drop_session
        self.used = False

    def after(self, exc: AuthError) -> None:
        """Called with the refusal; returns when one more attempt is allowed, else raises."""
        if isinstance(exc, LoginRefused):
            raise exc
        if self.used:
            raise AuthError(f"{self.name}: session refused again after one re-login: {exc}",
                            code=exc.code, status=exc.status) from None
        self.used = True
        self.drop_session()

    def progressed(self) -> None:
        """A read handed out a page: a later refusal may re-login again."""
        self.used = False


def _filled(results: list[WriteResult | None], updates: Sequence[Record], why: str,
            code: str = "NOT_SENT") -> list[WriteResult]:
    return [r or WriteResult(str(u.get("crm_id", "")), False, code, why)
            for r, u in zip(results, updates, strict=True)]


def _result(crm_id: str, item: dict[str, Any]) -> WriteResult:
    if item.get("success"):
        return WriteResult(str(item.get("id") or crm_id), True)
    errors = item.get("errors") or [{}]
    first = errors[0]
    return WriteResult(crm_id, False, first.get("statusCode") or first.get("errorCode"),
                       "; ".join(str(e.get("message", "")) for e in errors),
                       tuple(first.get("fields") or ()))


def new_budget(settings: ConnectionSettings) -> BudgetMeter:
    return BudgetMeter(settings.budget_share)


def _batches(client: Salesforce, query: str, include_deleted: bool,
             headers: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    """The query's result batches as Salesforce pages them (``query`` / ``queryAll``, then
    ``nextRecordsUrl``). Run one batch ahead in a thread of its own (``Prefetch``), so the CRM
    is already answering for batch k+1 while batch k's rows are converted."""
    result = client.query(query, include_deleted=include_deleted, headers=headers)
    while True:
        yield result["records"]
        if result["done"]:
            return
        result = client.query_more(result["nextRecordsUrl"], identifier_is_url=True,
                                   headers=headers)


def _field(om: ObjectMap, obj: str, field: str) -> str:
    """The CRM field of canonical ``obj.field``; a ``FieldMapError`` when it is not mapped."""
    spec = om.fields.get(field)
    if spec is None:
        raise FieldMapError(f"{obj}.{field} is not in the field map")
    return spec.crm
