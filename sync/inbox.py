"""The event inbox: the CRM's change events, stored durably before the CRM is answered, then
claimed by the targeted resync (``sync.resync``).

Design
- Table ``event_inbox`` (``sync.tables``): id, connection, source (``dataverse`` |
  ``salesforce_soap`` | ``salesforce_json``), event_id (the CRM's id of the event: a Dataverse
  ``OperationId``/``RequestId``, a Salesforce notification ``Id``, a callout's ``event_id:<id>``;
  a random ``lb:<uuid>`` when the CRM gave none), object (canonical: account, quote, ...),
  crm_id, action (informational: Create / Update / Delete / notify), received_at, state
  (``new`` | ``processing`` | ``done`` | ``failed`` | ``skipped``), attempts, claimed_by / claimed_at (the
  lease of the process working on it, ``billing_core.adapters.owner`` format), processed_at,
  error. Unique (connection, event_id); indexed by (state, connection, id) and by record.

Invariants
- Stored before acknowledged: a receiver answers 2xx (or the SOAP ``Ack``) only after the
  transaction holding the request's events committed; a crash after the answer loses nothing,
  a crash before it gets the event re-sent by the CRM (both CRMs retry until acknowledged).
- Once per event id: one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` (PostgreSQL) /
  ``INSERT OR IGNORE`` (SQLite) per request, so a re-sent event is acknowledged again and
  not stored twice, and a flood costs one statement per request, never a read first.
- The echo of the sync's own writes is ``skipped``: an event whose every named modifier is the
  connection's integration user (``connectors.events.by_user``, decided by the receiver) is
  stored ``skipped`` with its ``processed_at`` and never claimed, so a push costs no read back.
  Only such an event: a person's change of the same record is its own event, stored ``new``.
- An event only names a record. What billing learns comes from reading the record back from
  the CRM (``sync.resync``): a forged or stale payload changes nothing.
- Claiming is by record: a claim takes up to ``keys`` distinct (object, crm_id) of ``new``
  events (oldest first) and every ``new`` event of those records at once, so 10,000 events
  of one record are one claim and one CRM read. An event stored after the claim stays ``new``
  and causes a later read (it may describe a change the read did not see yet).
- A ``processing`` claim whose holder is known to be gone (same host, no such process), or
  whose lease (``LEASE``) ran out, is claimed again. Done events are purged after
  ``KEEP_DONE`` by the daemon's housekeeping.

Transactions
- ``store``: one short transaction per request (the insert), committed before the answer;
  on PostgreSQL the INSERT runs in autocommit (it is its own transaction: one round trip, no
  separate COMMIT), at most ``RECEIVER_CONNECTIONS`` at once (``_slots``: a flood queues
  there instead of exhausting the pool the daemon's jobs share); on SQLite the receivers of
  a process queue on one lock (one writer).
- ``claim``: one transaction (select the records, ``UPDATE ... RETURNING`` their events;
  PostgreSQL's row locks let two workers race without claiming one event twice: the second
  UPDATE re-checks ``state`` after the first commits).
- ``finish`` / ``release``: one transaction each, after the resync's own transactions.
"""
from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import QueuePool

from billing_core.adapters import owner
from sync.tables import event_inbox

NEW, PROCESSING, DONE, FAILED = "new", "processing", "done", "failed"
#: The echo of the sync's own write (the event's modifier is the connection's integration
#: user): stored (so a re-sent one is recognised, and counted) but never read back.
SKIPPED = "skipped"
STATES = (NEW, PROCESSING, DONE, FAILED, SKIPPED)
SOURCES = ("dataverse", "salesforce_soap", "salesforce_json")
#: A ``processing`` claim older than this is taken over (a resync batch takes seconds).
LEASE = timedelta(minutes=10)
#: Done events are kept this long (a re-sent event within it is still recognised).
KEEP_DONE = timedelta(days=7)
_SQLITE_WRITERS = threading.Lock()
#: Stores at once per engine (PostgreSQL): see ``_slots``.
RECEIVER_CONNECTIONS = 4
_SLOTS: weakref.WeakKeyDictionary[Engine, threading.BoundedSemaphore] = \
    weakref.WeakKeyDictionary()
_SLOTS_GUARD = threading.Lock()
#: Attempts before an event is ``failed`` (the next poll still reads its record).
MAX_ATTEMPTS = 10
#: A record's events wait for a settling object at most this many windows (``claim``): a
#: trickle of events on one record must not hold the others' for as long as it lasts.
SETTLE_PATIENCE = 10


@dataclass(frozen=True)
class InboxEvent:
    """One event to store: the CRM's event id (None: a random one), canonical object, id."""

    event_id: str | None
    object: str
    crm_id: str
    action: str = "notify"
    skipped: bool = False       # our own write's echo: stored ``skipped``, never read


@dataclass(frozen=True)
class Claim:
    """What one claim took: the event ids, and per object the distinct CRM ids."""

    event_ids: list[int]
    records: dict[str, list[str]]
    deferred: int = 0           # records left for a later round: their events still arrive

    @property
    def empty(self) -> bool:
        return not self.event_ids


