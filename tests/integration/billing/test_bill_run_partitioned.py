"""The partitioned bill run (issue 18): work units claimed exactly once, with leases; a run
shared by several workers bills what one worker bills; a worker killed with SIGKILL leaves its
units to another. On SQLite and PostgreSQL (the ``engine`` fixture), the exclusive-claim test
with real concurrent connections.

Checked against the ledger: one live invoice per account and period, gapless numbers, the
same invoices (account, period, total, lines) as a dry run in one walk computes, every unit
done, and how often each was claimed.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from billing_core.adapters import work_units as wu
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import bill_runs, invoice_lines, invoices, work_units
from billing_core.service import bill_run as bill_run_module
from billing_core.service.bill_run import BillRunOptions, BillRunResult, job_name, run_bill_run
from billing_core.service.reports import bill_run_progress

ROOT = Path(__file__).resolve().parents[3]
DAY = date(2026, 12, 6)
T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def _book(ledger: Any, n: int) -> None:
    seat = ledger.product("12.50")
    storage = ledger.product("3.333")
    for i in range(n):
        acc = ledger.account(bcd=(1, 6)[i % 2])
        ledger.subscribe(acc, seat, 1 + i % 4, date(2026, 11, 1))
        if i % 3 == 0:
            ledger.subscribe(acc, storage, 2, date(2026, 11, 20))


def _invoices(engine: Engine) -> dict[int, tuple[date, int, int]]:
    """Per account: (period start, total, lines) of its live invoice; asserts one each."""
    with engine.connect() as conn:
        rows = conn.execute(select(
            invoices.c.account_id, invoices.c.period_start, invoices.c.total_minor,
            select(func.count()).where(invoice_lines.c.invoice_id == invoices.c.id)
            .scalar_subquery()).where(invoices.c.status != "void")).all()
        numbers = sorted(conn.execute(select(invoices.c.number)).scalars())
    assert numbers == [f"INV-{k:06d}" for k in range(1, len(numbers) + 1)], "numbers not gapless"
    per = Counter((a, p) for a, p, _, _ in rows)
    assert all(n == 1 for n in per.values()), [k for k, n in per.items() if n > 1]
    return {a: (p, t, n) for a, p, t, n in rows}


def _reference(engine: Engine) -> dict[int, tuple[date, int, int]]:
    dry = run_bill_run(engine, DAY, dry_run=True, chunk_size=5)
    return {p.account_id: (p.period_start, p.total_minor, p.lines) for p in dry.invoices}


def _units(engine: Engine, run_id: int) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [(s, c) for s, c in conn.execute(select(work_units.c.state, work_units.c.claims)
                                                .where(work_units.c.job == job_name(run_id))
                                                .order_by(work_units.c.unit_no))]


def _run_status(engine: Engine, run_id: int) -> tuple[str, int]:
    with engine.connect() as conn:
        row = conn.execute(select(bill_runs.c.status, bill_runs.c.invoices_created)
                           .where(bill_runs.c.id == run_id)).one()
    return row[0], row[1]


# -- the work-unit module ------------------------------------------------------------------

def test_claims_are_exclusive_with_concurrent_connections(engine: Engine) -> None:
    """Four claimers on their own connections, claiming 1-3 units at a time until none is
    left: every unit is handed out once, to one of them."""
    with UnitOfWork(engine) as uow:
        wu.create_units(uow.conn, "test:exclusive", [(k, k) for k in range(1, 121)], T0)
        uow.commit()
    got: dict[str, list[int]] = {}
    barrier = threading.Barrier(4, timeout=30)
    failures: list[BaseException] = []

    def claimer(name: str, limit: int) -> None:
        mine = got.setdefault(name, [])
        try:
            barrier.wait()
            while True:
                with UnitOfWork(engine) as uow:
                    units = wu.claim(uow.conn, "test:exclusive", T0, LEASE, limit=limit,
                                     worker=f"w{name}")
                    uow.commit()
                if not units:
                    return
                mine.extend(u.unit_no for u in units)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=claimer, args=(str(k), 1 + k % 3)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    everything = [n for units in got.values() for n in units]
    assert sorted(everything) == list(range(1, 121))        # each once, none lost
    with engine.connect() as conn:
        claims = conn.execute(select(work_units.c.claims).where(
            work_units.c.job == "test:exclusive")).scalars().all()
    assert set(claims) == {1}


def test_a_lease_expires_and_another_worker_takes_the_unit(engine: Engine) -> None:
    with UnitOfWork(engine) as uow:
        wu.create_units(uow.conn, "test:lease", [(1, 10)], T0)
        [unit] = wu.claim(uow.conn, "test:lease", T0, LEASE, worker="a")
        uow.commit()
    with UnitOfWork(engine) as uow:
        assert wu.claim(uow.conn, "test:lease", T0 + LEASE / 2, LEASE, worker="b") == []
        assert wu.extend(uow.conn, [unit.id], T0 + LEASE / 2, LEASE, worker="a") == 1
        # the heartbeat moved the lease: still a's after the first lease would have passed
        assert wu.claim(uow.conn, "test:lease", T0 + LEASE * 1.2, LEASE, worker="b") == []
        uow.commit()
    late = T0 + LEASE * 1.6
    with UnitOfWork(engine) as uow:
        assert wu.progress(uow.conn, "test:lease", late).expired == 1
        [taken] = wu.claim(uow.conn, "test:lease", late, LEASE, worker="b")
        uow.commit()
    assert (taken.id, taken.claims) == (unit.id, 2)
    with UnitOfWork(engine) as uow:
        assert wu.finish(uow.conn, unit.id, late, {"n": 1}, worker="a") is False   # lost
        assert wu.extend(uow.conn, [unit.id], late, LEASE, worker="a") == 0
        assert wu.finish(uow.conn, unit.id, late, {"n": 2}, worker="b") is True
        uow.commit()
    with engine.connect() as conn:
        done = wu.progress(conn, "test:lease", late)
    assert (done.done, done.reclaimed, done.totals, done.finished) == (1, 1, {"n": 2}, True)


def test_released_and_expired_units_are_pending_again(engine: Engine) -> None:
    with UnitOfWork(engine) as uow:
        wu.create_units(uow.conn, "test:release", [(1, 5), (6, 10)], T0)
        first, second = wu.claim(uow.conn, "test:release", T0, LEASE, limit=2, worker="a")
        assert wu.release(uow.conn, [first.id], worker="a") == 1
        assert wu.release_expired(uow.conn, "test:release", T0 + LEASE * 2) == 1
        assert wu.progress(uow.conn, "test:release", T0).pending == 2
        uow.commit()


def test_key_ranges_cover_every_key_once(engine: Engine, ledger: Any) -> None:
    for _ in range(7):
        ledger.account()
    from billing_core.adapters.tables import accounts
    with engine.connect() as conn:
        ids = sorted(conn.execute(select(accounts.c.id)).scalars())
        ranges = wu.key_ranges(conn, accounts.c.id, 3)
    assert len(ranges) == 3 and ranges[-1][1] == wu.KEY_MAX
    assert [sum(lo <= i <= hi for lo, hi in ranges) for i in ids] == [1] * 7
    assert [sum(lo <= i <= hi for i in ids) for lo, hi in ranges] == [3, 3, 1]


# -- the bill run -----------------------------------------------------------------------------

def test_one_or_three_workers_bill_the_same_invoices(engine: Engine, ledger: Any,
                                                     monkeypatch: Any) -> None:
    """Three runs of the same date at once (three claimers) share one run: together they
    bill what a dry run in one walk computes, each unit claimed once, numbers gapless. (None
    claims before all three have created or joined the run: a worker that starts after the
    run finished starts a run of its own, rightly, and would make this another test.)"""
    _book(ledger, 40)
    reference = _reference(engine)
    assert len(reference) == 40
    results: list[BillRunResult] = []
    failures: list[BaseException] = []
    start = threading.Barrier(3, timeout=30)
    joined = threading.Barrier(3, timeout=30)
    create_or_join = bill_run_module._create_or_join

    def all_in(*args: Any, **kwargs: Any) -> tuple[int, bool]:
        got = create_or_join(*args, **kwargs)
        joined.wait()
        return got
    monkeypatch.setattr(bill_run_module, "_create_or_join", all_in)

    def worker() -> None:
        try:
            start.wait()
            results.append(run_bill_run(engine, DAY, chunk_size=3,
                                        options=BillRunOptions(poll_seconds=0.05)))
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert not failures, failures
    assert len({r.run_id for r in results}) == 1                    # one run, shared
    assert sorted(r.joined for r in results) == [False, True, True]
    assert sum(r.invoices_created for r in results) == 40
    assert sum(r.accounts_seen for r in results) == 40              # each account read once
    assert _invoices(engine) == reference
    run_id = results[0].run_id
    assert run_id is not None
    assert {s for s, _ in _units(engine, run_id)} == {"done"}
    assert {c for _, c in _units(engine, run_id)} == {1}
    assert _run_status(engine, run_id) == ("finished", 40)
    with engine.connect() as conn:                  # what `status` and /metrics show
        shown = bill_run_progress(conn, datetime.now(UTC))
    assert shown is not None and (shown.units, shown.done, shown.accounts, shown.invoices,
                                  shown.workers) == (14, 14, 40, 40, 0)
    assert shown.line().startswith(f"run {run_id} for 2026-12-06 finished: 14/14 units done")
    again = run_bill_run(engine, DAY, chunk_size=3)
    assert (again.invoices_created, again.already_billed) == (0, 40)


def test_one_worker_bills_what_the_walk_bills(engine: Engine, ledger: Any) -> None:
    _book(ledger, 13)
    reference = _reference(engine)
    result = run_bill_run(engine, DAY, chunk_size=4)
    assert (result.invoices_created, result.accounts_seen, result.joined) == (13, 13, False)
    assert _invoices(engine) == reference
    assert _run_status(engine, result.run_id or 0) == ("finished", 13)
    assert len(_units(engine, result.run_id or 0)) == 4      # 4 + 4 + 4 + the open rest


def test_a_worker_started_mid_run_joins_it(engine: Engine, ledger: Any) -> None:
    _book(ledger, 20)
    reference = _reference(engine)
    late: list[BillRunResult] = []
    threads: list[threading.Thread] = []

    def start_another(_n: int) -> None:
        if not threads:
            t = threading.Thread(target=lambda: late.append(run_bill_run(
                engine, DAY, chunk_size=2, options=BillRunOptions(poll_seconds=0.05))))
            threads.append(t)
            t.start()

    first = run_bill_run(engine, DAY, chunk_size=2, progress=start_another,
                         options=BillRunOptions(poll_seconds=0.05))
    threads[0].join()
    assert late[0].joined and late[0].run_id == first.run_id
    assert first.invoices_created + late[0].invoices_created == 20
    assert _invoices(engine) == reference
    assert _run_status(engine, first.run_id or 0) == ("finished", 20)


CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from datetime import date
from billing_core.adapters.db import make_engine
from billing_core.service import bill_run
real, calls = bill_run.apply_chunk, []
def write_then_die(*args, **kw):
    out = real(*args, **kw)
    calls.append(1)
    if len(calls) == 2:             # the 2nd chunk written, not committed: killed holding it
        print("killed holding a unit", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return out
bill_run.apply_chunk = write_then_die
bill_run.run_bill_run(make_engine({url!r}), date(2026, 12, 6), chunk_size=3)
"""


