"""The Dataverse connector: declarations from the field map plus read/write hooks.

Rules kept here:
- Every call carries a bearer token from the connection's one `TokenProvider`; a 401 drops the
  cached token and the call is made once more; a second 401 is a fatal `AuthError`.
- Reads: `$select` from the field map, `Prefer: odata.maxpagesize`, `@odata.nextLink` followed
  verbatim; a link handed out again in one read is refused (`FatalError`), never followed.
  Tables declared `change_tracking` use `Prefer: odata.track-changes`: the cursor is the
  `@odata.deltaLink`, `$deletedEntity` rows become deletions; pages before the last keep the
  previous cursor (re-reading is safe, skipping is not). If the table gives no deltaLink, or a
  saved deltaLink is refused (expired), the read falls back: a full read that ends with a
  `modifiedon` stamp cursor (or a fresh deltaLink). Other tables use `modifiedon ge cursor -
  overlap` ordered by `modifiedon, key` with the same de-duplication as Salesforce.
- Our own writes on tables read by `modifiedon` (no change tracking): after the first accepted
  write the connector asks which systemuser it is (`WhoAmI`'s `UserId`, once per connector): the
  user Dataverse names as `_modifiedby_value` of every row we write. A read of the object that
  begins after writes of ours to it, runs to its end and saw no write in flight meanwhile,
  claims them in its cursor (`connectors.cursor`); the next reads add
  `and (_modifiedby_value ne <us> or modifiedon lt <from> or modifiedon ge <to>)`, the range's
  bounds rounded outwards to whole seconds (Dataverse's precision), so they leave out only rows
  last modified by us inside it. A person's edit names the person: it is always read. The read
  back waits until 2 s have passed since our last write of the object ended, so its range may
  end after the second of our newest write (`StampTracker.claim(settled=...)`): our rows of
  that second leave the cursor instead of being read again on every run.
- A full read (`cursor=None`, or the fallback from a refused deltaLink) tells the engine's
  `Sweep` every id it returns; its last page reports what billing knows and the read did not
  return as "missing" (deletes made while a delta token was expired are found this way).
- Writes: see write.py (`$batch`, continue-on-error, If-Match rules, 412 re-read/re-decide).
- "User local" date columns (field map `behavior = "user_local"`) are read and written in the
  connection's `time_zone` (values.py says why not the FormattedValue annotation).
- A lookup value that is not text (an object, a number) is never turned into text: it passes
  raw, like any value that cannot be converted.
- A currency lookup is read as its ISO code from the cached `transactioncurrencies` table; an
  id the cache lacks (a currency added while the worker runs) reads the table again, once.
- Dataverse GUIDs are case-insensitive: a row's key, every lookup (`_x_value`) and every
  `$deletedEntity` id that is a GUID is read in lower case (as the webhook receiver reads
  `PrimaryEntityId`, connectors.events), so one row named in two cases is one record (not two
  accounts, or a quote's line left out of its order because it names the quote in capitals).
"""

from __future__ import annotations

import logging
import time
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
from connectors.cursor import OwnRange, StampTracker, decode, delta_cursor
from connectors.dynamics import odata
from connectors.dynamics.auth import TokenProvider
from connectors.fieldmap import FieldMap, FieldMapError, ObjectMap
from connectors.settings import ConnectionSettings
from connectors.transport import Transport
from connectors.values import parse_datetime