def store(engine: Engine, connection: str, source: str, events: Sequence[InboxEvent],
          now: datetime) -> int:
    """Store a request's events in one committed statement; returns how many were new (a
    re-sent event id is not stored again)."""
    if not events:
        return 0
    rows = [{"connection": connection, "source": source,
             "event_id": e.event_id or f"lb:{uuid.uuid4().hex}", "object": e.object,
             "crm_id": e.crm_id, "action": e.action[:32], "received_at": now,
             "state": SKIPPED if e.skipped else NEW,
             "processed_at": now if e.skipped else None, "attempts": 0} for e in events]
    # SQLite has one writer at a time, and a writer that finds the lock taken polls for it
    # with growing sleeps: the receivers of this process queue on a lock of their own instead
    # (their answers wait for each other's commits, never for a poll's sleep).
    if engine.dialect.name == "postgresql":
        # One statement is its own transaction: in autocommit the INSERT commits with its
        # answer (one round trip, not INSERT then COMMIT; still durable before the ack).
        stmt: Any = postgresql.insert(event_inbox).values(rows).on_conflict_do_nothing(
            index_elements=["connection", "event_id"]).returning(event_inbox.c.id)
        with _slots(engine), \
                engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return len(conn.execute(stmt).all())
    with _SQLITE_WRITERS, engine.begin() as conn:
        stmt = sqlite.insert(event_inbox).values(rows).on_conflict_do_nothing(
            index_elements=["connection", "event_id"])
        # RETURNING counts exactly the rows inserted (a driver's rowcount may not say)
        return len(conn.execute(stmt.returning(event_inbox.c.id)).all())


def _slots(engine: Engine) -> threading.BoundedSemaphore:
    """The receivers' share of the engine's pool: at most ``RECEIVER_CONNECTIONS`` stores at
    once, never more than the pool's size less one. A flood then queues on this semaphore
    instead of opening (and closing) overflow connections per request, and leaves the pool's
    other connections to the daemon's jobs."""
    with _SLOTS_GUARD:
        slots = _SLOTS.get(engine)
        if slots is None:
            size = engine.pool.size() if isinstance(engine.pool, QueuePool) else 5
            slots = _SLOTS[engine] = threading.BoundedSemaphore(
                max(1, min(RECEIVER_CONNECTIONS, size - 1)))
        return slots


def _claimable(connection: str, now: datetime, gone: Iterable[str]) -> Any:
    stale = event_inbox.c.claimed_at < now - LEASE
    gone = list(gone)
    if gone:
        stale = or_(stale, event_inbox.c.claimed_by.in_(gone))
    # the connection's new and in-flight events by id through ix_event_inbox_state: with the
    # connection as a plain condition, SQLite (no statistics) took ix_event_inbox_record for
    # its GROUP BY order and walked every event of the connection, done ones included
    pending = select(event_inbox.c.id).where(event_inbox.c.state.in_((NEW, PROCESSING)),
                                             event_inbox.c.connection == connection)
    return and_(event_inbox.c.id.in_(pending),
                or_(event_inbox.c.state == NEW,
                    and_(event_inbox.c.state == PROCESSING, stale)))


def claim(engine: Engine, connection: str, now: datetime, *, keys: int,
          settle: timedelta | None = None, batch: int = 200,
          busy_since: datetime | None = None) -> Claim:
    """Claim up to ``keys`` records' events (every claimable event of each record).

    With ``settle``: an object whose newest claimable event is younger than ``settle`` is
    still receiving events (a bulk change arrives one webhook or message at a time), so only
    whole read batches of it (``batch`` records, what one ``read_by_ids`` query reads) are
    claimed, oldest first; the rest waits until its events stop arriving for ``settle``
    (``Claim.deferred``), at most ``SETTLE_PATIENCE`` windows after the record's first
    claimable event was received: one that waited that long is claimed whatever still
    arrives beside it (a record changed every 0.2 s held every other record of its object
    deferred for as long as it went on). A burst of 1,000 changed records is then read in 5 full queries
    instead of a partial query per round. ``busy_since`` (the previous round's start): events
    received since then count as still arriving too, however long that round took (on
    SQLite the receivers wait for a round's commit, which looks like a pause)."""
    me = owner.current()
    with engine.begin() as conn:
        gone = owner.gone_among(conn.execute(
            select(event_inbox.c.claimed_by).where(
                event_inbox.c.connection == connection, event_inbox.c.state == PROCESSING)
            .distinct()).scalars())
        where = _claimable(connection, now, gone)
        picked = conn.execute(
            select(event_inbox.c.object, event_inbox.c.crm_id,
                   func.min(event_inbox.c.received_at)).where(where)
            .group_by(event_inbox.c.object, event_inbox.c.crm_id)
            .order_by(func.min(event_inbox.c.id)).limit(keys)).all()
        by_object: dict[str, list[str]] = {}
        overdue: set[tuple[str, str]] = set()
        for obj, crm_id, first in picked:
            by_object.setdefault(str(obj), []).append(str(crm_id))
            if settle is not None and first <= now - SETTLE_PATIENCE * settle:
                overdue.add((str(obj), str(crm_id)))
        deferred = 0
        if settle is not None and by_object:
            busy = set(conn.execute(
                select(event_inbox.c.object).where(where)
                .group_by(event_inbox.c.object)
                .having(func.max(event_inbox.c.received_at) > min(
                    now - settle, busy_since or now))).scalars())
            for obj in busy & set(by_object):
                # a whole batch of the oldest, and whatever waited past the patience
                whole = len(by_object[obj]) // batch * batch
                kept = by_object[obj][:whole] + [c for c in by_object[obj][whole:]
                                                 if (obj, c) in overdue]
                deferred += len(by_object[obj]) - len(kept)
                by_object[obj] = kept
                if not kept:
                    del by_object[obj]
        ids: list[int] = []
        for obj, crm_ids in by_object.items():
            for start in range(0, len(crm_ids), 500):
                ids += [int(i) for i in conn.execute(
                    update(event_inbox).where(
                        where, event_inbox.c.connection == connection, event_inbox.c.object == obj,
                        event_inbox.c.crm_id.in_(crm_ids[start:start + 500]))
                    .values(state=PROCESSING, claimed_by=me, claimed_at=now,
                            attempts=event_inbox.c.attempts + 1)
                    .returning(event_inbox.c.id)).scalars()]
    return Claim(sorted(ids), by_object, deferred)