def _child_url(engine: Engine) -> str:
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        url += f"{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    return url


def test_a_killed_workers_units_are_finished_by_another(engine: Engine, ledger: Any) -> None:
    """A worker process killed with SIGKILL in the middle of its 2nd unit (written, not
    committed), holding claims on the units after it: the next worker joins the run, takes the
    dead worker's units (its process is gone), bills them once and closes the run."""
    _book(ledger, 15)
    reference = _reference(engine)
    child = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT),
                                                               url=_child_url(engine))],
                           timeout=120, check=False, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "killed holding a unit" in child.stdout
    with engine.connect() as conn:
        run_id, status = conn.execute(select(bill_runs.c.id, bill_runs.c.status)).one()
    assert status == "running"
    before = _units(engine, run_id)
    assert before[0] == ("done", 1) and before[1] == ("claimed", 1)    # died holding unit 2
    assert len(_invoices(engine)) == 3                                 # unit 1 committed
    survivor = run_bill_run(engine, DAY, chunk_size=3)
    assert survivor.joined and survivor.run_id == run_id
    assert survivor.invoices_created == 12
    assert _invoices(engine) == reference
    after = _units(engine, run_id)
    assert {s for s, _ in after} == {"done"}
    assert after[1] == ("done", 2)                                     # taken over once
    assert _run_status(engine, run_id) == ("finished", 15)


