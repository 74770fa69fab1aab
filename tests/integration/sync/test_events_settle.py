"""The events job's coalescing window (issue 17: 1,000 accounts changed at once are read in
ceil(1000/200) = 5 CRM queries). A bulk change reaches the daemon one webhook (Dataverse) or
one message of 100 (Salesforce) at a time, and the receivers wake the events job at each: every
round then read what had arrived, a partial query each (bench/events_latency.py against the
sandbox: 105 reads for 1,000 Dataverse accounts). With ``settle``, records whose events still
arrive are read only in whole batches of 200; the rest once their events stop. On SQLite and
PostgreSQL (``engine``). "Still arriving" is set by received times, not by how fast the test
runs."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from events_config import events_settings
from fake_crm import CountingCRM, FakeCRM
from sqlalchemy import Engine, func, select

from config.settings import Settings
from jobs.worker import EVENT_SETTLE, Worker
from sync import inbox
from sync.locks import job_lock
from sync.tables import event_inbox


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return events_settings(tmp_path, monkeypatch)


def _worker(engine: Engine, settings: Settings, crm: FakeCRM) -> Worker:
    return Worker(engine, settings, connector_factory=lambda s: crm)


def _event(crm_id: str) -> inbox.InboxEvent:
    return inbox.InboxEvent(uuid.uuid4().hex, "account", crm_id, "Update")


def _crm(n: int) -> CountingCRM:
    crm = CountingCRM()
    crm.seed_basic()
    for i in range(n):
        crm.put("account", f"X{i:04d}", name=f"Customer {i}", currency="USD", country="US",
                credit_limit=Decimal(1000), credit_hold=False)
    return crm


def _store(engine: Engine, first: int, last: int, at: datetime) -> None:
    inbox.store(engine, "sf", "salesforce_json",
                [_event(f"X{i:04d}") for i in range(first, last)], at)


def test_a_burst_arriving_in_pieces_is_read_in_whole_batches(engine: Engine,
                                                             settings: Settings) -> None:
    """250 events, a round, then 750 more: 2 + 4 reads of 200 = 1,000 records in 5 reads,
    the last 50 of the first piece read with the second (without the window: 200 + 50, then
    200 + 200 + 200 + 150 = 6 reads)."""
    crm = _crm(1000)
    worker = _worker(engine, settings, crm)
    # Received "in a minute": still arriving at both rounds however slow the machine is (a
    # received time of now turned old during a slow store of 250 events on a loaded CI run).
    arriving = datetime.now(UTC) + timedelta(minutes=1)
    try:
        _store(engine, 0, 250, arriving)
        [first] = worker.process_events(wait=True, settle=EVENT_SETTLE)
        assert (first.records, first.deferred, first.outcome) == (200, 50, "ok")
        _store(engine, 250, 1000, arriving)
        [second] = worker.process_events(wait=True, settle=EVENT_SETTLE)
        assert (second.records, second.deferred, second.outcome) == (800, 0, "ok")
    finally:
        worker.close()
    assert crm.by_ids == [("account", 200)] * 5
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event_inbox).where(
            event_inbox.c.state == "done")).scalar() == 1000


def test_records_whose_events_stopped_are_read_whatever_their_number(engine: Engine,
                                                                     settings: Settings) -> None:
    crm = _crm(30)
    worker = _worker(engine, settings, crm)
    try:
        _store(engine, 0, 30, datetime.now(UTC) - 2 * EVENT_SETTLE)
        [report] = worker.process_events(wait=True, settle=EVENT_SETTLE)
    finally:
        worker.close()
    assert (report.records, report.deferred) == (30, 0)
    assert crm.by_ids == [("account", 30)]


def test_the_events_job_reads_a_lone_change_once_its_window_has_passed(engine: Engine,
                                                                      settings: Settings) -> None:
    """One event just stored: the job's first round leaves it (it may be the first of a
    burst), looks again after the window and reads it: one read, processed no sooner than
    the window after it was received (however slow the machine, never before)."""
    crm = _crm(1)
    worker = _worker(engine, settings, crm)
    try:
        _store(engine, 0, 1, datetime.now(UTC))
        worker.events_job()
    finally:
        worker.close()
    assert crm.by_ids == [("account", 1)]
    with engine.connect() as conn:
        [(state, received, processed)] = conn.execute(select(
            event_inbox.c.state, event_inbox.c.received_at, event_inbox.c.processed_at)).all()
    assert state == "done"
    assert processed - received >= EVENT_SETTLE


def test_without_a_window_everything_claimable_is_read_at_once(engine: Engine,
                                                               settings: Settings) -> None:
    """``ledgerbridge events process`` and the tests' rounds: no window, no deferral."""
    crm = _crm(250)
    worker = _worker(engine, settings, crm)
    try:
        _store(engine, 0, 250, datetime.now(UTC) + timedelta(seconds=1))
        [report] = worker.process_events(wait=True)
    finally:
        worker.close()
    assert (report.records, report.deferred) == (250, 0)
    assert crm.by_ids == [("account", 200), ("account", 50)]


