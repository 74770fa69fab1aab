"""Prometheus metrics (the standard ``prometheus_client``), served at ``/metrics``.

Two kinds:
- in-process, per app (its own ``CollectorRegistry``, so several apps in one process never
  clash): API requests by method, route template and status, and their latency;
- read from the database at scrape time (a custom collector; one short read-only transaction):
  sync runs by outcome, records read/written, CRM API calls per connection, outbox / quarantine
  / CRM event inbox (``queue="event_inbox"``) / provisioning queue depths, the oldest
  unprocessed CRM event's age, the last drift sweep's repairs (``sync.drift``), accounts on
  hold by reason, the last bill run's duration. The
  remaining CRM API budget per connection comes from the scheduler state when it offers
  ``budgets() -> {connection: remaining}``; scheduled jobs that raised (``job_failures()``,
  the daemon's worker) as ``ledgerbridge_job_failures_total{job}`` and
  ``ledgerbridge_job_failing{job}``.
The figures come from ``sync.status`` and ``billing_core.service.reports``; a database that
cannot be read (down, or not migrated yet) costs the database figures of that scrape, logged
as a warning, never an error answer.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing_core.service import reports
from billing_core.service.holds import REASONS
from jobs.api import routes_reconcile
from sync import drift, inbox
from sync import status as sync_status

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_SYNC_COUNTS = ("read", "upserted", "unchanged", "quarantined", "deleted", "pushed", "failed")


class LedgerCollector(Collector):
    def __init__(self, engine: Engine, *budget_sources: Any) -> None:
        self.engine = engine
        self.budget_sources = budget_sources

    def collect(self) -> Iterator[Metric]:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(ledger_read_only=True)
                yield from _sync_metrics(conn)
                yield from _queue_metrics(conn)
                yield from _hold_metrics(conn)
                yield from _bill_run_metrics(conn)
                yield from routes_reconcile.metrics(conn)
        except SQLAlchemyError as exc:
            log.warning("metrics: database not readable: %s", type(exc).__name__)
        yield from self._budgets()
        yield from self._jobs()

    def _jobs(self) -> Iterator[Metric]:
        source = next((o.job_failures for o in self.budget_sources
                       if callable(getattr(o, "job_failures", None))), None)
        if source is None:
            return
        failures = CounterMetricFamily("ledgerbridge_job_failures",
                                       "Scheduled job runs that raised, in this process",
                                       labels=["job"])
        failing = GaugeMetricFamily("ledgerbridge_job_failing",
                                    "1 while a scheduled job's last run raised", labels=["job"])
        for job, entry in sorted(source().items()):
            failures.add_metric([job], float(entry.get("failures", 0)))
            failing.add_metric([job], 1.0 if entry.get("failing") else 0.0)
        yield failures
        yield failing

    def _budgets(self) -> Iterator[Metric]:
        source = next((o.budgets for o in self.budget_sources
                       if callable(getattr(o, "budgets", None))), None)
        if source is None:
            return
        names = {"calls": "CRM API calls made by this process",
                 "used": "CRM API usage as the CRM last reported it",
                 "limit": "CRM API allowance as the CRM last reported it",
                 "allowed": "CRM API calls still allowed by the configured share"}
        families = {k: GaugeMetricFamily(f"ledgerbridge_crm_api_budget_{k}", text,
                                         labels=["connection"]) for k, text in names.items()}
        for connection, budget in sorted(source().items()):
            for key, family in families.items():
                value = getattr(budget, key, None)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    family.add_metric([str(connection)], float(value))
        yield from families.values()


def _sync_metrics(conn: Connection) -> Iterator[Metric]:
    family = CounterMetricFamily("ledgerbridge_sync_runs", "Sync runs by connection and outcome",
                                 labels=["connection", "outcome"])
    for (connection, outcome), count in sync_status.runs_by_outcome(conn).items():
        family.add_metric([connection, outcome], count)
    yield family
    records = CounterMetricFamily("ledgerbridge_sync_records",
                                  "Records handled by sync, by connection, object and kind",
                                  labels=["connection", "object", "kind"])
    calls = CounterMetricFamily("ledgerbridge_crm_api_calls", "CRM API calls made by sync",
                                labels=["connection"])
    for totals in sync_status.object_totals(conn):
        for kind in _SYNC_COUNTS:
            records.add_metric([totals.connection, totals.object, kind], totals.counts[kind])
    for connection, value in sorted(sync_status.api_calls_by_connection(conn).items()):
        calls.add_metric([connection], value)
    yield records
    yield calls


def _queue_metrics(conn: Connection) -> Iterator[Metric]:
    depth = GaugeMetricFamily("ledgerbridge_queue_depth", "Rows waiting, by queue and state",
                              labels=["queue", "state"])
    queues = {**sync_status.queue_depths(conn),
              "provisioning_requests": reports.provisioning_by_state(conn)}
    for name, counts in queues.items():
        for state, count in counts.items():
            depth.add_metric([name, state], count)
    yield depth
    oldest = GaugeMetricFamily("ledgerbridge_events_oldest_unprocessed_seconds",
                               "Age of the oldest CRM change event not processed yet (0: none)")
    age = inbox.depth(conn, datetime.now(UTC))["oldest_unprocessed_seconds"]
    oldest.add_metric([], float(age or 0.0))
    yield oldest
    repairs = GaugeMetricFamily("ledgerbridge_sweep_repairs",
                                "The last drift sweep's repairs, by connection, object and kind",
                                labels=["connection", "object", "kind"])
    for connection, found in drift.last_sweeps(conn).items():
        for obj, counts in sorted(found["repairs"].items()):
            for kind, count in sorted(counts.items()):
                repairs.add_metric([connection, obj, kind], float(count))
    yield repairs


def _hold_metrics(conn: Connection) -> Iterator[Metric]:
    gauge = GaugeMetricFamily("ledgerbridge_holds", "Accounts on hold, by reason",
                              labels=["reason"])
    counts = reports.holds_by_reason(conn)
    for reason in REASONS:
        gauge.add_metric([reason], counts.get(reason, 0))
    yield gauge


def _bill_run_metrics(conn: Connection) -> Iterator[Metric]:
    counts = CounterMetricFamily("ledgerbridge_bill_runs", "Bill runs by status",
                                 labels=["status"])
    for status, count in reports.bill_runs_by_status(conn).items():
        counts.add_metric([status], count)
    yield counts
    duration = GaugeMetricFamily("ledgerbridge_bill_run_duration_seconds",
                                 "Duration of the last finished bill run")
    last = reports.last_bill_run(conn)
    if last is not None:
        duration.add_metric([], last.seconds)
    yield duration
    units = GaugeMetricFamily("ledgerbridge_bill_run_units",
                              "The newest bill run's work units, by state",
                              labels=["state"])
    done = GaugeMetricFamily("ledgerbridge_bill_run_progress",
                             "The newest bill run's accounts and invoices done so far, and the "
                             "workers holding its units", labels=["figure"])
    progress = reports.bill_run_progress(conn, datetime.now(UTC))
    if progress is not None:
        for state in ("pending", "claimed", "done", "expired", "reclaimed"):
            units.add_metric([state], float(getattr(progress, state)))
        for figure in ("accounts", "invoices", "workers"):
            done.add_metric([figure], float(getattr(progress, figure)))
    yield units
    yield done


class ApiMetrics:
    """The app's registry: request metrics plus the database collector."""

    def __init__(self, engine: Engine, *budget_sources: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("ledgerbridge_api_requests", "API requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("ledgerbridge_api_request_seconds", "API request latency",
                                 ["route"], registry=self.registry)
        self.registry.register(LedgerCollector(engine, *budget_sources))

    def render(self) -> bytes:
        return generate_latest(self.registry)


#: The methods the request counter names; any other (the server takes any token as a method,
#: before a token is checked) counts as ``other``, so made-up methods add no series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """ASGI middleware counting requests by route template (never by raw path: no cardinality
    blow-up from ids), method (``METHODS``, else ``other``) and status, and logging one line
    per request with the token's id (never the token)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics: ApiMetrics = scope["app"].state.api.metrics
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.latency.labels(route).observe(elapsed)
            principal = (scope.get("state") or {}).get("principal")
            log.info("api %s %s status=%s ms=%.1f token=%s", scope["method"], scope["path"],
                     status, elapsed * 1000, getattr(principal, "token_id", "-"))
