"""Bill run benchmark: N accounts x 3 subscriptions + usage, then one bill run, timed.

    .venv/bin/python bench/bill_run.py                       # 100,000 accounts, fresh SQLite
    .venv/bin/python bench/bill_run.py --accounts 20000 --profile
    .venv/bin/python bench/bill_run.py --no-hook             # without credit control's hook
    .venv/bin/python bench/bill_run.py --database-url postgresql://postgres@127.0.0.1:5432/test

The data is built with bulk Core inserts (not timed). 90 % of the subscriptions are in steady
state (billed through the period start: one recurring line each); 10 % of the accounts have a
third subscription that started mid-way through the previous period (a proration line); every
account has usage events last period (a graduated-tier usage line); accounts alternate USD/US and
EUR/DE (tax per line). The run uses ``ledger_uow`` like production (credit control's commit
hook re-evaluates the holds of every invoiced account, default policy); ``--no-hook`` measures
a plain ``UnitOfWork``. On PostgreSQL the benchmark works in its own schema and drops it.
Prints invoices/s, rows written/s, CPU time (this process and its children), peak RSS
(resource.getrusage) and the load average.

The ceiling (``--no-ceiling`` to skip): a second database, built the same way, takes the same
rows the run wrote (invoices, lines, tax rows, audit rows; the ``billed_through`` and usage
marks) as plain bulk statements, a transaction per chunk of the same size, with nothing read
or computed: the database's own write rate for this run. Only the write transactions are
timed (the rows are read from the billed database between them). The bench prints the bill
run's rate as a ratio of it (the target is at least 0.8).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Connection, Engine, insert, select, text

from billing_core.adapters.bulk import BulkInsert
from billing_core.adapters.db import UnitOfWork, make_engine
from billing_core.adapters.tables import (
    accounts,
    audit_log,
    bill_runs,
    invoice_lines,
    invoice_taxes,
    invoices,
    price_tiers,
    prices,
    products,
    subscriptions,
    tax_rates,
    usage_events,
)
from billing_core.service import billing_io, ledger_uow
from billing_core.service.bill_run import BillRunOptions, run_bill_run
from jobs.migrate import upgrade

RUN_DATE = date(2026, 3, 1)
LAST = date(2026, 2, 1)
NOW = datetime(2026, 2, 28, tzinfo=UTC)
PROFILE_FILE = os.path.join(tempfile.gettempdir(), "bill_run.prof")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_split() -> tuple[float, float]:
    """CPU seconds of this process (the writer) and of its finished children (the reader)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def build(engine: Engine, n: int, usage_per_account: int, batch: int = 10_000) -> int:
    rows = 0
    with engine.begin() as conn:
        conn.execute(insert(products), [
            {"id": i, "sku": f"P{i}", "name": name, "kind": kind, "billing_period": period,
             "pricing_model": model, "created_at": NOW}
            for i, name, kind, period, model in (
                (1, "Seats", "recurring", "month", "per_unit"),
                (2, "Storage", "recurring", "month", "per_unit"),
                (3, "Support", "recurring", "month", "per_unit"),
                (4, "API calls", "usage", None, "graduated"))])
        price_rows, pid = [], 0
        for cur in ("USD", "EUR"):
            for product, unit in ((1, "12.50"), (2, "3.333"), (3, "99.00"), (4, "0.002")):
                pid += 1
                price_rows.append({"id": pid, "product_id": product, "currency": cur,
                                   "effective_from": date(2020, 1, 1),
                                   "unit_price": Decimal(unit), "created_at": NOW})
        conn.execute(insert(prices), price_rows)
        conn.execute(insert(price_tiers), [
            {"price_id": p["id"], "up_to": up, "unit_price": Decimal(u), "flat_fee_minor": 0}
            for p in price_rows if p["product_id"] == 4
            for up, u in ((Decimal(1000), "0.002"), (None, "0.001"))])
        conn.execute(insert(tax_rates), [
            {"country": "US", "region": "", "rate": Decimal("0.05"), "name": "US",
             "effective_from": date(2020, 1, 1)},
            {"country": "DE", "region": "", "rate": Decimal("0.19"), "name": "DE",
             "effective_from": date(2020, 1, 1)}])
    sub_id = event_id = 0
    for lo in range(1, n + 1, batch):
        hi = min(n, lo + batch - 1)
        accts, subs, events = [], [], []
        for a in range(lo, hi + 1):
            usd = a % 2 == 0
            accts.append((a, "bench", "account", str(a), f"Account {a}", "USD" if usd else "EUR",
                          "US" if usd else "DE", 1, 30, False, "active", NOW, NOW))
            for product in (1, 2, 3):
                sub_id += 1
                fresh = product == 3 and a % 10 == 0
                subs.append((sub_id, a, product, Decimal(1 + a % 7), None, "monthly",
                             date(2026, 2, 10) if fresh else date(2025, 6, 1), None, "active",
                             None if fresh else RUN_DATE, NOW))
            for k in range(usage_per_account):
                event_id += 1
                events.append((event_id, f"ev{event_id}", a, 4,
                               Decimal(300 + (a * 7 + k) % 900),
                               NOW - timedelta(days=1 + k, hours=a % 24), NOW))
        with engine.begin() as conn:
            for spec, rows_ in ((ACCOUNTS, accts), (SUBS, subs), (EVENTS, events)):
                rows += spec.run(conn, rows_)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:    # statistics, as autovacuum gathers them in a while
            conn.exec_driver_sql("ANALYZE")
    return rows


