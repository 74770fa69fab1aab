"""`ledgerbridge run` as a process against the sandbox: it syncs, logs JSON lines without
secrets, and stops on SIGTERM with nothing left half-done."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import select

from sync.tables import sync_runs

pytestmark = pytest.mark.e2e


def test_daemon_runs_then_stops_cleanly_on_sigterm(world: Any) -> None:
    env = {**os.environ, **world.env}
    log_path = world.tmp / "daemon.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - a file, not a pipe (a full pipe blocks)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from jobs.cli import main; main()", "--config",
         str(world.config), "run", "--log-format", "json", "--api-port", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    try:
        deadline = time.monotonic() + 90
        finished = 0
        while time.monotonic() < deadline and finished < 2 and proc.poll() is None:
            time.sleep(0.2)
            with world.engine.connect() as conn:
                finished = len(conn.execute(select(sync_runs.c.id).where(
                    sync_runs.c.finished_at.is_not(None))).all())
        assert finished >= 2, log_path.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
        log_file.close()
    err = log_path.read_text()
    assert proc.returncode == 0, err[-2000:]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    messages = [entry["message"] for entry in lines]
    assert any(m.startswith("sync run=") and "outcome=ok" in m for m in messages)
    assert any("daemon stopped" in m for m in messages)
    # the API is served by default, on loopback
    assert any(m.startswith("api: listening on http://127.0.0.1:") for m in messages)
    for secret in world.env.values():
        assert secret not in err
    with world.engine.connect() as conn:
        outcomes = [r[0] for r in conn.execute(select(sync_runs.c.outcome))]
    assert "running" not in outcomes


def _holds_file(pid: int, path: str) -> bool:
    """Whether process ``pid`` has ``path`` open (it is waiting on that lock file)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == path:
                return True
        except OSError:
            continue
    return False


def test_sigterm_while_the_bill_run_waits_for_its_lock_stops_the_daemon(world: Any) -> None:
    """A bill run in progress that the daemon joins at start, while a manual ``bill-run``
    (here: the test) holds the ``bill-run`` lock: the daemon's job waits for the lock (up to
    15 minutes). SIGTERM then stops the daemon within its shutdown timeout, exit 0; the run
    and its unit are left for the next worker, as they were."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from billing_core.adapters import work_units
    from billing_core.adapters.tables import bill_runs
    from billing_core.adapters.tables import work_units as units
    from billing_core.service.bill_run import job_name
    from sync.locks import job_lock, lock_path

    world.config.write_text(world.config.read_text(encoding="utf-8")
                            + "\n[sync]\nshutdown_timeout_seconds = 2\n", encoding="utf-8")
    now = datetime.now(UTC)
    with world.engine.begin() as conn:
        run_id = conn.execute(insert(bill_runs).values(
            run_date=now.date(), started_at=now, status="running",
            claimed_by="someone-else")).inserted_primary_key[0]
        work_units.create_units(conn, job_name(run_id), [(1, 10**9)], now)
    lock = lock_path(world.engine, "bill-run")
    assert lock is not None
    env = {**os.environ, **world.env}
    log_path = world.tmp / "daemon.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - a file, not a pipe (a full pipe blocks)
    with job_lock(world.engine, "bill-run") as got:
        assert got
        proc = subprocess.Popen(
            [sys.executable, "-c", "from jobs.cli import main; main()", "--config",
             str(world.config), "run", "--no-api"],
            env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None \
                    and not _holds_file(proc.pid, lock):
                time.sleep(0.1)
            assert _holds_file(proc.pid, lock), log_path.read_text()[-2000:]
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("the daemon did not stop on SIGTERM while its bill run waited "
                            "for the bill-run lock")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            log_file.close()
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    with world.engine.connect() as conn:
        assert conn.execute(select(bill_runs.c.status).where(
            bill_runs.c.id == run_id)).scalar_one() == "running"
        assert conn.execute(select(units.c.state).where(
            units.c.job == job_name(run_id))).scalars().all() == ["pending"]


def test_sigterm_during_a_job_that_outlives_the_shutdown_timeout_ends_the_process(
        world: Any) -> None:
    """The daemon joins a bill run at start and, its own unit billed, waits for a unit another
    live worker (here: the test) holds for an hour. SIGTERM: the scheduler's shutdown times
    out (2 s here) and the daemon says it exits; it must then exit, exit 0, not stay up until
    the job ends (the interpreter joined the job's thread). The held unit stays the other
    worker's, the run stays running for it."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from billing_core.adapters import work_units
    from billing_core.adapters.tables import bill_runs
    from billing_core.adapters.tables import work_units as units
    from billing_core.service.bill_run import job_name

    world.config.write_text(world.config.read_text(encoding="utf-8")
                            + "\n[sync]\nshutdown_timeout_seconds = 2\n", encoding="utf-8")
    now = datetime.now(UTC)
    high = 10**12                       # key ranges no account falls in: nothing is billed
    with world.engine.begin() as conn:
        run_id = conn.execute(insert(bill_runs).values(
            run_date=now.date(), started_at=now, status="running",
            claimed_by="someone-else")).inserted_primary_key[0]
        job = job_name(run_id)
        work_units.create_units(conn, job, [(high, high + 1), (high + 2, high + 3)], now)
        mine = work_units.claim(conn, job, now, timedelta(hours=1))
    assert [u.unit_no for u in mine] == [1]
    env = {**os.environ, **world.env}
    log_path = world.tmp / "daemon.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - a file, not a pipe (a full pipe blocks)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from jobs.cli import main; main()", "--config",
         str(world.config), "run", "--no-api"],
        env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True)

    def states() -> list[str]:
        with world.engine.connect() as conn:
            return list(conn.execute(select(units.c.state).where(units.c.job == job)
                                     .order_by(units.c.unit_no)).scalars())
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None \
                and states() != ["claimed", "done"]:
            time.sleep(0.2)
        assert states() == ["claimed", "done"], log_path.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon did not exit after its shutdown timeout")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log_file.close()
    err = log_path.read_text()
    assert proc.returncode == 0, err[-2000:]
    assert "jobs still running after" in err
    assert states() == ["claimed", "done"]
    with world.engine.connect() as conn:
        assert conn.execute(select(bill_runs.c.status).where(
            bill_runs.c.id == run_id)).scalar_one() == "running"


def test_sigterm_during_run_once_stops_after_the_page_in_hand(world: Any) -> None:
    """``run --once`` (every job once, e.g. from a timer) gets SIGTERM while its sync pulls:
    as the daemon and ``sync`` do, the page in hand is committed, the run is recorded
    ``stopped: shutdown`` and the command exits 130. It died at once on the default
    handler, the run left ``running`` for the next run to close as abandoned."""
    world.sbx.faults.add("salesforce", "query*", "slow", count=200, delay=0.3)
    env = {**os.environ, **world.env}
    log_path = world.tmp / "once.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - a file, not a pipe (a full pipe blocks)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from jobs.cli import main; main()", "--config",
         str(world.config), "run", "--once", "--no-api"],
        env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True)

    def outcomes() -> list[str]:
        with world.engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(select(sync_runs.c.outcome)
                                                    .order_by(sync_runs.c.id))]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and "running" not in outcomes():
            time.sleep(0.05)
        assert outcomes()[:1] == ["running"], log_path.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log_file.close()
        world.sbx.faults.clear()
    err = log_path.read_text()
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert outcomes() == ["stopped: shutdown"], err[-2000:]