log = logging.getLogger(__name__)
#: The lookup Dataverse names a row's last modifier in (a systemuser id).
MODIFIED_BY = "_modifiedby_value"
#: A row's version (rowversion): new on every write, where `modifiedon` is whole seconds.
VERSION = "versionnumber"
#: Dataverse stamps `modifiedon` in whole seconds; a read of our writes back that begins
#: `SETTLE` after the last of them ended may claim their last second too (connectors.cursor).
STAMP_UNIT = timedelta(seconds=1)
SETTLE = 2.0
#: Ids per ``read_by_ids`` query (a ``$filter`` of 200 key comparisons: about 12,000 characters
#: of URL, well within Dataverse's 32,768).
IDS_PER_QUERY = 200
#: Rows per page of the drift sweep's id/stamp listing (Dataverse's largest page).
STAMP_PAGE = 5000
#: A delta link a read found nothing after is kept this long (then the newest is saved).
DELTA_KEEP = timedelta(hours=1)


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
        self._currencies_missed: set[str] = set()   # ids a re-read did not find either
        self._user: str | None = None      # the systemuser our writes are stamped with
        self._wrote: set[str] = set()      # objects written since their last read began
        self._write_ended: dict[str, float] = {}    # object -> monotonic end of its last write

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
                               timedelta(seconds=self.settings.overlap_seconds), started,
                               user=self._user)
        wrote_before = obj in self._wrote
        settled = wrote_before and not om.change_tracking and self._settle(obj)
        self._wrote.discard(obj)
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
            def claim() -> None:       # the read ran to its end: claim our writes it read
                if wrote_before and obj not in self._wrote:
                    tracker.claim(STAMP_UNIT if settled else None)

            pages = self._pages(om, self._url(om, tracker.since, tracker=tracker), tracker,
                                cursor, sweep, delta=False, settled=claim)
        last: Page | None = None
        for page in pages:
            if last is not None:
                yield last
            last = page
        if last is not None:
            yield Page(last.records, list(last.deletions) + missing_deletions(sweep),
                       last.cursor)

    def _url(self, om: ObjectMap, since: datetime | None, *, ordered: bool = True,
             tracker: StampTracker | None = None) -> str:
        """Stamp reads are always ordered (a page's cursor must not pass rows still to come);
        change-tracking reads cannot be ($filter / $orderby are not allowed with them). A stamp
        read whose `tracker` knows our user also reads each row's last modifier, and leaves out
        the rows of ours its cursor's range covers (`_own_filter`)."""
        fields = om.select()
        if tracker is not None:     # stamps are whole seconds: versions tell writes apart
            fields = list(dict.fromkeys([*fields, VERSION]))
        if tracker is not None and (tracker.user or tracker.excluded):
            fields = list(dict.fromkeys([*fields, MODIFIED_BY]))
        params = {"$select": ",".join(fields)}
        if since is not None:
            params["$filter"] = f"{om.modstamp} ge {odata.literal(since)}"
            if tracker is not None and tracker.excluded is not None:
                params["$filter"] += " and " + _own_filter(om, tracker.excluded)
        if ordered:
            params["$orderby"] = f"{om.modstamp} asc,{om.key} asc"
        return f"{om.crm_object}?{odata.query_string(params)}"

    def _pages(self, om: ObjectMap, url: str, tracker: StampTracker, cursor: str | None,
               sweep: Sweep | None, *, delta: bool,
               settled: Callable[[], None] | None = None) -> Iterator[Page]:
        """The pages of one read; a full read tells `sweep` every id it returned (admitted or
        not: a row the stamp tracker skips as already handed out is still in the CRM).
        `settled` is called once the last page is in, before its cursor is taken."""
        prefer = f"odata.maxpagesize={self.settings.page_size}"
        if delta:
            prefer = f"odata.track-changes,{prefer}"
        next_url: str | None = url
        visited: set[str] = set()
        previous, changed = cursor, False
        while next_url:
            if next_url in visited:  # a server handing the same page link twice would loop
                raise FatalError(f"{self.name} {om.crm_object}: paging link repeated")
            visited.add(next_url)
            body = self.get_json(next_url, prefer=prefer)
            records, deletions, returned = [], [], []
            for row in body.get("value", []):
                if _is_deletion(om, row):
                    deletions.append(Deletion(str(odata.canonical_guid(row.get("id"))), None,
                                              "deleted"))
                    continue
                record = self._record(om, row)
                returned.append(record)
                by, version = row.get(MODIFIED_BY), row.get("versionnumber")
                if tracker.admit(str(record.get("crm_id")), record.get("modstamp"),
                                 by.lower() if isinstance(by, str) else None,
                                 None if version is None else str(version)) or delta:
                    records.append(record)
            if sweep is not None:
                sweep.saw(page_ids(returned))
            changed = changed or bool(returned or deletions)
            next_url = body.get("@odata.nextLink")
            link = body.get("@odata.deltaLink")
            if not next_url and settled is not None:
                settled()
            if link:
                cursor = previous if delta and not changed and self._keeps(previous) \
                    else delta_cursor(link, self.clock())
            elif not next_url or not delta:
                cursor = tracker.cursor() or cursor  # no change tracking: stamp fallback
            yield Page(records, deletions, cursor)

    def _keeps(self, cursor: str | None) -> bool:
        """Whether a delta read that found nothing keeps the link it followed (`cursor`) instead
        of the new one: when it is a delta link received less than `DELTA_KEEP` ago. Both links
        hand out the same changes from now on; keeping it saves a cursor write per table and
        run, and a link that old is far from expiring."""
        data = decode(cursor)
        at = data.get("at") if data.get("mode") == "delta" else None
        if not isinstance(at, str):
            return False
        received = parse_datetime(at)
        if not isinstance(received, datetime) or received.tzinfo is None:
            return False
        return timedelta(0) <= self.clock() - received < DELTA_KEEP

    def _record(self, om: ObjectMap, row: dict[str, Any]) -> Record:
        record = om.to_canonical(row)
        for spec in om.pull_fields:
            value = row.get(spec.crm)
            if spec.type == "currency_ref" and isinstance(value, str) and value:
                record[spec.canonical] = self._currency(value)
            elif (spec.crm == om.key or _is_lookup(spec.crm)) and spec.canonical in record:
                record[spec.canonical] = odata.canonical_guid(record[spec.canonical])
        record["crm_id"] = odata.canonical_guid(record.get("crm_id"))
        if "@odata.etag" in row:
            record["_etag"] = row["@odata.etag"]
        return record

    def _currency(self, currency_id: str) -> str:
        """ISO code of a transactioncurrency (the table is small: read once, cached). A row
        names an existing currency, so an id the cache lacks was added since it was read (the
        daemon keeps its connector for days): the table is read again, once per such id; an
        id still unknown then passes as it is, for the boundary to refuse naming it."""
        key = currency_id.lower()
        if self._currencies is None or (key not in self._currencies
                                        and key not in self._currencies_missed):
            if self._currencies is not None:
                self._currencies_missed.add(key)
            try:
                body = self.get_json("transactioncurrencies?$select=transactioncurrencyid,"
                                     "isocurrencycode")
                self._currencies = {str(r["transactioncurrencyid"]).lower(): r["isocurrencycode"]
                                    for r in body.get("value", [])}
            except FatalError as exc:
                if isinstance(exc, AuthError):
                    raise
                self._currencies = self._currencies or {}
        return self._currencies.get(key, currency_id)

    def read_one(self, obj: str, crm_id: str) -> Record | None:
        om = self.fieldmap.object(obj)
        url = f"{om.crm_object}({odata.guid(crm_id)})?$select={','.join(om.select())}"
        try:
            return self._record(om, self.get_json(url))
        except FatalError as exc:
            if exc.status == 404:
                return None
            raise

    def read_by_ids(self, obj: str, ids: Sequence[str]) -> list[Record]:
        """The rows of ``ids`` the CRM still has, one ``$filter`` of key comparisons per
        ``IDS_PER_QUERY`` ids (``accountid eq <guid> or ...``: plain OData, which every
        Dataverse version and the sandbox take); a malformed id is not asked for."""
        om = self.fieldmap.object(obj)
        guids: list[str] = []
        for crm_id in ids:
            try:
                guids.append(odata.guid(crm_id))
            except FatalError:
                continue
        found: list[Record] = []
        for start in range(0, len(guids), IDS_PER_QUERY):
            found += self._filtered(om, " or ".join(
                f"{om.key} eq {g}" for g in guids[start:start + IDS_PER_QUERY]),
                skip_deletions=True)
        return found

    def list_stamps(self, obj: str) -> Iterator[tuple[str, datetime | None]]:
        """Every live row's key and ``modifiedon`` (the drift sweep: ``sync.drift``):
        ``$select=<key>,modifiedon``, ``Prefer: odata.maxpagesize=5000`` (Dataverse's largest
        page), ``@odata.nextLink`` followed."""
        om = self.fieldmap.object(obj)
        params = {"$select": f"{om.key},{om.modstamp}"}
        url: str | None = f"{om.crm_object}?{odata.query_string(params)}"
        visited: set[str] = set()
        while url:
            if url in visited:
                raise FatalError(f"{self.name} {om.crm_object}: paging link repeated")
            visited.add(url)
            body = self.get_json(url, prefer=f"odata.maxpagesize={STAMP_PAGE}")
            for row in body.get("value", []):
                if _is_deletion(om, row):
                    continue
                stamp = parse_datetime(row.get(om.modstamp))
                yield (str(odata.canonical_guid(row.get(om.key))),
                       stamp if isinstance(stamp, datetime) else None)
            url = body.get("@odata.nextLink")

    def lookup(self, obj: str, field: str, value: Any) -> list[Record]:
        """Records whose canonical `field` equals `value` (the literal is escaped)."""
        om = self.fieldmap.object(obj)
        return self._filtered(om, f"{_field(om, obj, field)} eq {odata.literal(value)}")

    def lookup_in(self, obj: str, field: str, values: Sequence[Any]) -> list[Record]:
        """Records whose canonical `field` is one of `values` (the targeted resync's lines of
        accepted quotes): one ``$filter`` of ``field eq <v> or ...`` per ``IDS_PER_QUERY``
        values (as ``read_by_ids``: about 11,000 characters of URL for 200 GUIDs, within
        Dataverse's limits), every page followed."""
        om = self.fieldmap.object(obj)
        crm = _field(om, obj, field)
        found: list[Record] = []
        for start in range(0, len(values), IDS_PER_QUERY):
            found += self._filtered(om, " or ".join(
                f"{crm} eq {odata.literal(v)}" for v in values[start:start + IDS_PER_QUERY]))
        return found

    def _filtered(self, om: ObjectMap, filter_: str, *,
                  skip_deletions: bool = False) -> list[Record]:
        """The mapped rows of one ``$filter`` query, every ``@odata.nextLink`` page followed."""
        params = {"$select": ",".join(om.select()), "$filter": filter_}
        url: str | None = f"{om.crm_object}?{odata.query_string(params)}"
        found: list[Record] = []
        visited: set[str] = set()
        while url:
            if url in visited:  # a server handing the same page link twice would loop
                raise FatalError(f"{self.name} {om.crm_object}: paging link repeated")
            visited.add(url)
            body = self.get_json(url, prefer=f"odata.maxpagesize={self.settings.page_size}")
            found += [self._record(om, r) for r in body.get("value", [])
                      if not (skip_deletions and _is_deletion(om, r))]
            url = body.get("@odata.nextLink")
        return found

    def write(self, obj: str, updates: Sequence[Record], *, redecide: Redecide | None = None
              ) -> list[WriteResult]:
        from connectors.dynamics.write import write

        if obj in ("document", "document_file"):   # pushed only, never read back
            from connectors.dynamics import documents

            return (documents.upsert_documents(self, updates) if obj == "document"
                    else documents.upload_files(self, updates))
        # Marked when the write starts and again when it ends: no read that ran while a write
        # was in flight (the CRM provisioner writes from another thread) may claim it.
        self._wrote.add(obj)
        try:
            done = write(self, obj, updates, redecide)
        finally:
            self._wrote.add(obj)
            self._write_ended[obj] = time.monotonic()
        if self._user is None and any(r.ok for r in done):
            self._user = self._whoami()
        return done

    def settles_writes(self, obj: str) -> bool:
        """Whether reading ``obj`` back after writing it lets the next reads leave our writes
        out: a change-tracked table (the delta read's new link starts past them), or a table
        read by `modifiedon` once we know the systemuser our writes are stamped with."""
        if self.fieldmap.object(obj).change_tracking:
            return True
        return self._user is not None and obj in self._wrote

    def _settle(self, obj: str) -> bool:
        """Before a read of our writes back: wait until `SETTLE` has passed since our last write
        of `obj` ended (real time, whatever sleep the connection was given), so the read may
        claim our writes' last second too (`StampTracker.claim`); False when it cannot."""
        ended = self._write_ended.get(obj)
        if ended is None or self._user is None:
            return False
        wait = SETTLE - (time.monotonic() - ended)
        if 0 < wait <= SETTLE:
            time.sleep(wait)
        return time.monotonic() - ended >= SETTLE

    def whoami(self) -> str | None:
        """The CRM user this connection acts as (None: the CRM did not say): the daemon's
        event receivers skip the echo of its writes (``connectors.events.by_user``)."""
        return self._user or self._whoami()

    def _whoami(self) -> str | None:
        """The systemuser this connection acts as (`WhoAmI`'s `UserId`): the one Dataverse names
        as `_modifiedby_value` of the rows we write. Asked of the session, never guessed from a
        record (a person may have changed it since)."""
        try:
            answer = self.get_json("WhoAmI")
        except FatalError as exc:
            if isinstance(exc, AuthError):
                raise
            return None      # not known: our writes are simply read again, as before
        user = answer.get("UserId") if isinstance(answer, dict) else None
        return user.lower() if isinstance(user, str) and user else None

    def check(self) -> list[CheckResult]:
        from connectors.dynamics.describe import check

        return check(self)