ACCOUNTS = BulkInsert(accounts, ("id", "ext_source", "ext_object", "ext_id", "name", "currency",
                              "country", "bill_cycle_day", "payment_terms_days", "crm_hold",
                              "status", "created_at", "updated_at"))
SUBS = BulkInsert(subscriptions, ("id", "account_id", "product_id", "quantity", "unit_price",
                               "frequency", "start_date", "end_date", "status", "billed_through",
                               "created_at"))
EVENTS = BulkInsert(usage_events, ("id", "event_id", "account_id", "product_id", "quantity",
                                "occurred_at", "created_at"))


AUDIT_COLS = ("at", "actor", "action", "entity_type", "entity_id", "entity_ref", "account_id",
              "changes", "run_id")
INSERT_AUDIT = BulkInsert(audit_log, AUDIT_COLS)


def _chunk_rows(conn: Connection, lo: int, hi: int) -> dict[str, list[tuple[Any, ...]]]:
    """What the run wrote for invoices lo..hi, as plain rows (read, not timed)."""
    inv = [tuple(r) for r in conn.execute(
        select(*(invoices.c[c] for c in billing_io.INVOICE_COLS))
        .where(invoices.c.id.between(lo, hi)).order_by(invoices.c.id))]
    lines = [tuple(r) for r in conn.execute(
        select(*(invoice_lines.c[c] for c in billing_io.LINE_COLS))
        .where(invoice_lines.c.invoice_id.between(lo, hi)))]
    taxes = [tuple(r) for r in conn.execute(
        select(*(invoice_taxes.c[c] for c in billing_io.TAX_COLS))
        .where(invoice_taxes.c.invoice_id.between(lo, hi)))]
    audit = [tuple(r) for r in conn.execute(
        select(*(audit_log.c[c] for c in AUDIT_COLS)).where(
            audit_log.c.entity_type == "invoice",
            audit_log.c.entity_id.in_([str(i) for i in range(lo, hi + 1)])))]
    usage = [tuple(r) for r in conn.execute(
        select(usage_events.c.id, usage_events.c.invoice_id)
        .where(usage_events.c.invoice_id.between(lo, hi)))]
    billed = [(sid, None if fresh else RUN_DATE, end) for sid, fresh, end in conn.execute(
        select(subscriptions.c.id, subscriptions.c.start_date == date(2026, 2, 10),
               subscriptions.c.billed_through)
        .where(subscriptions.c.account_id.in_(select(invoices.c.account_id).where(
            invoices.c.id.between(lo, hi)))))]
    return {"inv": inv, "lines": lines, "taxes": taxes, "audit": audit, "usage": usage,
            "billed": billed}


