"""Collection reads: filtered pages, ordered pages, change-tracked reads and delta links.

Rules kept:
- A page is built from the rows it shows only; an unordered read walks the store from the
  cookie's resume index, so a million-row read streams page by page.
- A tracked read (`Prefer: odata.track-changes` on a tracked table) records the store version
  at its first page; its last page carries `@odata.deltaLink` with that version, so a change made
  while the pages were read is delivered again by the delta (at least once, never lost).
- A delta answer lists rows written after the token's version (newest state, once each) and
  deletions as `$deletedEntity`; it pages like a read. A token older than the table's expiry
  floor answers the expired-token error (code per `wire.EXPIRED_DELTA`).
- Tracked reads and deltas refuse `$filter`, `$orderby` and `$top` (Dataverse does not combine
  them with change tracking; the exact error text is unconfirmed).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from .filters import compile_filter
from .paging import MAX_PAGE, Query, link, make_cookie, project, read_cookie, sort_key
from .schema import TableDef
from .store import Store
from .wire import API_PREFIX, BAD_QUERY, EXPIRED_DELTA, DataverseError

_EQ_HINT = re.compile(r"\s*(\w+) eq (?:([0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})"
                      r"|'([A-Z]+-\d+)')\s*")


class Reader:
    def __init__(self, store: Store, base_url: str) -> None:
        self.store = store
        self.api = base_url.rstrip("/") + API_PREFIX
        self.delta_floor: dict[str, int] = {}
        self._sorted: tuple[tuple[Any, ...], list[int]] | None = None

    def context(self, table: TableDef, q: Query, suffix: str = "") -> str:
        cols = f"({','.join(q.select)})" if q.select else ""
        return f"{self.api}/$metadata#{table.name}{cols}{suffix}"

    def read(self, table: TableDef, q: Query) -> tuple[dict[str, Any], dict[str, str]]:
        applied = [f"odata.maxpagesize={q.page_size}"] if q.size_applied else []
        tracking = q.track and table.tracked
        if tracking or q.deltatoken is not None:
            if q.filter is not None or q.orderby or q.top is not None:
                raise DataverseError(400, BAD_QUERY, "$filter, $orderby and $top are not "
                                     "supported together with change tracking.")
            if tracking:
                applied.append("odata.track-changes")
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        try:
            if q.deltatoken is not None:
                if not table.tracked:
                    raise DataverseError(400, BAD_QUERY, f"Change tracking is not enabled for "
                                         f"the entity '{table.entity}'.")
                return self._delta(table, q), headers
            return self._page(table, q, tracking), headers
        except ValueError:  # a cookie whose numbers were tampered with
            raise DataverseError(400, BAD_QUERY, f"The $skiptoken '{q.skiptoken}' is not "
                                 "valid.") from None

    def _page(self, table: TableDef, q: Query, tracking: bool) -> dict[str, Any]:
        predicate = compile_filter(q.filter, table) if q.filter is not None else None
        page, attrs = 1, dict[str, str]()
        if q.skiptoken:
            page, attrs = read_cookie(q.skiptoken)
        # A tracked read's later pages stay tracked even if the Prefer header is not re-sent.
        tracking = (tracking or "version" in attrs) and table.tracked
        watermark = int(attrs.get("version", self.store.version))
        rows: list[tuple[int, dict[str, Any]]] = []
        more = False
        if q.orderby:
            order = self._order(table, q, predicate)
            start = int(attrs.get("offset", 0))
            chosen = order[start:start + q.page_size]
            rows = [(i, r) for i in chosen if (r := self.store.get(table.name, i)) is not None]
            more = start + q.page_size < len(order)
            next_attrs: dict[str, Any] = {"offset": start + q.page_size}
        else:
            start = int(attrs.get("resume", 0))
            for index, row in self._walk(table, q, start):
                if predicate is not None and not predicate(row):
                    continue
                if len(rows) == q.page_size:
                    more = True
                    break
                rows.append((index, row))
            next_attrs = {}
            if rows:
                next_attrs = {"last": "{" + rows[-1][1][table.key].upper() + "}",
                              "first": "{" + rows[0][1][table.key].upper() + "}",
                              "resume": rows[-1][0] + 1}
        body: dict[str, Any] = {"@odata.context": self.context(table, q)}
        if q.count and page == 1:
            body["@odata.count"] = min(self._count(table, predicate), MAX_PAGE)
        body["value"] = [project(r, q.select, table.key) for _i, r in rows]
        if more and q.top is None:
            if tracking:
                next_attrs["version"] = watermark
            cookie = make_cookie(page + 1, table, next_attrs, tracking)
            body["@odata.nextLink"] = link(self.api, table.name,
                                           q.link_params() + [("$skiptoken", cookie)])
        elif tracking:
            body["@odata.deltaLink"] = self._delta_link(table, q, watermark)
        return body

    def _walk(self, table: TableDef, q: Query, start: int) -> Any:
        """Rows from `start`; a filter that is just `<key, lookup or seeded number> eq
        <literal>` visits only the rows that can match instead of the whole table (the filter
        still decides)."""
        hint = _EQ_HINT.fullmatch(q.filter or "")
        picked = (self.store.candidates(table.name, hint.group(1),
                                        hint.group(2) or hint.group(3), start) if hint else None)
        if picked is None:
            yield from self.store.scan(table.name, start)
            return
        for index in picked:
            row = self.store.get(table.name, index)
            if row is not None:
                yield index, row

    def _count(self, table: TableDef, predicate: Any) -> int:
        if predicate is None:
            return self.store.count(table.name)
        return sum(1 for _i, row in self.store.scan(table.name) if predicate(row))

    def _order(self, table: TableDef, q: Query, predicate: Any) -> list[int]:
        key = (table.name, q.filter, tuple(q.orderby), self.store.version)
        if self._sorted is not None and self._sorted[0] == key:
            return self._sorted[1]
        cols = [c for c, _d in q.orderby]
        keyed = [(tuple(sort_key(row.get(c)) for c in cols), i)
                 for i, row in self.store.scan(table.name)
                 if predicate is None or predicate(row)]
        for pos in range(len(cols) - 1, -1, -1):
            keyed.sort(key=lambda item: item[0][pos], reverse=q.orderby[pos][1])
        order = [i for _k, i in keyed]
        self._sorted = (key, order)
        return order

    def _delta_link(self, table: TableDef, q: Query, version: int) -> str:
        stamp = self.store.now().astimezone(dt.UTC).strftime("%m/%d/%Y %H:%M:%S")
        return link(self.api, table.name, q.link_params() + [("$deltatoken",
                                                              f"{version}!{stamp}")])

    def _delta(self, table: TableDef, q: Query) -> dict[str, Any]:
        token = q.deltatoken or ""
        try:
            since = int(token.split("!", 1)[0])
        except ValueError:
            raise DataverseError(400, BAD_QUERY, f"The delta token '{token}' is not valid.") \
                from None
        if since < self.delta_floor.get(table.name, 0) or since > self.store.version:
            raise DataverseError(400, EXPIRED_DELTA, "The version stamp associated with the "
                                 "client has expired. Please perform a full sync.")
        page, attrs = 1, dict[str, str]()
        if q.skiptoken:
            page, attrs = read_cookie(q.skiptoken)
        upto = int(attrs.get("version", self.store.version))
        offset = int(attrs.get("offset", 0))
        changes = self.store.changes_since(table.name, since, upto)
        chosen = changes[offset:offset + q.page_size]
        values: list[dict[str, Any]] = []
        for index, row in chosen:
            if row is None:
                values.append({"@odata.context": f"{self.api}/$metadata#{table.name}"
                               "/$deletedEntity", "id": self.store.guid_of(table.name, index),
                               "reason": "deleted"})
            else:
                values.append(project(row, q.select, table.key))
        body: dict[str, Any] = {"@odata.context": self.context(table, q, "/$delta"),
                                "value": values}
        if offset + q.page_size < len(changes):
            cookie = make_cookie(page + 1, table, {"offset": offset + q.page_size,
                                                   "version": upto}, True)
            body["@odata.nextLink"] = link(self.api, table.name, q.link_params() + [
                ("$deltatoken", token), ("$skiptoken", cookie)])
        else:
            body["@odata.deltaLink"] = self._delta_link(table, q, upto)
        return body

    def expire_delta_tokens(self, table: str | None = None) -> None:
        """Every delta token issued so far (for one table, or all) stops working."""
        self.store.version += 1  # tokens issued from now on are newer than the floor
        for name in [table] if table else list(self.store.tables):
            self.delta_floor[name] = self.store.version
