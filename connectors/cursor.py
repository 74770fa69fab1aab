"""Cursors: opaque JSON strings the sync engine stores per (connection, object).

Two kinds:
- stamp (Salesforce SystemModstamp, Dataverse modifiedon): `{"mode": "stamp", "stamp": ISO,
  "seen": {id: ISO}}`. The next read asks for rows stamped `>= stamp - overlap` (late commits land
  stamped in the past); `seen` holds the (id, stamp) pairs already applied inside that window so
  they are not handed out twice; a row whose stamp changed is new and is handed out.
- delta (Dataverse change tracking): `{"mode": "delta", "link": "<@odata.deltaLink>"}`.

Rules kept here: the stamp only moves forward and never past the run's start time (rows changed
during the run are read again next run, then dropped by `seen`); `seen` is pruned to the overlap
window and bounded (`max_seen`, newest kept, so a cursor stays small even after a mass update):
beyond it, a re-read row is handed out again, which the engine's idempotent upserts make
harmless. Correctness never depends on `seen`: the stamp never passes a row not yet handed out.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from connectors.base import FatalError
from connectors.values import parse_datetime


def decode(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except ValueError:
        raise FatalError(f"cursor is not valid JSON: {cursor[:80]!r}") from None
    if not isinstance(data, dict) or data.get("mode") not in ("stamp", "delta"):
        raise FatalError(f"cursor of an unknown kind: {cursor[:80]!r}")
    return data


def delta_cursor(link: str) -> str:
    return json.dumps({"mode": "delta", "link": link})


class StampTracker:
    """Tracks one incremental read: which rows to hand out and the cursor after each page."""

    def __init__(self, cursor: str | None, overlap: timedelta, run_started: datetime,
                 max_seen: int = 2_000):
        data = decode(cursor)
        stamp = data.get("stamp") if data.get("mode") == "stamp" else None
        self.stamp: datetime | None = parse_datetime(stamp) if stamp else None
        self.seen: dict[str, datetime] = {
            k: parse_datetime(v) for k, v in data.get("seen", {}).items()
        } if self.stamp else {}
        self.overlap = overlap
        self.run_started = run_started
        self.max_seen = max_seen

    @property
    def since(self) -> datetime | None:
        """Lower bound (inclusive) of the next read; None means read everything."""
        return None if self.stamp is None else self.stamp - self.overlap

    def admit(self, crm_id: str, stamp: Any) -> bool:
        """True if the row is new to the engine; records it as applied."""
        if not isinstance(stamp, datetime):
            return True  # no usable stamp: hand it out, cannot advance on it
        if self.seen.get(crm_id) == stamp:
            return False
        self.seen[crm_id] = stamp
        capped = min(stamp, self.run_started)
        if self.stamp is None or capped > self.stamp:
            self.stamp = capped
        return True

    def cursor(self) -> str | None:
        if self.stamp is None:
            return None
        floor = self.stamp - self.overlap
        kept = sorted(((s, i) for i, s in self.seen.items() if s >= floor), reverse=True)
        kept = kept[: self.max_seen]
        self.seen = {i: s for s, i in kept}
        return json.dumps({
            "mode": "stamp",
            "stamp": self.stamp.isoformat(),
            "seen": {i: s.isoformat() for s, i in reversed(kept)},
        })
