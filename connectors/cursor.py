"""Cursors: opaque JSON strings the sync engine stores per (connection, object).

Two kinds:
- stamp (Salesforce SystemModstamp, Dataverse modifiedon): `{"mode": "stamp", "stamp": ISO,
  "seen": {id: ISO}, "vers": {id: VERSION}, "own": {"user": ID, "from": ISO, "to": ISO}}`
  ("vers" and "own" optional). The next read asks for rows stamped `>= stamp - overlap` (late
  commits land stamped in the past); `seen` holds the (id, stamp) pairs already applied inside
  that window so they are not handed out twice; a row whose stamp changed is new and is handed
  out. Where stamps are coarser than writes (Dataverse's `modifiedon` is whole seconds: two
  writes of one row can share a stamp), the read passes each row's version too
  (`versionnumber`, new on every write) and a row is new when either changed (`vers`; a seen
  entry saved without a version is compared by its stamp alone).
- delta (Dataverse change tracking): `{"mode": "delta", "link": "<@odata.deltaLink>",
  "at": ISO}` ("at", when the link was received, optional).

Rules kept here: the stamp only moves forward and never past the run's start time (rows changed
during the run are read again next run, then dropped by `seen`); `seen` is pruned to the overlap
window and bounded (`max_seen`, newest kept, so a cursor stays small even after a mass update):
beyond it, a re-read row is handed out again, which the engine's idempotent upserts make
harmless. Correctness never depends on `seen`: the stamp never passes a row not yet handed out.

Our own writes (issue 15): the worker's push stamps every record it writes, so without more the
overlap window hands our own writes back to us on every read until the stamp moves 300 s past
them. `own` says which of them the next read may leave out: rows *last modified by our CRM user*
(`user`) with a stamp in `[from, to)` (the CRM query adds "and not (by us and stamped in that
range)"; rows stamped `to` itself are read again and de-duplicated by `seen`). A read may
claim a range (:meth:`StampTracker.claim`) only when it ran to its end,
started after every write of ours it claims and saw none made while it ran; the range is then
`[stamp when the read began, stamp when it ended]`, joined to the previous range when the read
covered the gap between them (the previous range ends at or after `stamp - overlap`). Why
nothing can be lost by leaving those rows out:
- A row last modified by us in the range was written before the read began, and the read, which
  asked for everything stamped `>= stamp - overlap` (the range's start or later), handed out
  the row as our write left it, including any change a person committed before our write
  (a person's change made after our write would make the person its last modifier, and the row
  would be read again). Our write and whatever the CRM's automation did in the same transaction
  are in what the read saw.
- A write of ours made after the read is stamped no earlier than any row the read saw (its
  answer came back before the write was sent), so at `to` or later, and is read again.
- A row a person (or the CRM's automation under another user) commits late, stamped inside the
  range, is not last modified by us: the query returns it, as it always did.
A CRM that stamps coarser than it writes (Dataverse: whole seconds) leaves many of our rows
stamped `to` itself, read again on every run. There the caller may say the read is *settled*
(`claim(settled=unit)`): it began at least two units of real time after our last write ended,
so the CRM's clock had passed the unit of every write of ours the read saw by more than one unit
before the read began, and a write of ours made after it is stamped in a later unit; the range
then ends one unit after our newest write the read saw (one unit of margin for a CRM clock
that runs slow or steps back by less than that).
What the rule needs: every write under the integration user comes from this worker, under the
connection's lock (the sync's pull, push and settle run one at a time); another tool sharing
that CRM user could commit a row inside the range while a read runs, and it would be left out.
Rows we wrote that a claim covers are left out of `seen` (the next read does not return them),
so the cursor holds only the ids others changed inside the window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


def delta_cursor(link: str, at: datetime | None = None) -> str:
    """A change-tracking cursor; `at`: when the link was received (lets a reader keep a link
    that a read found nothing after, instead of saving a new one every run)."""
    data = {"mode": "delta", "link": link}
    if at is not None:
        data["at"] = at.isoformat()
    return json.dumps(data)


@dataclass(frozen=True)
class OwnRange:
    """Rows last modified by `user` with a stamp in `[start, end)`: our own writes, already read
    back as they stand (see the module's rules)."""

    user: str
    start: datetime
    end: datetime

    def as_json(self) -> dict[str, str]:
        return {"user": self.user, "from": self.start.isoformat(), "to": self.end.isoformat()}


def _own(data: Any) -> OwnRange | None:
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str)
                                             for k in ("user", "from", "to")):
        return None
    return OwnRange(data["user"], parse_datetime(data["from"]), parse_datetime(data["to"]))


