"""The Dataverse connector: declarations from the field map plus read/write hooks.

Rules kept here:
- Every call carries a bearer token from the connection's one `TokenProvider`; a 401 drops the
  cached token and the call is made once more; a second 401 is a fatal `AuthError`.
- Reads: `$select` from the field map, `Prefer: odata.maxpagesize`, `@odata.nextLink` followed
  verbatim. Tables declared `change_tracking` use `Prefer: odata.track-changes`: the cursor is the
  `@odata.deltaLink`, `$deletedEntity` rows become deletions; pages before the last keep the
  previous cursor (re-reading is safe, skipping is not). If the table gives no deltaLink, or a
  saved deltaLink is refused (expired), the read falls back: a full read that ends with a
  `modifiedon` stamp cursor (or a fresh deltaLink). Other tables use `modifiedon ge cursor -
  overlap` ordered by `modifiedon, key` with the same de-duplication as Salesforce.
- A full read (`cursor=None`, or the fallback from a refused deltaLink) tells the engine's
  `Sweep` every id it returns; its last page reports what billing knows and the read did not
  return as "missing" (deletes made while a delta token was expired are found this way).
- Writes: see write.py (`$batch`, continue-on-error, If-Match rules, 412 re-read/re-decide).
- "User local" date columns (field map `behavior = "user_local"`) are read and written in the
  connection's `time_zone` (values.py says why not the FormattedValue annotation).
- A lookup value that is not text (an object, a number) is never turned into text: it passes
  raw, like any value that cannot be converted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import requests

from connectors.base import (
    AuthError,
    CheckResult,
    Deletion,
    FatalError,
    FieldMapped,
    Page,
    Record,
    Redecide,
    Sweep,
    WriteResult,
    missing_deletions,
    page_ids,
)
from connectors.cursor import StampTracker, decode, delta_cursor
from connectors.dynamics import odata
from connectors.dynamics.auth import TokenProvider
from connectors.fieldmap import FieldMap, FieldMapError, ObjectMap
from connectors.settings import ConnectionSettings
from connectors.transport import Transport

log = logging.getLogger(__name__)


class DynamicsConnector(FieldMapped):
    crm = "dynamics"

    def __init__(self, settings: ConnectionSettings, fieldmap: FieldMap, transport: Transport,
                 tokens: TokenProvider,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.name = settings.name
        self.settings = settings
        self.fieldmap = fieldmap.in_zone(ZoneInfo(settings.time_zone))
        self.transport = transport
        self.tokens = tokens
        self.clock = clock
        self.base = f"{settings.url}/api/data/v{settings.api_version}/"
        self._currencies: dict[str, str] | None = None

    # -- HTTP with one token refresh -------------------------------------------------------
    def request(self, method: str, url: str, *, prefer: str | None = None,
                headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        base_headers = {"Accept": "application/json", "OData-MaxVersion": "4.0",
                        "OData-Version": "4.0", **(headers or {})}
        if prefer:
            base_headers["Prefer"] = prefer
        url = url if url.startswith(("https://", "http://")) else self.base + url
        for attempt in (1, 2):
            auth = {"Authorization": f"Bearer {self.tokens.token()}"}
            try:
                resp: requests.Response = self.transport.request(
                    method, url, headers={**base_headers, **auth}, **kw)
                return resp
            except AuthError as exc:
                if attempt == 2:
                    raise AuthError(f"{self.name}: token refused again after one refresh: {exc}",
                                    code=exc.code, status=exc.status) from None
                self.tokens.invalidate()
        raise AssertionError("unreachable")

    def get_json(self, url: str, **kw: Any) -> Any:
        return self.request("GET", url, **kw).json(parse_float=Decimal)

    # -- interface -----------------------------------------------------------------------
    def read_changes(self, obj: str, cursor: str | None, *, run_started: datetime | None = None,
                     sweep: Sweep | None = None) -> Iterator[Page]:
        om = self.fieldmap.object(obj)
        started = run_started or self.clock()
        tracker = StampTracker(cursor if decode(cursor).get("mode") == "stamp" else None,
                               timedelta(seconds=self.settings.overlap_seconds), started)
        state = decode(cursor)
        full = not cursor
        if state.get("mode") == "delta":
            try:
                yield from self._pages(om, state["link"], tracker, cursor, None, delta=True)
                return
            except FatalError as exc:
                if isinstance(exc, AuthError):
                    raise
                log.warning("%s %s: delta link refused (%s); full resync", self.name, obj, exc)
                cursor, full = None, True
        sweep = sweep if full else None
        if sweep is not None:
            sweep.begin()
        if om.change_tracking and (full or state.get("mode") == "delta"):
            url = self._url(om, None, ordered=False)
            pages = self._pages(om, url, tracker, cursor, sweep, delta=True)
        else:
            pages = self._pages(om, self._url(om, tracker.since), tracker, cursor, sweep,
                                delta=False)
        last: Page | None = None
        for page in pages:
            if last is not None:
                yield last
            last = page
        if last is not None:
            yield Page(last.records, list(last.deletions) + missing_deletions(sweep),
                       last.cursor)

    def _url(self, om: ObjectMap, since: datetime | None, *, ordered: bool = True) -> str:
        """Stamp reads are always ordered (a page's cursor must not pass rows still to come);
        change-tracking reads cannot be ($filter / $orderby are not allowed with them)."""
        params = {"$select": ",".join(om.select())}
        if since is not None:
            params["$filter"] = f"{om.modstamp} ge {odata.literal(since)}"
        if ordered:
            params["$orderby"] = f"{om.modstamp} asc,{om.key} asc"
        return f"{om.crm_object}?{odata.query_string(params)}"

    def _pages(self, om: ObjectMap, url: str, tracker: StampTracker, cursor: str | None,
               sweep: Sweep | None, *, delta: bool) -> Iterator[Page]:
        """The pages of one read; a full read tells `sweep` every id it returned (admitted or
        not: a row the stamp tracker skips as already handed out is still in the CRM)."""
        prefer = f"odata.maxpagesize={self.settings.page_size}"
        if delta:
            prefer = f"odata.track-changes,{prefer}"
        next_url: str | None = url
        visited: set[str] = set()
        while next_url:
            if next_url in visited:  # a server handing the same page link twice would loop
                raise FatalError(f"{self.name} {om.crm_object}: paging link repeated")
            visited.add(next_url)
            body = self.get_json(next_url, prefer=prefer)
            records, deletions, returned = [], [], []
            for row in body.get("value", []):
                if _is_deletion(om, row):
                    deletions.append(Deletion(str(row.get("id")), None, "deleted"))
                    continue
                record = self._record(om, row)
                returned.append(record)
                if tracker.admit(str(record.get("crm_id")), record.get("modstamp")) or delta:
                    records.append(record)
            if sweep is not None:
                sweep.saw(page_ids(returned))
            next_url = body.get("@odata.nextLink")
            link = body.get("@odata.deltaLink")
            if link:
                cursor = delta_cursor(link)
            elif not next_url or not delta:
                cursor = tracker.cursor() or cursor  # no change tracking: stamp fallback
            yield Page(records, deletions, cursor)

    def _record(self, om: ObjectMap, row: dict[str, Any]) -> Record:
        record = om.to_canonical(row)
        for spec in om.pull_fields:
            value = row.get(spec.crm)
            if spec.type == "currency_ref" and isinstance(value, str) and value:
                record[spec.canonical] = self._currency(value)
        if "@odata.etag" in row:
            record["_etag"] = row["@odata.etag"]
        return record

    def _currency(self, currency_id: str) -> str:
        """ISO code of a transactioncurrency (the table is small: read once, cached)."""
        if self._currencies is None:
            try:
                body = self.get_json("transactioncurrencies?$select=transactioncurrencyid,"
                                     "isocurrencycode")
                self._currencies = {str(r["transactioncurrencyid"]).lower(): r["isocurrencycode"]
                                    for r in body.get("value", [])}
            except FatalError as exc:
                if isinstance(exc, AuthError):
                    raise
                self._currencies = {}
        return self._currencies.get(currency_id.lower(), currency_id)

    def read_one(self, obj: str, crm_id: str) -> Record | None:
        om = self.fieldmap.object(obj)
        url = f"{om.crm_object}({odata.guid(crm_id)})?$select={','.join(om.select())}"
        try:
            return self._record(om, self.get_json(url))
        except FatalError as exc:
            if exc.status == 404:
                return None
            raise

    def lookup(self, obj: str, field: str, value: Any) -> list[Record]:
        """Records whose canonical `field` equals `value` (the literal is escaped)."""
        om = self.fieldmap.object(obj)
        spec = om.fields.get(field)
        if spec is None:
            raise FieldMapError(f"{obj}.{field} is not in the field map")
        params = {"$select": ",".join(om.select()),
                  "$filter": f"{spec.crm} eq {odata.literal(value)}"}
        url: str | None = f"{om.crm_object}?{odata.query_string(params)}"
        found: list[Record] = []
        while url:
            body = self.get_json(url, prefer=f"odata.maxpagesize={self.settings.page_size}")
            found += [self._record(om, r) for r in body.get("value", [])]
            url = body.get("@odata.nextLink")
        return found

    def write(self, obj: str, updates: Sequence[Record], *, redecide: Redecide | None = None
              ) -> list[WriteResult]:
        from connectors.dynamics.write import write

        return write(self, obj, updates, redecide)

    def settles_writes(self, obj: str) -> bool:
        """A change-tracked table: a delta read after our writes hands them back once and its
        new link starts past them, so the next reads leave them out."""
        return bool(self.fieldmap.object(obj).change_tracking)

    def check(self) -> list[CheckResult]:
        from connectors.dynamics.describe import check

        return check(self)


def _is_deletion(om: ObjectMap, row: dict[str, Any]) -> bool:
    if "$deletedEntity" in str(row.get("@odata.context", "")):
        return True
    return row.get("reason") == "deleted" and "id" in row and om.key not in row