def test_events_received_since_the_last_round_began_count_as_still_arriving(
        engine: Engine, settings: Settings) -> None:
    """On SQLite the receivers wait for a round's commit: events received during a long round
    look older than the window when the next round starts. With ``busy_since`` (that round's
    start) they are still taken as arriving: only whole batches are read."""
    crm = _crm(250)
    worker = _worker(engine, settings, crm)
    try:
        round_began = datetime.now(UTC) - 3 * EVENT_SETTLE
        _store(engine, 0, 250, datetime.now(UTC) - 2 * EVENT_SETTLE)
        [report] = worker.process_events(wait=True, settle=EVENT_SETTLE,
                                         busy_since=round_began)
        assert (report.records, report.deferred) == (200, 50)
        [rest] = worker.process_events(wait=True, settle=EVENT_SETTLE,
                                       busy_since=datetime.now(UTC))
    finally:
        worker.close()
    assert (rest.records, rest.deferred) == (50, 0)
    assert crm.by_ids == [("account", 200), ("account", 50)]


def test_events_stored_while_another_job_holds_the_connection_run_when_it_frees(
        engine: Engine, settings: Settings) -> None:
    """The connection's lock is another job's (its cycle, a push) when the events job runs:
    the job does not end and leave the events to its next interval; it looks again until the
    lock frees, then reads them (the 250 stored meanwhile in 2 reads, not one per wake)."""
    crm = _crm(250)
    worker = _worker(engine, settings, crm)
    holding, release = threading.Event(), threading.Event()

    def other_job() -> None:
        with job_lock(engine, "crm:sf") as got:
            assert got
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=other_job)
    holder.start()
    job: threading.Thread | None = None
    try:
        assert holding.wait(60)
        _store(engine, 0, 250, datetime.now(UTC) - 2 * EVENT_SETTLE)
        job = threading.Thread(target=worker.events_job)
        job.start()
        deadline = time.monotonic() + 60          # a safety net, not a timed assertion
        while "sf" not in worker._events_blocked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "sf" in worker._events_blocked     # the job found the lock taken ...
        assert crm.by_ids == []
        release.set()                             # ... the other job ends
        job.join(60)
        assert not job.is_alive()
    finally:
        release.set()
        holder.join(60)
        if job is not None:
            worker.stop.set()
            job.join(60)
        worker.close()
    assert crm.by_ids == [("account", 200), ("account", 50)]      # read in that same job run
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event_inbox).where(
            event_inbox.c.state == "done")).scalar() == 250


def test_a_trickle_on_one_record_does_not_hold_the_others_past_the_patience(
        engine: Engine) -> None:
    """One account gets an event every 0.2 s, without end; another got one event 10 s ago.
    Before, the object counted as still arriving at every round, so the other account's
    event (less than a whole batch) was deferred for as long as the trickle lasted (60 s and
    more, until only the poll read it). Now an event waiting longer than
    ``inbox.SETTLE_PATIENCE`` times the window is claimed whatever arrives beside it; the
    records whose events are young still wait for a whole batch or a pause."""
    now = datetime.now(UTC)
    inbox.store(engine, "sf", "salesforce_json", [_event("OLD1")], now - timedelta(seconds=10))
    for k in range(5):              # BUSY's events of the last second: still arriving
        inbox.store(engine, "sf", "salesforce_json", [_event("BUSY")],
                    now - timedelta(seconds=0.2 * k))
    got = inbox.claim(engine, "sf", now, keys=1000, settle=EVENT_SETTLE)
    assert (got.records, got.deferred) == ({"account": ["OLD1"]}, 1)
    # the trickle goes on; once BUSY's own first event is that old, it is read too
    later = now + inbox.SETTLE_PATIENCE * EVENT_SETTLE
    inbox.store(engine, "sf", "salesforce_json", [_event("BUSY")], later)
    got = inbox.claim(engine, "sf", later, keys=1000, settle=EVENT_SETTLE)
    assert (got.records, got.deferred) == ({"account": ["BUSY"]}, 0)