class StampTracker:
    """Tracks one incremental read: which rows to hand out and the cursor after each page.

    `user` is the CRM user our writes are stamped with, when the connector knows it (else the
    cursor's own range tells it)."""

    def __init__(self, cursor: str | None, overlap: timedelta, run_started: datetime,
                 max_seen: int = 2_000, user: str | None = None):
        data = decode(cursor)
        stamp = data.get("stamp") if data.get("mode") == "stamp" else None
        self.stamp: datetime | None = parse_datetime(stamp) if stamp else None
        self.seen: dict[str, datetime] = {
            k: parse_datetime(v) for k, v in data.get("seen", {}).items()
        } if self.stamp else {}
        vers = data.get("vers") if self.stamp else None
        self.vers: dict[str, str] = {str(k): str(v) for k, v in vers.items()
                                     if k in self.seen} if isinstance(vers, dict) else {}
        self.overlap = overlap
        self.run_started = run_started
        self.max_seen = max_seen
        self.own = _own(data.get("own")) if self.stamp else None
        #: What this read may leave out (the cursor's range, fixed when the read begins).
        self.excluded = self.own
        self.user = user or (self.own.user if self.own else None)
        self.began_at = self.stamp
        self._mine: set[str] = set()

    @property
    def since(self) -> datetime | None:
        """Lower bound (inclusive) of the next read; None means read everything."""
        return None if self.stamp is None else self.stamp - self.overlap

    def admit(self, crm_id: str, stamp: Any, by: str | None = None,
              version: str | None = None) -> bool:
        """True if the row is new to the engine; records it as applied. `by` is the row's last
        modifier, when the read asked for it; `version` its version, where stamps are coarser
        than writes (module rules)."""
        if not isinstance(stamp, datetime):
            return True  # no usable stamp: hand it out, cannot advance on it
        if by is not None and by == self.user:
            self._mine.add(crm_id)
        if self.seen.get(crm_id) == stamp and (
                version is None or self.vers.get(crm_id, version) == version):
            return False
        self.seen[crm_id] = stamp
        if version is not None:
            self.vers[crm_id] = version
        else:
            self.vers.pop(crm_id, None)
        capped = min(stamp, self.run_started)
        if self.stamp is None or capped > self.stamp:
            self.stamp = capped
        return True

    def claim(self, settled: timedelta | None = None) -> None:
        """Our writes read back: called once the read has run to its end, when every write of
        ours it may cover was made before it began and none while it ran (module rules).

        `settled`: the CRM stamps at that precision (Dataverse: whole seconds) and the read
        began long enough after our last write that any later write of ours is stamped in a
        later unit (the caller's rule): the range then ends after the unit of our newest write
        the read saw, instead of at it, and those rows leave the cursor too."""
        if self.user is None or self.stamp is None or self.began_at is None:
            return
        start, end = self.began_at, self.stamp
        if settled is not None:
            newest = max((self.seen[i] for i in self._mine if i in self.seen), default=None)
            if newest is not None:
                end = max(end, newest + settled)
        # The previous range joins this one when this read covered what lies between them
        # (it asked for everything from `start - overlap` on, but our rows in that range).
        if self.own is not None and self.own.user == self.user \
                and self.own.end >= start - self.overlap:
            start, end = min(self.own.start, start), max(self.own.end, end)
        self.own = OwnRange(self.user, start, end)
        for crm_id in self._mine:
            stamp = self.seen.get(crm_id)
            if stamp is not None and start <= stamp < end:
                del self.seen[crm_id]      # the next read leaves it out: nothing to de-duplicate
                self.vers.pop(crm_id, None)

    def cursor(self) -> str | None:
        if self.stamp is None:
            return None
        floor = self.stamp - self.overlap
        kept = sorted(((s, i) for i, s in self.seen.items() if s >= floor), reverse=True)
        kept = kept[: self.max_seen]
        self.seen = {i: s for s, i in kept}
        self.vers = {i: v for i, v in self.vers.items() if i in self.seen}
        state: dict[str, Any] = {
            "mode": "stamp",
            "stamp": self.stamp.isoformat(),
            "seen": {i: s.isoformat() for s, i in reversed(kept)},
        }
        if self.vers:
            state["vers"] = {i: self.vers[i] for _s, i in reversed(kept) if i in self.vers}
        if self.own is not None and self.own.end >= floor:
            state["own"] = self.own.as_json()
        return json.dumps(state)
