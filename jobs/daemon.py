"""``ledgerbridge run``: the long-running worker.

Rules kept here:
- On SQLite only one daemon may use a database: it holds ``<db>.daemon.lock`` (``flock``) for
  its whole life, and a second one refuses to start with a message naming the file. On
  PostgreSQL any number may run: each job takes its own advisory lock (see ``jobs.worker``).
- SIGTERM / SIGINT set the worker's stop event (with ``once`` too): running cycles finish
  the page in hand and commit; the scheduler is shut down and waited for at most
  ``shutdown_timeout_seconds``. A job still running then (one that does not look at the stop
  event, e.g. a bill run waiting for another worker's units) is left to the process's end:
  ``run_daemon`` raises ``JobsStillRunning`` after its own clean-up, and ``ledgerbridge run``
  ends the process at once (``os._exit``: the interpreter would otherwise wait for the job's
  thread). What the job had in hand rolls back; its claims go back as for a killed worker.
- The HTTP API (``jobs.api.app.build_app``) is served on a thread when asked (``--api``), with
  the worker as its resync runner; the daemon owns its life. Stored CRM events wake the
  scheduler's ``events`` job (``jobs.scheduler.wake_events``).
- A bill run in progress (another worker's, or one a dead worker left) is joined within
  ``BILL_RUN_JOIN_SECONDS`` of this daemon starting or of work appearing in it
  (``Worker.join_bill_run``): workers started mid-run share it.
- Logs: ``jobs.logs`` (text or one JSON object per line, secrets masked, noise held back).
"""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import Engine

from config.settings import Settings
from jobs.api.app import build_app, serve_in_thread
from jobs.logs import JsonFormatter, RedactSecrets
from jobs.scheduler import build_scheduler, job_ids, wake_events
from jobs.worker import Worker
from sync.locks import job_lock, lock_path
from sync.runs import RunReport

log = logging.getLogger(__name__)
#: How often the daemon looks for a bill run in progress with units to claim.
BILL_RUN_JOIN_SECONDS = 30
__all__ = ["DaemonRefused", "JobsStillRunning", "JsonFormatter", "RedactSecrets", "run_daemon",
           "run_once"]


class DaemonRefused(RuntimeError):
    """Another daemon already uses this SQLite database."""


class JobsStillRunning(RuntimeError):
    """The daemon stopped, but jobs were still running after the shutdown timeout."""


def run_once(worker: Worker) -> list[RunReport]:
    """Every job body once, in cycle order (for ``run --once`` and the demo); the sync runs'
    reports (``run --once`` exits with the worst of their codes). Once the worker is asked to
    stop, the connections not begun yet are left."""
    reports = [worker.sync_connection(name, worker.options("schedule"), wait=True)
               for name in worker.connections if not worker.stop.is_set()]
    worker.dispatch()
    worker.push_all()
    return [r for r in reports if r is not None]


def run_daemon(engine: Engine, settings: Settings, *, api: bool = False,
               host: str = "127.0.0.1", port: int = 8080, once: bool = False,
               worker: Worker | None = None,
               on_ready: Callable[[Worker], None] | None = None) -> list[RunReport]:
    """The daemon until it is stopped (then no reports), or with ``once`` every job once and
    the sync runs' reports."""
    with job_lock(engine, "daemon") as got:
        if not got and engine.dialect.name == "sqlite":
            raise DaemonRefused(
                f"another `ledgerbridge run` is already using this SQLite database "
                f"(lock {lock_path(engine, 'daemon')}); stop it first, or use PostgreSQL to "
                "run several workers")
        worker = worker or Worker(engine, settings)
        if once:
            _install_signals(worker.stop)   # SIGTERM / SIGINT: the page in hand, then stop
            try:
                return run_once(worker)
            finally:
                worker.close()
        _install_signals(worker.stop)
        scheduler = build_scheduler(worker)
        _add_bill_run_join(scheduler, worker)
        server = None
        if api:
            server = serve_in_thread(build_app(engine, settings, sync_runner=worker,
                                               scheduler_state=scheduler,
                                               on_events=partial(wake_events, scheduler,
                                                                 worker)),
                                     host, port)
        scheduler.start()
        log.info("daemon started jobs=%s", ",".join(job_ids(scheduler)))
        if on_ready:
            on_ready(worker)
        stopped = False
        try:
            while not worker.stop.wait(0.5):
                pass
        finally:
            worker.stop.set()
            stopped = _shutdown(scheduler, worker.sync.shutdown_timeout_seconds)
            if server is not None:
                server.stop()
            worker.close()
            log.info("daemon stopped")
    if not stopped:
        raise JobsStillRunning("jobs were still running after the shutdown timeout")
    return []


def _add_bill_run_join(scheduler: Any, worker: Worker) -> None:
    from datetime import UTC, datetime

    from apscheduler.triggers.interval import IntervalTrigger

    def join() -> None:
        try:
            worker.join_bill_run()
        except Exception as exc:  # noqa: BLE001 (logged and counted; the next look tries again)
            log.exception("bill run join failed")
            worker.job_failed("bill-run-join", exc)
        else:
            worker.job_ok("bill-run-join")

    scheduler.add_job(join, IntervalTrigger(seconds=BILL_RUN_JOIN_SECONDS),
                      id="bill-run-join", name="join a bill run in progress",
                      next_run_time=datetime.now(UTC), replace_existing=True)


def _install_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: finishing the work in hand, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _shutdown(scheduler: Any, timeout: float) -> bool:
    """Shut the scheduler down, waiting at most ``timeout``; whether its jobs ended."""
    done = threading.Thread(target=lambda: scheduler.shutdown(wait=True), daemon=True)
    done.start()
    done.join(timeout)
    if done.is_alive():
        log.warning("shutdown: jobs still running after %ss; exiting (their last page "
                    "is committed or rolled back whole)", timeout)
        return False
    return True
