"""Run records outlive their process (issue 13, item 5): a run left ``running`` by a killed
process is shown abandoned by ``status`` and closed as ``abandoned`` by the next run of its
connection; bill runs left ``running`` are flagged too; a signal during a CLI ``sync`` stops
it cleanly instead of leaving the run ``running``. Both databases."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

from fake_crm import FakeCRM
from sqlalchemy import Engine, insert, select

from billing_core.adapters.tables import bill_runs
from jobs.cli.sync import _stop_on_signals
from sync.engine import run_cycle
from sync.status import overview
from sync.tables import sync_runs


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _running(engine: Engine, connection: str, pid: int, started: datetime) -> int:
    with engine.begin() as conn:
        key = conn.execute(insert(sync_runs).values(
            trigger="schedule", connection=connection, started_at=started, outcome="running",
            options=json.dumps({"pid": pid, "host": socket.gethostname()}))
        ).inserted_primary_key
    assert key is not None
    return int(key[0])


def _outcome(engine: Engine, run_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(sync_runs.c.outcome).where(
            sync_runs.c.id == run_id)).scalar_one())


def test_a_killed_run_is_shown_abandoned_and_closed_by_the_next_run(engine: Engine) -> None:
    now = datetime.now(UTC)
    killed = _running(engine, "fake", _dead_pid(), now - timedelta(seconds=5))
    live = _running(engine, "other", os.getpid(), now - timedelta(seconds=5))
    status = overview(engine, interval_minutes=15, now=now)
    assert status["abandoned_runs"] == 1
    assert "abandoned runs: 1" in status["attention"]
    assert "no sync run finished yet" in status["attention"]
    crm = FakeCRM()
    crm.seed_basic()
    assert run_cycle(engine, crm).outcome == "ok"
    assert _outcome(engine, killed) == "abandoned"
    assert _outcome(engine, live) == "running"          # its process is alive: left alone
    assert overview(engine, interval_minutes=15)["abandoned_runs"] == 0


def test_a_run_running_longer_than_three_intervals_is_abandoned_wherever_it_ran(
        engine: Engine) -> None:
    now = datetime.now(UTC)
    _running(engine, "fake", os.getpid(), now - timedelta(minutes=46))
    assert overview(engine, interval_minutes=15, now=now)["abandoned_runs"] == 1


def test_a_bill_run_left_running_is_flagged(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(bill_runs), [
            {"run_date": now.date(), "started_at": now - timedelta(hours=3), "status": "running"},
            {"run_date": now.date(), "started_at": now - timedelta(minutes=1),
             "status": "running"}])
    status = overview(engine, interval_minutes=15, now=now)
    assert status["abandoned_bill_runs"] == 1
    assert "abandoned bill runs: 1" in status["attention"]


def test_a_signal_during_a_cli_sync_asks_the_cycle_to_stop() -> None:
    """Ctrl-C or SIGTERM sets the worker's stop (the cycle ends as ``stopped: shutdown``, with
    its counts) instead of killing the run mid-page; the handlers are restored after."""
    before = signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    with _stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGINT) is before
