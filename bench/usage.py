"""Metered usage benchmark: ingestion events/s, then rating N events inside the bill run.

    .venv/bin/python bench/usage.py                                  # SQLite, 10,000,000 events
    .venv/bin/python bench/usage.py --rate-events 1000000 --accounts 10000
    .venv/bin/python bench/usage.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/usage.py --skip-rating                    # ingestion only

1. Ingestion: ``--ingest-events`` events (default 200,000) through
   :func:`billing_core.service.usage_ingest.ingest_events` in batches of ``--batch`` (1,000),
   one transaction each, as ``POST /usage/events`` and ``usage ingest`` run them (accounts by
   CRM id, a property, values as strings; the HTTP layer itself is not timed). Prints events/s.
2. Rating: ``--rate-events`` events (default 10,000,000) for ``--accounts`` accounts (default
   100,000), loaded with bulk inserts (not timed), all in February 2026; a ``sum`` metric
   grouped by region (2 lines per account) on a graduated price; then the bill run of
   1 March 2026, timed, with the aggregation in SQL. Prints the time, events/s rated, the
   invoices and the peak RSS of this process (resource.getrusage: the events are never
   loaded into Python, so it stays near the size of a chunk of accounts).

On PostgreSQL the benchmark works in a schema of its own and drops it.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, func, insert, select, text

from billing_core.adapters.bulk import BulkInsert
from billing_core.adapters.db import UnitOfWork, make_engine
from billing_core.adapters.tables import (
    accounts,
    metered_events,
    price_tiers,
    prices,
    products,
    usage_metrics,
)
from billing_core.service.bill_run import run_bill_run
from billing_core.service.usage_ingest import ingest_events
from jobs.migrate import upgrade

RUN_DATE = date(2026, 3, 1)
NOW = datetime(2026, 2, 28, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
ACCOUNTS = BulkInsert(accounts, ("id", "ext_source", "ext_object", "ext_id", "name", "currency",
                                 "country", "bill_cycle_day", "payment_terms_days", "crm_hold",
                                 "tax_exempt", "status", "created_at", "updated_at"))


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_catalog(engine: Engine, n_accounts: int) -> None:
    with engine.begin() as conn:
        conn.execute(insert(products).values(id=1, sku="CALLS", name="API calls", kind="usage",
                                             pricing_model="graduated", created_at=NOW))
        conn.execute(insert(prices).values(id=1, product_id=1, currency="USD",
                                           effective_from=date(2020, 1, 1),
                                           unit_price=Decimal("0.002"), created_at=NOW))
        conn.execute(insert(price_tiers), [
            {"price_id": 1, "up_to": up, "unit_price": Decimal(u), "flat_fee_minor": 0}
            for up, u in ((Decimal(1000), "0.002"), (None, "0.001"))])
        conn.execute(insert(usage_metrics).values(
            code="calls", effective_from=date(2000, 1, 1), aggregation="sum", product_id=1,
            group_by="region", created_at=NOW))
    for lo in range(1, n_accounts + 1, 10_000):
        rows = [(a, "bench", "account", f"A{a}", f"Account {a}", "USD", "US", 1, 30, False,
                 True, "active", NOW, NOW) for a in range(lo, min(n_accounts, lo + 9_999) + 1)]
        with engine.begin() as conn:
            ACCOUNTS.run(conn, rows)


def bench_ingest(engine: Engine, n: int, batch: int, n_accounts: int) -> float:
    events = [{"event_id": f"ing-{i}", "account": f"A{1 + i % n_accounts}", "metric": "calls",
               "timestamp": (FEB + timedelta(seconds=i % 2_000_000)).isoformat(),
               "value": str(1 + i % 9), "properties": {"region": "eu" if i % 2 else "us"}}
              for i in range(n)]
    t0, c0 = time.perf_counter(), cpu_seconds()
    accepted = 0
    for start in range(0, n, batch):
        with UnitOfWork(engine, clock=lambda: NOW) as uow:
            accepted += ingest_events(uow, events[start:start + batch], source="bench").accepted
            uow.commit()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if accepted != n:
        raise SystemExit(f"ingested {accepted} of {n}")
    rate = n / elapsed
    print(f"ingestion: {n:,} events in batches of {batch:,} in {elapsed:.1f}s: "
          f"{rate:,.0f} events/s on {engine.dialect.name} ({n / cpu:,.0f} events per CPU "
          f"second of this process; load average {os.getloadavg()[0]:.1f})")
    return rate


COLS = ("id", "event_id", "account_id", "metric_code", "occurred_at", "value", "value_e6",
        "properties", "received_at")


def _insert_raw(engine: Engine, rows: list[tuple]) -> None:  # type: ignore[type-arg]
    """Plain rows in the columns' stored forms: SQLite executemany, PostgreSQL COPY."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            dbapi = conn.connection.dbapi_connection
            with dbapi.cursor() as cur, cur.copy(  # type: ignore[union-attr]
                    f"COPY metered_events ({', '.join(COLS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            conn.exec_driver_sql(f"INSERT INTO metered_events ({', '.join(COLS)}) VALUES "
                                 f"({', '.join('?' for _ in COLS)})", rows)