def ceiling(billed: Engine, fresh: Engine, chunk: int) -> tuple[float, int]:
    """Write what the run wrote into ``fresh`` (built the same way), a transaction per chunk
    of invoices; returns (seconds spent in the write transactions, rows written)."""
    with billed.connect() as conn:
        ids = [int(i) for i in conn.execute(select(invoices.c.id).order_by(invoices.c.id))
               .scalars()]
        runs = [dict(r) for r in conn.execute(select(bill_runs)).mappings()]
    with fresh.begin() as conn:
        conn.execute(insert(bill_runs), runs)           # the invoices' foreign key
    spent, rows = 0.0, 0
    for start in range(0, len(ids), chunk):
        lo, hi = ids[start], ids[min(start + chunk, len(ids)) - 1]
        with billed.connect() as conn:
            got = _chunk_rows(conn, lo, hi)
        t0 = time.perf_counter()
        with fresh.begin() as conn:
            rows += billing_io.INSERT_INVOICE.run(conn, got["inv"])
            rows += billing_io.INSERT_LINE.run(conn, got["lines"])
            rows += billing_io.INSERT_TAX.run(conn, got["taxes"])
            rows += billing_io._set_billed_through(conn, got["billed"])
            rows += billing_io.SET_USAGE_INVOICE.run(conn, got["usage"])
            rows += INSERT_AUDIT.run(conn, got["audit"])
        spent += time.perf_counter() - t0
    return spent, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--usage-per-account", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=2000)
    ap.add_argument("--database-url", help="default: a fresh SQLite file in a temp directory")
    ap.add_argument("--no-hook", action="store_true",
                    help="plain UnitOfWork: leave out credit control's commit hook")
    ap.add_argument("--profile", action="store_true",
                    help=f"cProfile the run, print the top 25, keep the stats in {PROFILE_FILE}")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip the plain bulk insert of the same rows (the ceiling)")
    ap.add_argument("--reader", choices=("auto", "process", "thread", "none"), default="auto",
                    help="where the next unit is read and computed while this one is written "
                         "(auto: as the daemon does, a process on SQLite, a thread on "
                         "PostgreSQL; none: after it, in the writing thread)")
    ap.add_argument("--reader-processes", type=int,
                    default=BillRunOptions.reader_processes,
                    help="reader processes (with --reader auto on SQLite, or process; "
                         "default %(default)s, as the daemon)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-")
    url = args.database_url or f"sqlite:///{tmp.name}/bench.db"
    schema = None
    schemas: list[str] = []
    if url.startswith("postgresql"):
        schema = f"bench_{os.getpid()}"
        admin = make_engine(url)

        def pg(name: str) -> Engine:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{name}"'))
            schemas.append(name)
            return make_engine(url, connect_args={"options": f"-csearch_path={name}"})
        engine = pg(schema)
        def second() -> Engine:
            return pg(f"{schema}_ceiling")
    else:
        engine = make_engine(url)

        def second() -> Engine:
            return make_engine(f"sqlite:///{tmp.name}/ceiling.db")
    try:
        upgrade(engine)
        t0 = time.perf_counter()
        built = build(engine, args.accounts, args.usage_per_account)
        print(f"built {args.accounts:,} accounts, {built:,} rows in "
              f"{time.perf_counter() - t0:.1f}s on {engine.dialect.name}; RSS {rss_mb():.0f} MB")

        def factory() -> UnitOfWork:
            if args.no_hook:
                return UnitOfWork(engine, clock=lambda: NOW)
            return ledger_uow(engine, clock=lambda: NOW)

        profiler = cProfile.Profile() if args.profile else None
        load0 = os.getloadavg()[0]
        own0, kids0 = cpu_split()
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        reader_url = url if schema is None else \
            f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
        if args.reader == "process":    # PostgreSQL's own choice is a thread: measure what is asked
            import billing_core.service.bill_run as module
            module.PROCESS_READER_DIALECTS = ("sqlite", "postgresql")
        opts = BillRunOptions(pipeline=args.reader != "none",
                              reader_processes=args.reader_processes,
                              reader_url=reader_url if args.reader in ("auto", "process")
                              else None)
        result = run_bill_run(engine, RUN_DATE, chunk_size=args.chunk_size, uow_factory=factory,
                              options=opts)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - t0
        own1, kids1 = cpu_split()
        cpu = own1 - own0 + kids1 - kids0
        print(f"bill run: {result.invoices_created:,} invoices, {result.lines_written:,} lines, "
              f"{result.rows_written:,} rows written in {elapsed:.2f}s "
              f"(chunk {args.chunk_size}, errors {len(result.errors)})")
        print(f"  {result.invoices_created / elapsed:,.0f} invoices/s, "
              f"{result.rows_written / elapsed:,.0f} rows written/s, peak RSS {rss_mb():.0f} MB")
        print(f"  CPU time {cpu:.2f}s (this process and its children): "
              f"{result.invoices_created / cpu:,.0f} invoices per CPU-second (the wall figure "
              f"includes waiting for the database and for other processes on the machine); "
              f"hook {'off' if args.no_hook else 'on'}; load average {load0:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after")
        print(f"  of which the writing process {own1 - own0:.2f}s, reader processes "
              f"{kids1 - kids0:.2f}s (a thread reader counts in the writing process)")
        t0 = time.perf_counter()
        again = run_bill_run(engine, RUN_DATE, chunk_size=args.chunk_size, uow_factory=factory)
        print(f"rerun: {again.invoices_created} invoices, {again.already_billed:,} already "
              f"billed in {time.perf_counter() - t0:.2f}s")
        if not args.no_ceiling:
            fresh = second()
            upgrade(fresh)
            build(fresh, args.accounts, args.usage_per_account)
            spent, rows = ceiling(engine, fresh, args.chunk_size)
            fresh.dispose()
            print(f"ceiling (plain bulk insert of the same rows, writes only): {rows:,} rows in "
                  f"{spent:.2f}s = {rows / spent:,.0f} rows/s, "
                  f"{result.invoices_created / spent:,.0f} invoices/s")
            print(f"RATIO bill run / ceiling: {spent / elapsed:.2f} "
                  f"({result.rows_written / elapsed:,.0f} / {rows / spent:,.0f} rows/s; "
                  f"reader {args.reader}, "
                  f"hook {'off' if args.no_hook else 'on'})")
        if profiler:
            stats = pstats.Stats(profiler)
            stats.dump_stats(PROFILE_FILE)
            stats.sort_stats("cumulative").print_stats(25)
            print(f"profile kept in {PROFILE_FILE} (python -m pstats {PROFILE_FILE})")
    finally:
        engine.dispose()
        if schema:
            with admin.begin() as conn:
                for name in schemas:
                    conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    main()