def test_a_unit_whose_lease_passed_is_finished_by_another_worker(engine: Engine,
                                                                  ledger: Any) -> None:
    """A live worker that stalls past its lease loses the unit: another worker bills it;
    the stalled worker's chunk, when it comes back, finds its claim gone and rolls back."""
    _book(ledger, 6)
    reference = _reference(engine)
    now = [T0]
    opts = BillRunOptions(lease=LEASE, clock=lambda: now[0], poll_seconds=0.05,
                          claim_ahead=0, pipeline=False)
    stalled = threading.Event()
    go_on = threading.Event()
    from billing_core.service import bill_run as module
    real = module.apply_chunk

    def stall_first(*args: Any, **kw: Any) -> Any:
        if threading.current_thread().name == "stalled" and not stalled.is_set():
            stalled.set()
            go_on.wait(60)
        return real(*args, **kw)

    out: list[BillRunResult] = []
    module.apply_chunk = stall_first       # type: ignore[assignment]
    try:
        t = threading.Thread(target=lambda: out.append(run_bill_run(
            engine, DAY, chunk_size=3, options=opts)), name="stalled")
        t.start()
        assert stalled.wait(60)
        now[0] = T0 + LEASE * 2                     # the stalled worker's lease has passed
        other = run_bill_run(engine, DAY, chunk_size=3, options=opts)
        go_on.set()
        t.join(60)
    finally:
        module.apply_chunk = real              # type: ignore[assignment]
    assert other.joined and other.invoices_created == 6
    assert out[0].invoices_created == 0
    assert _invoices(engine) == reference
    assert _units(engine, other.run_id or 0)[0] == ("done", 2)


