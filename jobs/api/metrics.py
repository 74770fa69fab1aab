"""Prometheus metrics (the standard ``prometheus_client``), served at ``/metrics``.

Two kinds:
- in-process, per app (its own ``CollectorRegistry``, so several apps in one process never
  clash): API requests by method, route template and status, and their latency;
- read from the database at scrape time (a custom collector; one short read-only transaction):
  sync runs by outcome, records read/written, CRM API calls per connection, outbox / quarantine
  / provisioning queue depths, accounts on hold by reason, the last bill run's duration. The
  remaining CRM API budget per connection comes from the scheduler state when it offers
  ``budgets() -> {connection: remaining}``.
A table that does not exist yet (a component not installed) is skipped, never an error.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, MetaData, Table, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
                tables = _tables(conn)
                yield from _sync_metrics(conn, tables)
                yield from _queue_metrics(conn, tables)
                yield from _hold_metrics(conn, tables)
                yield from _bill_run_metrics(conn, tables)
        except SQLAlchemyError as exc:
            log.warning("metrics: database not readable: %s", type(exc).__name__)
        yield from self._budgets()

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


def _tables(conn: Connection) -> dict[str, Table]:
    from billing_core.adapters.tables import metadata as ledger

    found: dict[str, Table] = dict(ledger.tables)
    try:
        from sync.tables import metadata as sync_metadata
    except ModuleNotFoundError:
        sync_metadata = MetaData()
    found.update(sync_metadata.tables)
    present = set(conn.dialect.get_table_names(conn))
    return {name: table for name, table in found.items() if name in present}


def _sync_metrics(conn: Connection, t: dict[str, Table]) -> Iterator[Metric]:
    if "sync_runs" not in t:
        return
    runs = t["sync_runs"]
    family = CounterMetricFamily("ledgerbridge_sync_runs", "Sync runs by connection and outcome",
                                 labels=["connection", "outcome"])
    for connection, outcome, count in conn.execute(
            select(runs.c.connection, runs.c.outcome, func.count())
            .group_by(runs.c.connection, runs.c.outcome)):
        family.add_metric([connection, str(outcome).split(":")[0]], count)
    yield family
    if "sync_run_objects" not in t:
        return
    objs = t["sync_run_objects"]
    records = CounterMetricFamily("ledgerbridge_sync_records",
                                  "Records handled by sync, by connection, object and kind",
                                  labels=["connection", "object", "kind"])
    calls = CounterMetricFamily("ledgerbridge_crm_api_calls", "CRM API calls made by sync",
                                labels=["connection"])
    per_conn: dict[str, int] = {}
    stmt = select(runs.c.connection, objs.c.object,
                  *(func.coalesce(func.sum(objs.c[k]), 0) for k in (*_SYNC_COUNTS, "api_calls"))
                  ).join(runs, runs.c.id == objs.c.run_id).group_by(runs.c.connection,
                                                                   objs.c.object)
    for row in conn.execute(stmt):
        connection, obj, *values = row
        for kind, value in zip(_SYNC_COUNTS, values, strict=False):
            records.add_metric([connection, obj, kind], int(value))
        per_conn[connection] = per_conn.get(connection, 0) + int(values[-1])
    for connection, value in sorted(per_conn.items()):
        calls.add_metric([connection], value)
    yield records
    yield calls


def _count_by(conn: Connection, table: Table, *cols: str) -> list[tuple[Any, ...]]:
    columns = [table.c[c] for c in cols]
    return [tuple(r) for r in conn.execute(select(*columns, func.count()).group_by(*columns))]


def _queue_metrics(conn: Connection, t: dict[str, Table]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("ledgerbridge_queue_depth", "Rows waiting, by queue and state",
                              labels=["queue", "state"])
    for name, col in (("outbox", "state"), ("quarantine", "status"),
                      ("provisioning_requests", "state")):
        if name in t:
            for state, count in _count_by(conn, t[name], col):
                depth.add_metric([name, str(state)], count)
    yield depth


def _hold_metrics(conn: Connection, t: dict[str, Table]) -> Iterator[Metric]:
    gauge = GaugeMetricFamily("ledgerbridge_holds", "Accounts on hold, by reason",
                              labels=["reason"])
    counts = dict(_count_by(conn, t["hold_reasons"], "reason")) if "hold_reasons" in t else {}
    for reason in ("crm", "credit_limit", "overdue", "manual"):
        gauge.add_metric([reason], counts.get(reason, 0))
    yield gauge


def _bill_run_metrics(conn: Connection, t: dict[str, Table]) -> Iterator[Metric]:
    if "bill_runs" not in t:
        return
    runs = t["bill_runs"]
    counts = CounterMetricFamily("ledgerbridge_bill_runs", "Bill runs by status",
                                 labels=["status"])
    for status, count in _count_by(conn, runs, "status"):
        counts.add_metric([str(status)], count)
    yield counts
    last = conn.execute(select(runs.c.started_at, runs.c.finished_at, runs.c.invoices_created)
                        .where(runs.c.finished_at.is_not(None))
                        .order_by(runs.c.id.desc()).limit(1)).first()
    duration = GaugeMetricFamily("ledgerbridge_bill_run_duration_seconds",
                                 "Duration of the last finished bill run")
    if last is not None:
        duration.add_metric([], (last.finished_at - last.started_at).total_seconds())
    yield duration


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


class RequestMetrics:
    """ASGI middleware counting requests by route template (never by raw path: no cardinality
    blow-up from ids) and status, and logging one line per request with the token's id (never
    the token)."""

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
            metrics.requests.labels(scope["method"], route, str(status)).inc()
            metrics.latency.labels(route).observe(elapsed)
            principal = (scope.get("state") or {}).get("principal")
            log.info("api %s %s status=%s ms=%.1f token=%s", scope["method"], scope["path"],
                     status, elapsed * 1000, getattr(principal, "token_id", "-"))