def finish(engine: Engine, event_ids: Sequence[int], now: datetime) -> None:
    """The claimed events' records were read back and applied: ``done``."""
    with engine.begin() as conn:
        for start in range(0, len(event_ids), 1000):
            conn.execute(update(event_inbox).where(
                event_inbox.c.id.in_(event_ids[start:start + 1000]),
                event_inbox.c.state == PROCESSING)
                .values(state=DONE, processed_at=now, claimed_by=None, error=None))


def release(engine: Engine, event_ids: Sequence[int], error: str, now: datetime, *,
            max_attempts: int = MAX_ATTEMPTS) -> int:
    """The resync failed: the events go back to ``new`` (tried again next round), or to
    ``failed`` once they have had ``max_attempts``; returns how many failed for good."""
    failed = 0
    with engine.begin() as conn:
        for start in range(0, len(event_ids), 1000):
            chunk = event_inbox.c.id.in_(event_ids[start:start + 1000])
            mine = and_(chunk, event_inbox.c.state == PROCESSING)
            failed += int(conn.execute(update(event_inbox).where(
                mine, event_inbox.c.attempts >= max_attempts)
                .values(state=FAILED, processed_at=now, claimed_by=None,
                        error=error[:2000])).rowcount or 0)
            conn.execute(update(event_inbox).where(mine).values(
                state=NEW, claimed_by=None, claimed_at=None, error=error[:2000]))
    return failed


def retry_failed(engine: Engine, connection: str | None = None) -> int:
    """Failed events back to ``new`` (attempts reset): ``ledgerbridge events retry``."""
    where = [event_inbox.c.state == FAILED]
    if connection is not None:
        where.append(event_inbox.c.connection == connection)
    with engine.begin() as conn:
        return int(conn.execute(update(event_inbox).where(*where).values(
            state=NEW, attempts=0, processed_at=None)).rowcount or 0)


def purge_done(engine: Engine, before: datetime) -> int:
    """Forget done (and skipped) events processed before ``before``."""
    with engine.begin() as conn:
        return int(conn.execute(delete(event_inbox).where(
            event_inbox.c.state.in_((DONE, SKIPPED)),
            event_inbox.c.processed_at < before)).rowcount or 0)


def pending_connections(conn: Connection) -> list[str]:
    """Connections with claimable-looking events (``new`` or ``processing``)."""
    return [str(c) for c in conn.execute(
        select(event_inbox.c.connection).where(event_inbox.c.state.in_((NEW, PROCESSING)))
        .distinct().order_by(event_inbox.c.connection)).scalars()]


def depth(conn: Connection, now: datetime) -> dict[str, Any]:
    """Events by state and the age in seconds of the oldest not yet processed (``new`` or
    ``processing``; None when there is none): ``status`` and ``/metrics``."""
    counts = {state: 0 for state in STATES}
    for state, n in conn.execute(select(event_inbox.c.state, func.count())
                                 .group_by(event_inbox.c.state)):
        counts[str(state)] = int(n)
    oldest = conn.execute(select(func.min(event_inbox.c.received_at)).where(
        event_inbox.c.state.in_((NEW, PROCESSING)))).scalar()
    age = None
    if oldest is not None:
        age = max((now - oldest).total_seconds(), 0.0)
    return {"by_state": counts, "oldest_unprocessed_seconds": age}
