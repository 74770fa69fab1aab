"""The worker a chaos trial kills: every job body of the daemon, in cycle order, a few rounds.

    python bench/chaos_worker.py CONFIG PHASE_FILE [--rounds N] [--clock-shift-hours H]

Rules this module keeps:
- It runs the same job bodies as ``ledgerbridge run`` (``jobs.worker.Worker``): the sync of
  each connection (pull, hand-off, outbox refresh and push), the bill run, the provisioning
  dispatch and the outbox push, so a kill can land in any of them.
- SIGTERM and SIGINT set the worker's stop event, as the daemon's handler does: the work in hand
  finishes and the process exits 0.
- ``--clock-shift-hours`` runs the worker's clock that many hours ahead (the budget-stop
  trials recover "the next day", when the CRM's daily allowance has come back and the worker's
  memory of the last usage figure has lapsed); the CRM connector keeps the real time.
- Before each step it appends the step's name to PHASE_FILE (flushed at once), so the harness
  knows where a kill landed; the sync's progress callback names the object being pulled.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _mark(out: TextIO, phase: str) -> None:
    out.write(phase + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("phase_file")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clock-shift-hours", type=float, default=0.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    from billing_core.adapters.db import make_engine
    from config.settings import load_settings
    from jobs.worker import Worker

    settings = load_settings(Path(args.config))
    engine = make_engine(settings.database_url)
    shift = timedelta(hours=args.clock_shift_hours)
    worker = Worker(engine, settings, clock=lambda: datetime.now(UTC) + shift)

    def on_signal(_signum: int, _frame: Any) -> None:
        worker.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with open(args.phase_file, "a", encoding="utf-8") as out:
        def progress(obj: str, _n: int) -> None:
            _mark(out, f"pull:{obj}")

        for _ in range(args.rounds):
            for name in worker.connections:
                if worker.stop.is_set():
                    break
                _mark(out, "sync")
                worker.sync_connection(name, worker.options("chaos"), wait=True,
                                       progress=progress)
                _mark(out, "sync-done")
            for phase, job in (("bill-run", worker.bill_run), ("dispatch", worker.dispatch),
                               ("push", worker.push_all)):
                if worker.stop.is_set():
                    break
                _mark(out, phase)
                job()
        _mark(out, "done")
    worker.close()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
