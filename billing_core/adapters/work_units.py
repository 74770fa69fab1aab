"""Partitioned work: a job split into units that workers claim exactly once, with a lease.

A *job* is any name (``bill_run:42``, ``outbox:crm1``); its *units* are key ranges
``lo..hi`` (inclusive) numbered in the order they should be done. Any number of processes, on
any number of machines sharing the database, call :func:`claim` in a loop; each unit is handed
to one of them at a time.

Rules kept here
- Claiming is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
  on PostgreSQL: two claimers never get the same unit, and neither waits for the other's row
  locks. SQLite has one writer (its write transaction is taken at ``BEGIN IMMEDIATE``), so the
  same statement without the locking clause is exclusive there too.
- A claim has a lease (``lease_until``). A unit is claimable while ``pending``, or ``claimed``
  with its lease past, or ``claimed`` by a process known to be gone
  (:func:`billing_core.adapters.owner.is_gone`: same host, no such process). A worker that
  dies therefore gives its units back by itself; a worker that lives longer than its lease
  calls :func:`extend` (a heartbeat) between pieces of work.
- :func:`finish` marks a unit ``done`` only while the caller still holds it, and should run in
  the transaction that did the unit's work: the work and "done" commit together or not at
  all. A finish that returns False means the lease was lost (another worker took the unit):
  roll the work back. The work itself must still be safe to do twice (the database's own
  guards): a lease is time, and a stalled process can outlive it.
- ``claims`` counts how often a unit was handed out: more than 1 means a claimer died or let
  its lease pass and another took the unit over.
- A claimer is named like any claim owner (``pid@host/start``, :mod:`billing_core.adapters.
  owner`), optionally followed by ``#tag`` to tell several claimers of one process apart.
- Times are the callers' clocks (aware UTC). Machines sharing a job must keep their clocks
  within a small fraction of the lease (NTP does).
- Nothing here commits: every function works in the caller's connection and transaction.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, insert, or_, select, update

from billing_core.adapters import owner
from billing_core.adapters.tables import work_units

#: The ``hi`` of an open-ended last unit (keys created after the units were cut fall in it).
KEY_MAX = 2**63 - 1

PENDING, CLAIMED, DONE = "pending", "claimed", "done"


@dataclass(frozen=True)
class Unit:
    id: int
    job: str
    unit_no: int
    lo: int
    hi: int
    claims: int


@dataclass(frozen=True)
class Progress:
    """A job's units by state, and the sum of its done units' results (numbers only)."""
    total: int
    pending: int
    claimed: int
    done: int
    expired: int                  # claimed, lease past: claimable again
    reclaimed: int                # units handed out more than once
    totals: dict[str, int]

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done == self.total


def key_ranges(conn: Connection, column: Any, size: int,
               where: ColumnElement[bool] | None = None) -> list[tuple[int, int]]:
    """Cut the keys of ``column`` (an integer key, e.g. ``accounts.c.id``) into ranges of
    ``size`` keys each, in key order, read on the server (one window query; only every
    ``size``-th key comes back). The ranges cover every key from 1 up: each starts after the
    previous one ends, and the last one is open (``KEY_MAX``), so a key inserted later is in
    exactly one range."""
    if size <= 0:
        raise ValueError("size must be positive")
    numbered = select(column.label("k"),
                      func.row_number().over(order_by=column).label("rn"))
    if where is not None:
        numbered = numbered.where(where)
    sub = numbered.subquery()
    ends = [int(k) for k in conn.execute(
        select(sub.c.k).where(sub.c.rn % size == 0).order_by(sub.c.k)).scalars()]
    ranges, lo = [], 1
    for hi in ends:
        ranges.append((lo, hi))
        lo = hi + 1
    ranges.append((lo, KEY_MAX))
    return ranges


def create_units(conn: Connection, job: str, ranges: Iterable[tuple[int, int]],
                 now: datetime) -> int:
    """Add ``job``'s units, numbered in the order given; returns how many. A job's units are
    created once (``uq_work_units_job_unit``): create them in the transaction that creates
    the job, under whatever makes that creation single."""
    rows = [{"job": job, "unit_no": n, "lo": lo, "hi": hi, "state": PENDING, "claims": 0,
             "created_at": now} for n, (lo, hi) in enumerate(ranges, 1)]
    if rows:
        conn.execute(insert(work_units), rows)
    return len(rows)


def _claimable(job: str, now: datetime, gone: Sequence[str]) -> ColumnElement[bool]:
    taken_back = or_(work_units.c.lease_until < now, work_units.c.claimed_by.in_(gone)) \
        if gone else work_units.c.lease_until < now
    return and_(work_units.c.job == job,
                or_(work_units.c.state == PENDING,
                    and_(work_units.c.state == CLAIMED, taken_back)))


def _gone_holders(conn: Connection, job: str) -> list[str]:
    holders = conn.execute(select(work_units.c.claimed_by).where(
        work_units.c.job == job, work_units.c.state == CLAIMED).distinct()).scalars()
    return sorted(h for h in holders if h and owner.is_gone(h.split("#", 1)[0]))


def claim(conn: Connection, job: str, now: datetime, lease: timedelta, *,
          limit: int = 1, worker: str | None = None) -> list[Unit]:
    """Claim up to ``limit`` claimable units of ``job`` (lowest ``unit_no`` first) for
    ``worker`` (default: this process) until ``now + lease``; [] when none is claimable (all
    done, or all held by live claimers)."""
    worker = worker or owner.current()
    gone = _gone_holders(conn, job)
    pick = (select(work_units.c.id).where(_claimable(job, now, gone))
            .order_by(work_units.c.unit_no).limit(limit)
            .with_for_update(skip_locked=True))
    rows = conn.execute(
        update(work_units).where(work_units.c.id.in_(pick.scalar_subquery()))
        .values(state=CLAIMED, claimed_by=worker, lease_until=now + lease,
                claims=work_units.c.claims + 1)
        .returning(work_units.c.id, work_units.c.job, work_units.c.unit_no, work_units.c.lo,
                   work_units.c.hi, work_units.c.claims)).all()
    return sorted((Unit(int(r.id), r.job, int(r.unit_no), int(r.lo), int(r.hi), int(r.claims))
                   for r in rows), key=lambda u: u.unit_no)


def extend(conn: Connection, unit_ids: Sequence[int], now: datetime, lease: timedelta, *,
           worker: str | None = None) -> int:
    """Heartbeat: push the lease of the units ``worker`` still holds to ``now + lease``;
    returns how many it still holds (fewer than given: a lease was lost)."""
    if not unit_ids:
        return 0
    return int(conn.execute(update(work_units).where(
        work_units.c.id.in_(list(unit_ids)), work_units.c.state == CLAIMED,
        work_units.c.claimed_by == (worker or owner.current()),
    ).values(lease_until=now + lease)).rowcount)


def finish(conn: Connection, unit_id: int, now: datetime, result: dict[str, Any] | None = None,
           *, worker: str | None = None) -> bool:
    """Mark the unit ``done`` with ``result`` (JSON-able; numbers are summed by
    :func:`progress`), only while ``worker`` holds it. False: the claim was lost."""
    return conn.execute(update(work_units).where(
        work_units.c.id == unit_id, work_units.c.state == CLAIMED,
        work_units.c.claimed_by == (worker or owner.current()),
    ).values(state=DONE, lease_until=None, finished_at=now,
             result=None if result is None else json.dumps(result, sort_keys=True))
    ).rowcount == 1


def release(conn: Connection, unit_ids: Sequence[int], *, worker: str | None = None) -> int:
    """Give units back undone (a worker stopping early): pending again at once."""
    if not unit_ids:
        return 0
    return int(conn.execute(update(work_units).where(
        work_units.c.id.in_(list(unit_ids)), work_units.c.state == CLAIMED,
        work_units.c.claimed_by == (worker or owner.current()),
    ).values(state=PENDING, claimed_by=None, lease_until=None)).rowcount)


def release_expired(conn: Connection, job: str, now: datetime) -> int:
    """Make the claims whose lease has passed, or whose holder is known to be gone, pending
    again; returns how many. (:func:`claim` takes such units anyway: this is for a status
    that should show them as waiting.)"""
    gone = _gone_holders(conn, job)
    return int(conn.execute(update(work_units).where(
        _claimable(job, now, gone), work_units.c.state == CLAIMED,
    ).values(state=PENDING, claimed_by=None, lease_until=None)).rowcount)


def progress(conn: Connection, job: str, now: datetime) -> Progress:
    """Units by state, expired claims, re-claimed units, and the done units' summed results."""
    counts = {PENDING: 0, CLAIMED: 0, DONE: 0}
    expired = reclaimed = 0
    totals: dict[str, int] = {}
    for state, lease_until, claims, result in conn.execute(select(
            work_units.c.state, work_units.c.lease_until, work_units.c.claims,
            work_units.c.result).where(work_units.c.job == job)):
        counts[state] = counts.get(state, 0) + 1
        expired += state == CLAIMED and lease_until is not None and lease_until < now
        reclaimed += claims > 1
        if result:
            for key, value in json.loads(result).items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
    return Progress(sum(counts.values()), counts[PENDING], counts[CLAIMED], counts[DONE],
                    expired, reclaimed, totals)


def holders(conn: Connection, job: str) -> list[str]:
    """The claimers holding units of ``job`` now (whatever their leases)."""
    return sorted(str(h) for h in conn.execute(select(work_units.c.claimed_by).where(
        work_units.c.job == job, work_units.c.state == CLAIMED).distinct()).scalars() if h)


def others_holding(conn: Connection, job: str, now: datetime, worker: str) -> bool:
    """Whether a claimer other than ``worker`` holds a unit of ``job`` with its lease still
    running: another process is working on the job now."""
    return conn.execute(select(work_units.c.id).where(
        work_units.c.job == job, work_units.c.state == CLAIMED,
        work_units.c.claimed_by != worker, work_units.c.lease_until >= now,
    ).limit(1)).first() is not None


def remaining(conn: Connection, job: str) -> int:
    """Units of ``job`` not done yet (pending or claimed)."""
    return int(conn.execute(select(func.count()).select_from(work_units).where(
        work_units.c.job == job, work_units.c.state != DONE)).scalar_one())


__all__ = ["CLAIMED", "DONE", "KEY_MAX", "PENDING", "Progress", "Unit", "claim", "create_units",
           "extend", "finish", "holders", "key_ranges", "others_holding", "progress", "release",
           "release_expired", "remaining"]
