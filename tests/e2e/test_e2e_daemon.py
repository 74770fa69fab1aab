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