def _own_filter(om: ObjectMap, own: OwnRange) -> str:
    """Rows not last modified by us inside `own`: its start rounded up and its end rounded down
    to whole seconds (Dataverse stamps whole seconds), so rounding only reads more."""
    start = own.start.astimezone(UTC)
    if start.microsecond:
        start = start.replace(microsecond=0) + timedelta(seconds=1)
    end = own.end.astimezone(UTC).replace(microsecond=0)
    return (f"({MODIFIED_BY} ne {odata.guid(own.user)} or {om.modstamp} lt "
            f"{odata.literal(start)} or {om.modstamp} ge {odata.literal(end)})")


def _field(om: ObjectMap, obj: str, field: str) -> str:
    """The CRM column of canonical ``obj.field``; a ``FieldMapError`` when it is not mapped."""
    spec = om.fields.get(field)
    if spec is None:
        raise FieldMapError(f"{obj}.{field} is not in the field map")
    return spec.crm


def _is_lookup(crm: str) -> bool:
    """Whether a column is read as a lookup's GUID (Dataverse names it ``_<column>_value``)."""
    return crm.startswith("_") and crm.endswith("_value")


def _is_deletion(om: ObjectMap, row: dict[str, Any]) -> bool:
    if "$deletedEntity" in str(row.get("@odata.context", "")):
        return True
    return row.get("reason") == "deleted" and "id" in row and om.key not in row