@pytest.mark.parametrize("readers", [1, 2])
def test_a_reader_process_bills_what_the_walk_bills(engine: Engine, ledger: Any,
                                                    monkeypatch: Any, readers: int) -> None:
    """A run of enough units reads and computes in reader processes (SQLite's choice; forced
    here on PostgreSQL too), one or two of them computing the units claimed ahead side by
    side: the same invoices as one walk, written in claim order, numbers gapless."""
    from billing_core.service import bill_run as module
    monkeypatch.setattr(module, "PROCESS_READER_DIALECTS", ("sqlite", "postgresql"))
    _book(ledger, 21)
    reference = _reference(engine)
    # units past the previews' first 6 accounts cross with their values converted for the driver
    monkeypatch.setattr(module, "PREVIEW_LIMIT", 6)
    result = run_bill_run(engine, DAY, chunk_size=2,
                          options=BillRunOptions(reader_url=_child_url(engine),
                                                 reader_processes=readers))
    assert result.reader == "process"
    assert (result.invoices_created, result.accounts_seen) == (21, 21)
    assert _invoices(engine) == reference
    assert [(p.account_id, p.period_start, p.total_minor, p.lines) for p in result.invoices] \
        == [(a, *reference[a]) for a in sorted(reference)[:6]]
    assert _run_status(engine, result.run_id or 0) == ("finished", 21)


