"""Rows of every table: seed rows generated on demand, plus the changes made since.

Rules kept:
- Only overrides are stored (changed columns, created rows, deletions); a seed row that nobody
  touched is regenerated from (seed, index) each time it is read.
- Every write takes the next number from one global, monotonic version counter (as Dataverse's
  rowversion), sets `modifiedon` from the sandbox clock and `_modifiedby_value` to the writing
  user (`actor`, set by the side for each request), and is remembered per table by version,
  which is all change tracking needs.
- Row indexes never move: created rows get the next index after the last one, so a scan that
  resumes after index i never skips or repeats a row.
- Callers hold the side's lock; this class does no locking of its own.
- Every create, update and delete is told to `listener` (op "Create"/"Update"/"Delete", table,
  GUID, the columns written, the row after the write or None), when one is set: the sandbox's
  change events (notify.py). Between `hold()` and `release(commit)` (a `$batch` change set)
  they are kept back, then told on commit or forgotten on rollback, as Dataverse runs
  asynchronous steps only for committed transactions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from .schema import TABLES
from .seed import FIRST_WRITE_VERSION, Seeder
from .wire import fmt_time

Row = dict[str, Any]
Listener = Callable[[str, str, str, Row, "Row | None"], None]


class TableState:
    def __init__(self, name: str, seeded: int) -> None:
        self.name = name
        self.seeded = seeded
        self.next_index = seeded
        self.overrides: dict[int, Row] = {}
        self.deleted: dict[int, int] = {}  # index -> version of the delete
        self.changed: dict[int, int] = {}  # index -> version of the last write
        self.foreign_ids: dict[str, int] = {}  # GUIDs given by a client on create


class Store:
    def __init__(self, seeder: Seeder, now: Callable[[], dt.datetime],
                 first_version: int = FIRST_WRITE_VERSION, actor: str | None = None) -> None:
        self.seeder = seeder
        self.now = now
        #: The systemuserid the next writes are made by (the side sets it per request).
        self.actor = actor or seeder.person
        self.first_version = first_version
        self.version = first_version
        self.tables = {name: TableState(name, seeder.sizes[name]) for name in TABLES}
        self.listener: Listener | None = None
        self._held: list[tuple[str, str, str, Row, Row | None]] | None = None

    def _tell(self, op: str, table: str, guid: str, values: Row, row: Row | None) -> None:
        if self.listener is None:
            return
        if self._held is not None:
            self._held.append((op, table, guid, values, row))
        else:
            self.listener(op, table, guid, values, row)

    def hold(self) -> None:
        """Keep the changes' events back until `release` (a change set begins)."""
        self._held = []

    def release(self, commit: bool) -> None:
        """Tell the events kept back (commit) or forget them (rollback)."""
        held, self._held = self._held or [], None
        if commit and self.listener is not None:
            for event in held:
                self.listener(*event)

    def _bump(self) -> int:
        self.version += 1
        return self.version

    def get(self, table: str, index: int) -> Row | None:
        state = self.tables[table]
        if index >= state.next_index or index < 0 or index in state.deleted:
            return None
        override = state.overrides.get(index)
        if index >= state.seeded:
            return dict(override) if override is not None else None
        row = self.seeder.row(table, index)
        if override:
            row.update(override)
        return row

    def index_of(self, table: str, guid: str) -> int | None:
        """The index of a live row with this GUID, or None."""
        state = self.tables[table]
        index = state.foreign_ids.get(guid.lower())
        if index is None:
            index = self.seeder.codecs[table].index(guid)
        if index is None or index >= state.next_index or index in state.deleted:
            return None
        return index

    def scan(self, table: str, start: int = 0) -> Iterator[tuple[int, Row]]:
        """Live rows in index order from `start`, generated lazily."""
        state = self.tables[table]
        index = start
        while index < state.next_index:
            row = self.get(table, index)
            if row is not None:
                yield index, row
            index += 1

    def candidates(self, table: str, column: str, value: str, start: int) -> list[int] | None:
        """Indexes from `start` that may hold `column eq value` (seed shortcut plus every row
        written since, since a write may have set the column); None means: scan them all."""
        seeded = self.seeder.candidates(table, column, value)
        if seeded is None:
            return None
        state = self.tables[table]
        picked = set(seeded) | set(state.overrides) | set(range(state.seeded, state.next_index))
        return sorted(i for i in picked if i >= start)

    def count(self, table: str) -> int:
        state = self.tables[table]
        return state.next_index - len(state.deleted)

    def update(self, table: str, index: int, values: Row) -> Row:
        state = self.tables[table]
        version = self._bump()
        override = state.overrides.setdefault(index, {})
        override.update(values)
        override["versionnumber"] = version
        override["modifiedon"] = fmt_time(self.now())
        override["_modifiedby_value"] = self.actor
        state.changed[index] = version
        row = self.get(table, index)
        if row is None:
            raise KeyError(f"{table} row {index} vanished during an update")
        if self.listener is not None:
            key = TABLES[table].key
            self._tell("Update", table, row[key], {**values, key: row[key],
                                                   "modifiedon": row["modifiedon"],
                                                   "_modifiedby_value": self.actor}, row)
        return row

    def create(self, table: str, values: Row, guid: str | None = None) -> Row:
        state = self.tables[table]
        tdef = TABLES[table]
        index = state.next_index
        state.next_index += 1
        key = guid.lower() if guid else self.seeder.guid(table, index)
        if guid:
            state.foreign_ids[key] = index
        now = fmt_time(self.now())
        row: Row = {column: None for column in tdef.columns}
        row.update(values)
        version = self._bump()
        row.update({tdef.key: key, "createdon": now, "modifiedon": now, "versionnumber": version,
                    "_modifiedby_value": self.actor})
        if "statecode" in tdef.columns and row["statecode"] is None:
            row["statecode"] = 0
        state.overrides[index] = row
        state.changed[index] = version
        if self.listener is not None:
            self._tell("Create", table, key, {k: v for k, v in row.items() if v is not None},
                       dict(row))
        return dict(row)

    def delete(self, table: str, index: int) -> None:
        state = self.tables[table]
        guid = self.guid_of(table, index) if self.listener is not None else ""
        version = self._bump()
        state.deleted[index] = version
        state.changed[index] = version
        state.overrides.pop(index, None)
        if self.listener is not None:
            self._tell("Delete", table, guid, {}, None)

    def guid_of(self, table: str, index: int) -> str:
        state = self.tables[table]
        for guid, found in state.foreign_ids.items():
            if found == index:
                return guid
        return self.seeder.guid(table, index)

    def changes_since(self, table: str, since: int, upto: int) -> list[tuple[int, Row | None]]:
        """Rows written or deleted in (since, upto], in version order; None marks a delete."""
        state = self.tables[table]
        picked = sorted((v, i) for i, v in state.changed.items() if since < v <= upto)
        return [(i, None if i in state.deleted else self.get(table, i)) for _v, i in picked]


def snapshot(store: Store) -> tuple[int, dict[str, tuple[Any, ...]]]:
    """What a change set needs to roll back: the version and each table's overrides."""
    import copy

    return store.version, {
        name: (s.next_index, copy.deepcopy(s.overrides), dict(s.deleted), dict(s.changed),
               dict(s.foreign_ids))
        for name, s in store.tables.items()
    }


def restore(store: Store, saved: tuple[int, dict[str, tuple[Any, ...]]]) -> None:
    version, tables = saved
    store.version = max(store.version, version)  # versions never go back, even on rollback
    for name, (next_index, overrides, deleted, changed, foreign) in tables.items():
        state = store.tables[name]
        state.next_index, state.overrides, state.deleted = next_index, overrides, deleted
        state.changed, state.foreign_ids = changed, foreign
