"""The replication resources: `sobjects/X/deleted/` and `sobjects/X/updated/`.

Rules this module keeps:
- `start` and `end` are required ISO date-times with an offset; start after end, or a start
  older than the retention window (15 days for deleted, 30 for updated, by the sandbox clock),
  is 400 INVALID_REPLICATION_DATE. More than 600,000 ids is 400 EXCEEDED_ID_LIMIT.
- deleted → `{"deletedRecords": [{"id", "deletedDate"}], "earliestDateAvailable",
  "latestDateCovered"}`; updated → `{"ids": [...], "latestDateCovered"}`.
- latestDateCovered is min(end, now) rounded down to the minute; earliestDateAvailable is the
  delete log's purge mark (default: the start of the retention window, rounded down).
- Updated ids come from the seeded rows by bisection on SystemModstamp (no scan) plus the
  changed rows.
"""

from __future__ import annotations

import bisect
import datetime as dt
from typing import Any

from . import schema as S
from .seed import stamp
from .soql import parse_datetime
from .store import Store
from .wire import sf_datetime

MAX_IDS = 600_000


class ReplicationError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _minute(value: dt.datetime) -> dt.datetime:
    return value.replace(second=0, microsecond=0)


def _window(args: dict[str, Any], now: dt.datetime, days: int) -> tuple[dt.datetime, dt.datetime]:
    try:
        start, end = parse_datetime(args["start"]), parse_datetime(args["end"])
    except KeyError as missing:
        raise ReplicationError("INVALID_REPLICATION_DATE",
                               f"the {missing} parameter is required") from None
    except (ValueError, AttributeError):
        raise ReplicationError("INVALID_REPLICATION_DATE", "start and end must be date-times "
                               "with an offset, e.g. 2026-11-21T00:00:00+00:00") from None
    if start > end:
        raise ReplicationError("INVALID_REPLICATION_DATE",
                               "startDate must chronologically precede endDate")
    if start < now - dt.timedelta(days=days):
        raise ReplicationError("INVALID_REPLICATION_DATE",
                               f"startDate cannot be more than {days} days ago")
    return start, end


def deleted(store: Store, obj: S.SObject, args: dict[str, Any],
            purge_mark: dt.datetime | None) -> dict[str, Any]:
    now = store.clock.now()
    start, end = _window(args, now, 15)
    with store.lock:
        log = list(store.deleted_log[obj.name])
    records = [{"id": rid, "deletedDate": sf_datetime(at)} for rid, at in log
               if start <= at <= end and (purge_mark is None or at >= purge_mark)]
    if len(records) > MAX_IDS:
        raise ReplicationError("EXCEEDED_ID_LIMIT", "too many ids: choose a shorter window")
    earliest = purge_mark or (now - dt.timedelta(days=15))
    return {"deletedRecords": records, "earliestDateAvailable": sf_datetime(_minute(earliest)),
            "latestDateCovered": sf_datetime(_minute(min(end, now)))}


def updated(store: Store, obj: S.SObject, args: dict[str, Any]) -> dict[str, Any]:
    now = store.clock.now()
    start, end = _window(args, now, 30)
    snap = store.snapshot(obj)
    seq = range(snap.base_count)
    lo = bisect.bisect_left(seq, start, key=stamp)
    hi = bisect.bisect_right(seq, end, key=stamp)
    changed = [r for r in snap.changed.values()
               if not r["IsDeleted"] and start <= r["SystemModstamp"] <= end]
    if (hi - lo) + len(changed) > MAX_IDS:
        raise ReplicationError("EXCEEDED_ID_LIMIT", "too many ids: choose a shorter window")
    ids = [r["Id"] for r in snap.base_rows(lo, hi)] + [r["Id"] for r in changed]
    return {"ids": sorted(ids), "latestDateCovered": sf_datetime(_minute(min(end, now)))}