def test_the_daemon_joins_a_run_a_killed_worker_left(engine: Engine, ledger: Any,
                                                     tmp_path: Path) -> None:
    """``Worker.join_bill_run`` (the daemon's check every 30 s) finds the run the killed
    worker left with units to claim, joins it and finishes it; with nothing left it does
    nothing. ``/metrics`` shows the run's units."""
    from config.settings import load_settings
    from jobs.api.metrics import ApiMetrics
    from jobs.worker import Worker

    _book(ledger, 15)
    reference = _reference(engine)
    child = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT),
                                                               url=_child_url(engine))],
                           timeout=120, check=False, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    worker = Worker(engine, load_settings(cfg), clock=lambda: datetime(2026, 12, 6, 9,
                                                                        tzinfo=UTC))
    try:
        joined = worker.join_bill_run()
        assert joined is not None and joined.joined and joined.run_date == DAY
        assert joined.invoices_created == 12
        assert worker.join_bill_run() is None
    finally:
        worker.close()
    assert _invoices(engine) == reference
    metrics = ApiMetrics(engine).render().decode()
    assert 'ledgerbridge_bill_run_units{state="done"} 6.0' in metrics
    assert 'ledgerbridge_bill_run_progress{figure="invoices"} 15.0' in metrics


def test_a_worker_that_fails_leaves_the_run_to_the_others_not_failed(engine: Engine,
                                                                      ledger: Any) -> None:
    """One worker's part fails (its database connection lost, say) while another worker
    holds a unit of the run: its units go back at once, the other bills them and closes the
    run ``finished`` with every invoice counted. The run was marked ``failed`` by the first,
    and the second's close then left it so (``status`` and the alert reported a bill run
    that completed as failed)."""
    _book(ledger, 20)
    reference = _reference(engine)
    opts = BillRunOptions(poll_seconds=0.05)
    other: list[BillRunResult] = []
    threads: list[threading.Thread] = []

    def two_holders() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(func.count(func.distinct(work_units.c.claimed_by)))
                                .where(work_units.c.state == "claimed")).scalar_one() >= 2

    def fail_once_another_holds(_n: int) -> None:
        if threads:
            return
        t = threading.Thread(target=lambda: other.append(run_bill_run(
            engine, DAY, chunk_size=2, options=opts)))
        threads.append(t)
        t.start()
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while not two_holders():
            assert datetime.now(UTC) < deadline, "the second worker never claimed a unit"
        raise ConnectionError("server closed the connection unexpectedly")

    with pytest.raises(ConnectionError):
        run_bill_run(engine, DAY, chunk_size=2, progress=fail_once_another_holds,
                     options=opts)
    threads[0].join(60)
    assert other[0].joined
    assert _invoices(engine) == reference
    run_id = other[0].run_id or 0
    assert {s for s, _ in _units(engine, run_id)} == {"done"}
    assert _run_status(engine, run_id) == ("finished", 20)


def test_a_worker_alone_that_fails_marks_the_run_failed(engine: Engine, ledger: Any) -> None:
    """Nobody else holds a unit: the run is ``failed`` with the error, and its units are
    pending again at once (they waited for the lease: the claimer's name was not matched)."""
    _book(ledger, 6)

    def fail(_n: int) -> None:
        raise ConnectionError("server closed the connection unexpectedly")

    with pytest.raises(ConnectionError):
        run_bill_run(engine, DAY, chunk_size=2, progress=fail,
                     options=BillRunOptions(poll_seconds=0.05))
    with engine.connect() as conn:
        run_id, status, error = conn.execute(
            select(bill_runs.c.id, bill_runs.c.status, bill_runs.c.error)).one()
    assert status == "failed" and "ConnectionError" in error
    states = [s for s, _ in _units(engine, run_id)]
    assert states[0] == "done" and set(states[1:]) == {"pending"}