def load_events(engine: Engine, n: int, n_accounts: int, first_id: int) -> None:
    """``n`` events spread over the accounts and over February, bulk-inserted (not timed)."""
    per = max(1, n // n_accounts)
    step = 2_000_000 // per
    pg = engine.dialect.name == "postgresql"
    received = NOW if pg else NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
    regions = ('{"region": "us"}', '{"region": "eu"}')
    next_id, made, slab = first_id, 0, 200_000
    t0 = time.perf_counter()
    while made < n:
        rows = []
        for _ in range(min(slab, n - made)):
            a = 1 + made % n_accounts
            k = made // n_accounts
            value = 1 + made % 9
            at = FEB + timedelta(seconds=(k * step + a) % 2_400_000)
            rows.append((next_id, f"b{next_id}", a, "calls",
                         at if pg else at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                         value if pg else str(value), value * 1_000_000, regions[(made // n_accounts) % 2],
                         received))
            next_id += 1
            made += 1
        _insert_raw(engine, rows)
    print(f"loaded {n:,} events for {n_accounts:,} accounts in {time.perf_counter() - t0:.0f}s "
          f"(not timed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database-url", help="default: a fresh SQLite file in a temp directory")
    ap.add_argument("--ingest-events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rate-events", type=int, default=10_000_000)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--chunk-size", type=int, default=2000)
    ap.add_argument("--skip-rating", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="ledgerbridge-usage-bench-")
    url = args.database_url or f"sqlite:///{tmp.name}/bench.db"
    admin = schema = None
    if url.startswith("postgresql"):
        schema = f"bench_usage_{os.getpid()}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    else:
        engine = make_engine(url)
    try:
        upgrade(engine)
        build_catalog(engine, args.accounts)
        bench_ingest(engine, args.ingest_events, args.batch, args.accounts)
        if args.skip_rating:
            return
        with engine.connect() as conn:
            top = conn.execute(select(func.max(metered_events.c.id))).scalar() or 0
        load_events(engine, args.rate_events, args.accounts, top + 1)
        total = args.rate_events + args.ingest_events
        rss0 = rss_mb()
        t0, c0 = time.perf_counter(), cpu_seconds()
        result = run_bill_run(engine, RUN_DATE, chunk_size=args.chunk_size,
                              uow_factory=lambda: UnitOfWork(engine, clock=lambda: NOW))
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        with engine.connect() as conn:
            marked = conn.execute(select(func.count()).select_from(metered_events).where(
                metered_events.c.invoice_id.is_not(None))).scalar()
        print(f"bill run: {total:,} events ({marked:,} marked billed) for {args.accounts:,} "
              f"accounts rated in {elapsed:.1f}s ({total / elapsed:,.0f} events/s): "
              f"{result.invoices_created:,} invoices, {result.lines_written:,} lines, "
              f"errors {len(result.errors)}; CPU {cpu:.1f}s in this process, load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"peak RSS {rss_mb():.0f} MB (before the run {rss0:.0f} MB) on "
              f"{engine.dialect.name}")
    finally:
        engine.dispose()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


if __name__ == "__main__":
    main()
