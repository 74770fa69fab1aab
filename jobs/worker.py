"""The worker: the application's wiring. What each scheduled job and each manual command
does, with which connector, settings and provisioner, as thin calls into ``sync`` (the cycle,
the outbox push) and ``billing_core.service`` (holds, dispatch, the bill run).

Rules kept here:
- One connector per connection, built once and kept (its login, token cache and API meter
  live as long as the worker); nothing connects before the first job needs it. The same holds
  for the provisioner.
- Every job body takes its lock first (``sync.locks.job_lock``: a PostgreSQL advisory lock, a
  lock file on SQLite). The CRM of one connection is only ever spoken to under
  ``crm:<connection>`` (pull and push alike), so two workers never read or write it at once.
  A scheduled job that finds its lock taken is skipped with a log line; a manual resync waits.
- Manual resyncs are admitted boundedly (``jobs.admission``): one queued run per connection
  and scope (a repeated request gets the queued run's id), a few per connection, and they wait
  their turn on an in-process lock that holds no database connection; only the run whose turn
  it is polls for the job lock, each try on a short-lived connection.
- A connector's API meter is seeded with the connection's last known usage (the meter of a
  connector dropped after a budget stop, else the last run that recorded a figure, if within
  the CRM's 24-hour window) and keeps one call of the share in reserve, which a fresh
  connector may spend learning the CRM's figure before its first real call. So usage never
  passes the share however many connectors follow one another, and a fresh connector still
  sees an allowance that came back.
- ``stop`` (an ``Event``) is set on SIGTERM/SIGINT: cycles finish the page in hand and end; a
  job waiting for a lock (the bill run's) gives up waiting.
- ``start`` (the HTTP API's ``SyncRunner`` seam, ``jobs.api.admin_sync``) records the run and
  runs it on a thread, returning its id at once; ``get`` reads a run back.
- A scheduled job that raises is counted per job (``job_failed`` / ``job_ok``, called by the
  scheduler's guard): ``job_failures`` gives each job's failures, whether its last run failed
  and the last error, for ``/metrics`` and the API's ``/status`` (a failure of a job that
  records nothing in the ledger, such as the hold re-evaluation, was in the log only).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine

from billing_core.adapters.provisioners import Provisioner, ProvisionError, ProvisioningTask
from billing_core.domain.errors import NotFound
from billing_core.service import ledger_uow
from billing_core.service.bill_run import (
    BillRunOptions,
    BillRunResult,
    joinable_run,
    run_bill_run,
)
from billing_core.service.credit_control import reevaluate_all
from billing_core.service.provisioning import DispatchReport, dispatch_pending
from config.settings import Settings
from connectors.base import Budget, Connector
from connectors.budget import BudgetMeter
from connectors.registry import build_connector
from connectors.settings import ConnectionSettings
from jobs.admission import Admission, Scope
from jobs.provisioners import build_provisioner
from sync import outbox, push
from sync.documents import pdf_files
from sync.engine import Cycle, SyncOptions, pushes_documents
from sync.locks import job_lock
from sync.refs import parse_source_ref
from sync.resync import ResyncReport, process_round
from sync.runs import RunReport, finish_run, get_run, last_api_usage

log = logging.getLogger(__name__)

#: Salesforce's daily allowance is a rolling 24 hours: an older figure says nothing of today's.
USAGE_MEMORY = timedelta(hours=24)
#: Calls of the share a fresh connector may spend learning the CRM's figure.
LEARNING_RESERVE = 1
#: Rounds the events job runs in a row while events keep arriving (then its next wake or run).
EVENT_ROUNDS = 20
#: The events job's coalescing window: records whose events are still arriving (the newest
#: younger than this) are read only in whole batches of 200; the rest once their events have
#: stopped for this long (``sync.inbox.claim``). A single change waits this long; a bulk change
#: of 1,000 records, sent one webhook at a time, is read in 5 queries rather than one per round.
EVENT_SETTLE = timedelta(seconds=0.5)
#: How long the events job keeps watching a connection's lock held by another job (its cycle, a
#: push, a manual resync) to run that connection's events as soon as it frees, rather than at
#: the job's next interval; then the interval takes over.
EVENT_LOCK_WAIT = timedelta(minutes=30)
#: How long the daemon's bill run waits for another run holding the bill-run lock.
BILL_RUN_LOCK_WAIT = 900.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


# What the ``crm`` provisioner writes on the quote for each kind of change: a person reading
# the quote must not read "provisioning requested" when seats are being taken away.
CRM_REQUESTED = {"provision": "provisioning requested", "increase": "increase requested",
                 "decrease": "decrease requested", "deprovision": "deprovisioning requested"}


class Worker:
    def __init__(self, engine: Engine, settings: Settings, *,
                 clock: Callable[[], datetime] = _utcnow,
                 connector_factory: Callable[[ConnectionSettings], Connector] = build_connector,
                 ) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.sync = settings.sync
        self.connections = settings.connections
        self.stop = threading.Event()
        self._factory = connector_factory
        self._connectors: dict[str, Connector] = {}
        self._provisioner: Provisioner | None = None
        self._guard = threading.Lock()
        self._admission = Admission()
        #: The events job: whether it runs, and whether events were stored meanwhile.
        self._events = threading.Lock()
        self._events_running = False
        self._events_again = False
        #: Connections whose events the last round left because their lock was taken.
        self._events_blocked: set[str] = set()
        #: The last figure a dropped connector's meter saw, and when (see ``_seed``).
        self._usage: dict[str, tuple[int, int, datetime]] = {}
        #: Per connection taking events, the CRM user it acts as (``own_user``).
        self._own_users: dict[str, str] = {}
        #: Per scheduled job that ever failed: failures, last error and time, failing now.
        self._failures: dict[str, dict[str, Any]] = {}

    def job_failed(self, job: str, exc: BaseException) -> None:
        """Scheduled job ``job`` raised ``exc`` (see the module's rules)."""
        with self._guard:
            entry = self._failures.setdefault(job, {"failures": 0})
            entry.update(failures=entry["failures"] + 1, failing=True,
                         last_error=f"{type(exc).__name__}: {exc}"[:500],
                         last_failed_at=self.clock())

    def job_ok(self, job: str) -> None:
        """Scheduled job ``job`` ran to its end."""
        with self._guard:
            if job in self._failures:
                self._failures[job]["failing"] = False

    def job_failures(self) -> dict[str, dict[str, Any]]:
        """Each scheduled job that failed in this process: ``failures`` (count), ``failing``
        (its last run failed), ``last_error``, ``last_failed_at``."""
        with self._guard:
            return {job: dict(entry) for job, entry in self._failures.items()}

    def close(self) -> None:
        """Release the connectors' HTTP connections. (Database connections are the engine's
        pool's: ``make_engine`` keeps SQLite connections open, so commits stay cheap.)"""
        with self._guard:
            built, self._connectors = list(self._connectors.values()), {}
        for connector in built:
            transport = getattr(connector, "transport", None)
            if transport is not None and callable(getattr(transport, "close", None)):
                transport.close()

    def connector(self, name: str) -> Connector:
        if name not in self.connections:
            raise NotFound("connection", name)
        with self._guard:
            built = name not in self._connectors
            if built:
                connector = self._factory(self.connections[name])
                self._seed(name, connector)
                self._connectors[name] = connector
            connector = self._connectors[name]
        if built:
            self._learn_user(name, connector)
        return connector

    def _learn_user(self, name: str, connector: Connector) -> None:
        """A connection that takes events learns which CRM user it acts as (one call, when its
        connector is built, before its first push): the receivers then store the echo of its
        own writes as ``skipped`` (``own_user``). Not learned (the CRM did not say): every
        event is read, as before."""
        whoami = getattr(connector, "whoami", None)
        if self.connections[name].events is None or not callable(whoami) \
                or self.own_user(name) is not None:
            return
        try:
            user = whoami()
        except Exception as exc:  # noqa: BLE001 - only the echo filter is lost: events are read
            log.warning("events connection=%s: the CRM user this connection acts as is not "
                        "known (%s): the echo of its own writes is read back", name, exc)
            return
        if user:
            with self._guard:
                self._own_users[name] = str(user)

    def own_user(self, name: str) -> str | None:
        """The CRM user connection ``name`` acts as, once learned (``_learn_user``); the event
        receivers skip events whose only modifier it is (``connectors.events.by_user``)."""
        with self._guard:
            return self._own_users.get(name)

    def _seed(self, name: str, connector: Connector) -> None:
        meter = getattr(getattr(connector, "transport", None), "budget", None)
        if not isinstance(meter, BudgetMeter):
            return
        meter.reserve = max(meter.reserve, LEARNING_RESERVE)
        known = self._last_usage(name)
        if known is not None:
            meter.seed(*known)

    def _last_usage(self, name: str) -> tuple[int, int] | None:
        """The newest figure within ``USAGE_MEMORY``: a dropped meter's, or a recorded run's."""
        since = self.clock() - USAGE_MEMORY
        best = self._usage.get(name)
        with self.engine.connect() as conn:
            recorded = last_api_usage(conn, name, since)
        if recorded is not None and (best is None or recorded[2] > best[2]):
            best = recorded
        if best is None or best[2] < since:
            return None
        return best[0], best[1]

    def _drop_connector(self, name: str) -> None:
        """Forget a connector (a fresh one logs in again), keeping what its meter last saw."""
        with self._guard:
            connector = self._connectors.pop(name, None)
        if connector is None:
            return
        budget: Budget = connector.api_budget()
        if budget.used is not None and budget.limit is not None:
            self._usage[name] = (budget.used, budget.limit, self.clock())

    def budgets(self) -> dict[str, Any]:
        """Each connection's API budget as its connector last saw it (``/metrics`` reads it);
        connections not spoken to yet in this process are absent."""
        with self._guard:
            built = dict(self._connectors)
        return {name: connector.api_budget() for name, connector in built.items()}

    def options(self, trigger: str, **kw: Any) -> SyncOptions:
        return SyncOptions(trigger=trigger, grace_days=self.settings.credit.overdue_grace_days,
                           include_unbilled=self.settings.credit.include_unbilled_orders,
                           push_batch_size=self.sync.push_batch_size,
                           push_max_attempts=self.sync.push_max_attempts,
                           write_crm_hold=self.sync.write_crm_hold,
                           render_options=self.settings.documents.render_options(),
                           tax_inclusive=self.settings.billing.tax_inclusive,
                           objects=kw.pop("objects", None) or self.sync.objects, **kw)

    def cycle(self, name: str, options: SyncOptions,
              progress: Callable[[str, int], None] | None = None) -> Cycle:
        return Cycle(self.engine, self.connector(name), options, clock=self.clock,
                     should_stop=self.stop.is_set, progress=progress,
                     policy=self.settings.credit)

    # -- job bodies ------------------------------------------------------------------------
    def sync_connection(self, name: str, options: SyncOptions | None = None, *,
                        wait: bool = False,
                        progress: Callable[[str, int], None] | None = None) -> RunReport | None:
        options = options or self.options("schedule")
        with job_lock(self.engine, f"crm:{name}", wait=wait) as got:
            if not got:
                log.info("sync connection=%s skipped: another worker is syncing it", name)
                return None
            report = self.cycle(name, options, progress).run()
        self._after_run(name, report)
        return report

    def _after_run(self, name: str, report: RunReport) -> None:
        if report.outcome == "stopped: API budget":
            # A fresh connector learns the CRM's figure again (from its seed and one reserved
            # call), so it sees an allowance that came back without passing the share.
            self._drop_connector(name)

    def push_connection(self, name: str) -> None:
        with job_lock(self.engine, f"crm:{name}") as got:
            if not got:
                log.info("push connection=%s skipped: another worker holds it", name)
                return
            connector = self.connector(name)
            docs = pushes_documents(connector)
            outbox.refresh(self.engine, name, self.clock(),
                           grace_days=self.settings.credit.overdue_grace_days,
                           include_unbilled=self.settings.credit.include_unbilled_orders,
                           write_hold=self.sync.write_crm_hold, documents=docs)
            result = push.push(
                self.engine, connector, name, clock=self.clock,
                objects=("account", "quote", *(outbox.DOCUMENT_OBJECTS if docs else ())),
                batch_size=self.sync.push_batch_size,
                max_attempts=self.sync.push_max_attempts, should_stop=self.stop.is_set,
                files=pdf_files(self.engine, self.settings.documents.render_options(),
                                tax_inclusive=self.settings.billing.tax_inclusive)
                if docs else None)
            if result.pushed or result.failed or result.stopped:
                log.info("push connection=%s pushed=%s failed=%s dead=%s%s", name,
                         result.pushed, result.failed, result.dead,
                         f" outcome={result.stopped}" if result.stopped else "")

    def push_all(self) -> None:
        for name in self.connections:
            if not self.stop.is_set():
                self.push_connection(name)

    def reevaluate_holds(self) -> dict[str, int] | None:
        with job_lock(self.engine, "holds") as got:
            if not got:
                log.info("hold re-evaluation skipped: another worker runs it")
                return None
            with ledger_uow(self.engine, clock=self.clock, policy=self.settings.credit) as uow:
                summary = reevaluate_all(uow, self.clock().date(), self.settings.credit)
                uow.commit()
            log.info("holds re-evaluated accounts=%s placed=%s lifted=%s",
                     summary["accounts"], summary["placed"], summary["lifted"])
            return summary

    def dispatch(self) -> DispatchReport | None:
        """Dispatch every releasable request, in order, a batch at a time, until none is left
        (or the worker stops): a hold lift with thousands queued ahead of it is not capped.
        No job lock: the claims are exclusive (``billing_core.service.provisioning``), so
        every worker that runs this job at once takes its own share of the queue."""
        return dispatch_pending(self.engine, self.provisioner(), limit=None,
                                clock=self.clock, should_stop=self.stop.is_set)

    def sync_and_dispatch(self, name: str) -> RunReport | None:
        """The daemon's sync job: the cycle, then the dispatch of what it released or ordered
        (in the same job, not at the next dispatch interval)."""
        report = self.sync_connection(name)
        if report is not None and not self.stop.is_set():
            self.dispatch()
        return report

    def process_events(self, *, keys: int | None = None, limit: int | None = None,
                       wait: bool = False, settle: timedelta | None = None,
                       busy_since: datetime | None = None) -> list[ResyncReport]:
        """The targeted resync of the CRM's change events (``sync.resync``), per connection
        with events waiting, under its ``crm:<connection>`` lock (a connection whose lock is
        taken, by its cycle or a push, keeps its events for the next round unless ``wait``).
        ``keys`` records per round (``[sync] events_batch_size``); rounds follow one another
        until nothing is left or ``limit`` records were read (None: one round, the daemon's
        bound, so a flood never starves the other jobs). Then what was released is dispatched.
        ``settle``: records whose events still arrive are left for a later round unless they
        fill whole read batches (``sync.inbox.claim``); their reports say ``deferred``."""
        from sync.inbox import pending_connections

        keys = keys or self.sync.events_batch_size
        with self.engine.connect() as conn:
            waiting = [c for c in pending_connections(conn) if c in self.connections]
        reports: list[ResyncReport] = []
        blocked: set[str] = set()
        for name in waiting:
            if self.stop.is_set():
                break
            with job_lock(self.engine, f"crm:{name}", wait=wait) as got:
                if not got:
                    blocked.add(name)
                    if name not in self._events_blocked:
                        log.info("events connection=%s waits: another job or worker holds "
                                 "the connection", name)
                    continue
                read = 0
                while not self.stop.is_set():
                    batch = keys if limit is None else min(keys, limit - read)
                    if batch <= 0:
                        break
                    report = process_round(self.engine, name, partial(
                        self.cycle, name, self.options("events")), self.clock, keys=batch,
                        settle=settle, busy_since=busy_since)
                    if report.outcome != "idle" or report.deferred:
                        reports.append(report)
                    read += report.records
                    if report.outcome == "stopped: API budget":
                        self._drop_connector(name)      # as after a cycle: see _after_run
                    if limit is None or report.outcome == "idle" or not report.done:
                        break
        with self._events:
            self._events_blocked = blocked
        if any(r.events for r in reports) and not self.stop.is_set():
            self.dispatch()
        return reports

    def events_job(self) -> None:
        """The daemon's events job: a round (``process_events``), again while the receivers
        stored events meanwhile (``wake_events``) or records were left because their events
        still arrive (``EVENT_SETTLE``: the job then waits half the window and looks again), at
        most ``EVENT_ROUNDS`` rounds in a row so the connection's lock is not held for ever
        under a sustained flood. A connection whose lock another job holds (its cycle, a push)
        is looked at again every half window until the lock frees (``EVENT_LOCK_WAIT`` at
        most): its events, stored meanwhile, run then, not at the job's next interval."""
        with self._events:
            self._events_running = True
        try:
            rounds = waits = 0
            previous: datetime | None = None    # events since the last round still arrive
            blocked_since: float | None = None
            while rounds < EVENT_ROUNDS and waits < 4 * EVENT_ROUNDS:
                with self._events:
                    self._events_again = False
                started = self.clock()
                reports = self.process_events(settle=EVENT_SETTLE, busy_since=previous)
                previous = started
                rounds += any(r.events for r in reports)
                deferred = any(r.deferred for r in reports)
                with self._events:
                    again, blocked = self._events_again, bool(self._events_blocked)
                if self.stop.is_set() or not (again or deferred or blocked):
                    break
                if blocked and not any(r.events for r in reports):
                    # the lock is another job's: look again when it may have freed
                    blocked_since = blocked_since or time.monotonic()
                    if time.monotonic() - blocked_since > EVENT_LOCK_WAIT.total_seconds():
                        break
                    self.stop.wait(EVENT_SETTLE.total_seconds() / 2)
                elif deferred and not any(r.events for r in reports):
                    waits += 1                  # only records still arriving: let them come
                    self.stop.wait(EVENT_SETTLE.total_seconds() / 2)
        finally:
            with self._events:
                self._events_running = False

    def wake_events(self) -> bool:
        """Events were stored: True when the caller should run the events job now; False
        when it runs already (it will do one more round)."""
        with self._events:
            if self._events_running:
                self._events_again = True
                return False
            return True

    def bill_run(self, lock_wait_seconds: float = BILL_RUN_LOCK_WAIT,
                 run_date: date | None = None) -> BillRunResult | None:
        """Today's bill run (or ``run_date``'s), shared with every worker running it: the
        run's units are claimed one at a time (``billing_core.service.bill_run``), so workers
        pointed at one database split the accounts between them. A manual ``bill-run``
        holding the ``bill-run`` lock is waited for first, up to ``lock_wait_seconds``;
        workers themselves only pass through the lock, so they do not wait for each other."""
        with job_lock(self.engine, "bill-run", wait=True, timeout=lock_wait_seconds,
                      stop=self.stop.is_set) as got:
            if not got and self.stop.is_set():
                log.info("bill run for %s not run: the worker is stopping", self.clock().date())
                return None
            if not got:
                log.warning("bill run for %s not run: another run held the lock for %.0f s; "
                            "it runs at the next scheduled time, or run `ledgerbridge bill-run`",
                            self.clock().date(), lock_wait_seconds)
                return None
        result = run_bill_run(self.engine, run_date or self.clock().date(),
                              chunk_size=self.settings.billing.bill_run_chunk_size,
                              series=self.settings.billing.invoice_series,
                              tax_inclusive=self.settings.billing.tax_inclusive,
                              options=BillRunOptions(clock=self.clock,
                                                     reader_url=self._reader_url()))
        log.info("bill run date=%s run=%s%s invoices=%s accounts=%s errors=%s",
                 result.run_date, result.run_id, " (joined)" if result.joined else "",
                 result.invoices_created, result.accounts_seen, len(result.errors))
        return result

    def _reader_url(self) -> str | None:
        """The bill run's reader process connects here (SQLite files: the engine's URL says
        it all; PostgreSQL reads on a thread)."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return url.render_as_string(hide_password=False)

    def join_bill_run(self) -> BillRunResult | None:
        """The daemon's check for a bill run in progress with work left to claim (started by
        another worker, or left by one that died): join it. None when there is none."""
        with self.engine.connect() as conn:
            day = joinable_run(conn, self.clock())
        if day is None:
            return None
        return self.bill_run(run_date=day)

    def provisioner(self) -> Provisioner:
        if self._provisioner is None:
            self._provisioner = build_provisioner(self.settings.provisioner,
                                                  callback=self._crm_provision)
        return self._provisioner

    def _crm_provision(self, task: ProvisioningTask) -> str:
        """``[provisioner] kind = "crm"``: provisioning = the quote's status field in the CRM,
        saying which change is asked for (:data:`CRM_REQUESTED`)."""
        connection, quote_id, _ = parse_source_ref(str(task.order_ref))
        status = CRM_REQUESTED.get(task.change_kind, f"{task.change_kind} requested")
        results = self.connector(connection).write("quote", [
            {"crm_id": quote_id, "provisioning_status": status}])
        if results and not results[0].ok:
            raise ProvisionError(f"{results[0].code}: {results[0].message}", retriable=True)
        return "dispatched"

    # -- the HTTP API's seam (jobs.api.admin_sync.SyncRunner) -------------------------------
    def start(self, connection: str, object: str | None, full: bool,
              account: str | None) -> int:
        """Admit a manual run (``jobs.admission``) and run it on a thread once it is its turn;
        a request for a run already queued answers that run's id."""
        options = self.options("api", objects=(object,) if object else None, full=full,
                               account=account)
        cycle = self.cycle(connection, options)
        scope: Scope = (object, full, account)
        run_id, new = self._admission.admit(connection, scope, lambda: cycle.start().run_id)
        if new:
            threading.Thread(target=self._run_queued, args=(connection, scope, cycle),
                             name=f"sync-{run_id}", daemon=True).start()
        return run_id

    def _run_queued(self, connection: str, scope: Scope, cycle: Cycle) -> None:
        report = cycle.rep
        try:
            with self._admission.turn(connection), \
                    job_lock(self.engine, f"crm:{connection}", wait=True) as got:
                self._admission.started(connection, scope, report.run_id)
                if not got:
                    report.outcome = "failed"
                    report.error = "gave up waiting for another run of this connection"
                    finish_run(self.engine, report, self.clock())
                    return
                self._after_run(connection, cycle.run())
        finally:
            self._admission.started(connection, scope, report.run_id)

    def get(self, run_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            return get_run(conn, run_id)
