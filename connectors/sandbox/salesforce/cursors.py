"""Query result paging: batch sizes, query locators and `nextRecordsUrl`.

Rules this module keeps:
- A page holds `batchSize` records (header `Sforce-Query-Options: batchSize=N`, clamped to
  200..2000; default 2000). More rows → `done: false` and `nextRecordsUrl`
  `/services/data/vXX.X/query/01g...-OFFSET` (queryAll cursors page under `/queryAll/`).
- A cursor reads a snapshot taken when the query ran, so later writes never shift its pages;
  asking for the same offset again (a client retry) re-reads it from the snapshot.
- At most MAX_OPEN cursors are kept (oldest dropped); an unknown locator is 400
  INVALID_QUERY_LOCATOR.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .ids import make_id
from .query import Plan
from .seed import Row
from .store import Snapshot

MAX_BATCH, MIN_BATCH, MAX_OPEN = 2000, 200, 500
_BATCH = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)


def batch_size(header: str | None) -> int:
    match = _BATCH.search(header or "")
    if match is None:
        return MAX_BATCH
    return max(MIN_BATCH, min(MAX_BATCH, int(match.group(1))))


@dataclass
class Cursor:
    plan: Plan
    snap: Snapshot
    total: int
    position: int = 0
    rows: Iterator[Row] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self, offset: int, size: int) -> list[Row]:
        with self.lock:
            if self.rows is None or offset != self.position:
                self.rows = itertools.islice(self.plan.rows(self.snap), offset, None)
                self.position = offset
            page = list(itertools.islice(self.rows, size))
            self.position += len(page)
            return page


class Cursors:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[str, Cursor] = OrderedDict()
        self._serial = itertools.count(1)

    def open(self, cursor: Cursor) -> str:
        locator = make_id("01g", next(self._serial))
        with self._lock:
            self._open[locator] = cursor
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)
        return locator

    def get(self, locator: str) -> Cursor | None:
        with self._lock:
            return self._open.get(locator)

    def close(self, locator: str) -> None:
        with self._lock:
            self._open.pop(locator, None)

    def clear(self) -> None:
        with self._lock:
            self._open.clear()


def answer(cursors: Cursors, cursor: Cursor, locator: str | None, offset: int, size: int,
           version: str, resource: str, render: Callable[[Row], dict[str, Any]]) -> dict[str, Any]:
    """One page of a query answer; opens a locator when more pages follow.

    A finished cursor stays open (until evicted) so a client may retry its last page.
    """
    rows = cursor.page(offset, size)
    end = offset + len(rows)
    done = end >= cursor.total or len(rows) < size
    body: dict[str, Any] = {"totalSize": cursor.total, "done": done}
    if not done:
        locator = locator or cursors.open(cursor)
        body["nextRecordsUrl"] = f"/services/data/{version}/{resource}/{locator}-{end}"
    body["records"] = [render(r) for r in rows]
    return body
