"""In-memory Salesforce data: seeded base rows plus the rows changed since (the overrides).

Rules this module keeps:
- Only changed, created and deleted rows are stored; every other row is regenerated from the seed.
- A row dict is never mutated once stored: a write stores a new dict, so a query's snapshot (a
  shallow copy of the overrides) stays consistent while later writes land.
- Every write stamps LastModifiedDate and SystemModstamp from the sandbox clock (millisecond
  precision) unless the caller gives the moment (admin "stamp together" / "commit late"), and
  LastModifiedById with the user who wrote (the API's integration user, else a person).
- A delete keeps the row with IsDeleted = true (queryAll sees it) and logs (id, deletedDate).
- One lock guards all writes and snapshots.
- Every create, update and delete is told to `listener` (op "Create"/"Update"/"Delete", the
  object, the row after the write), when one is set: the sandbox's change events (notify.py).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..core import SandboxClock
from .ids import ADMIN_USER, make_id, parse_id
from .schema import OBJECTS, SObject
from .seed import Row, Seed


def now_ms(clock: SandboxClock) -> dt.datetime:
    at = clock.now()
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of one table for one query cursor."""

    obj: SObject
    seed: Seed
    base_count: int
    changed: dict[int, Row]

    def get(self, index: int) -> Row | None:
        row = self.changed.get(index)
        return row if row is not None else self.seed.row(self.obj.name, index)

    def base_rows(self, lo: int, hi: int, reverse: bool = False) -> Iterator[Row]:
        """Unchanged base rows with lo <= index < hi, in index order (or reversed)."""
        indices = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
        changed, gen, name = self.changed, self.seed.row, self.obj.name
        for i in indices:
            if i in changed:
                continue
            row = gen(name, i)
            if row is not None:
                yield row


class Store:
    """All tables of one sandbox org."""

    def __init__(self, seed: Seed, clock: SandboxClock) -> None:
        self.seed = seed
        self.clock = clock
        self.lock = threading.RLock()
        self._changed: dict[str, dict[int, Row]] = {}
        self._next: dict[str, int] = {}
        self.deleted_log: dict[str, list[tuple[str, dt.datetime]]] = {}
        self.listener: Callable[[str, SObject, Row], None] | None = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self._changed = {o.name: {} for o in OBJECTS.values()}
            self._next = {o.name: self.seed.counts[o.name] for o in OBJECTS.values()}
            self.deleted_log = {o.name: [] for o in OBJECTS.values()}

    def snapshot(self, obj: SObject) -> Snapshot:
        with self.lock:
            return Snapshot(obj, self.seed, self.seed.counts[obj.name], dict(self._changed[obj.name]))

    def locate(self, obj: SObject, record_id: str) -> int | None:
        """Row index of `record_id` in `obj`, if such a row exists (deleted or not)."""
        parsed = parse_id(record_id)
        if parsed is None or parsed[0] != obj.prefix:
            return None
        return parsed[1] if self.get(obj, parsed[1]) is not None else None

    def get(self, obj: SObject, index: int) -> Row | None:
        with self.lock:
            row = self._changed[obj.name].get(index)
        return row if row is not None else self.seed.row(obj.name, index)

    def get_by_id(self, obj: SObject, record_id: str) -> Row | None:
        index = self.locate(obj, record_id)
        return None if index is None else self.get(obj, index)

    def update(self, obj: SObject, index: int, values: dict[str, Any],
               at: dt.datetime | None = None, by: str = ADMIN_USER) -> Row:
        """Store `values` on row `index` and stamp it; returns the new row."""
        with self.lock:   # told under the lock: events leave in the order of the writes
            row = self._update(obj, index, values, at, by)
            if self.listener is not None:
                self.listener("Update", obj, row)
            return row

    def _update(self, obj: SObject, index: int, values: dict[str, Any],
                at: dt.datetime | None, by: str) -> Row:
        with self.lock:
            old = self.get(obj, index)
            if old is None:
                raise KeyError(f"{obj.name} row {index} does not exist")
            stamp = at or now_ms(self.clock)
            row = {**old, **values, "LastModifiedDate": stamp, "SystemModstamp": stamp,
                   "LastModifiedById": by}
            self._changed[obj.name][index] = row
            return row

    def create(self, obj: SObject, values: dict[str, Any], at: dt.datetime | None = None,
               by: str = ADMIN_USER) -> Row:
        with self.lock:
            index = self._next[obj.name]
            self._next[obj.name] = index + 1
            stamp = at or now_ms(self.clock)
            row: Row = {f.name: None for f in obj.fields}
            row.update(values)
            row.update({"Id": make_id(obj.prefix, index), "IsDeleted": False,
                        "CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp,
                        "LastModifiedById": by})
            self._changed[obj.name][index] = row
            if self.listener is not None:
                self.listener("Create", obj, row)
            return row

    def delete(self, obj: SObject, index: int, at: dt.datetime | None = None,
               by: str = ADMIN_USER) -> Row:
        with self.lock:
            stamp = at or now_ms(self.clock)
            row = self._update(obj, index, {"IsDeleted": True}, at=stamp, by=by)
            self.deleted_log[obj.name].append((row["Id"], stamp))
            if self.listener is not None:
                self.listener("Delete", obj, row)
            return row

    def next_index(self, obj: SObject) -> int:
        """Index the next created row of `obj` will get (hold `lock` to rely on it)."""
        with self.lock:
            return self._next[obj.name]

    def changed_rows(self, obj: SObject) -> list[Row]:
        with self.lock:
            return list(self._changed[obj.name].values())
