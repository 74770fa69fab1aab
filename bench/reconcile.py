"""Vendor reconciliation benchmark: one Partner Center file of N lines imported and reported.

    .venv/bin/python bench/reconcile.py                               # SQLite, 100,000 lines
    .venv/bin/python bench/reconcile.py --lines 20000 --accounts 2000
    .venv/bin/python bench/reconcile.py --database-url postgresql://postgres@127.0.0.1:5432/test

``--accounts`` accounts whose CRM id is their tenant id (rule 3 of the matching, no mapping),
20 products with Partner Center skus, and a file of ``--lines`` lines (the 7 columns the
import reads) for tenants drawn at random among 110 % of the accounts (so about one customer
in eleven is not found). Nothing is billed, so every line is unmatched (``not_billed`` or
``no_account``): the report's largest form. Prints the time of :func:`reconcile_vendor_file`
(parse, store, report, one transaction), of the same file again (nothing stored: the report
only), and the peak RSS of this process. On PostgreSQL the benchmark works in a schema of its
own and drops it.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import insert, text  # noqa: E402

from billing_core.adapters.db import make_engine  # noqa: E402
from billing_core.adapters.tables import accounts  # noqa: E402
from billing_core.service import ledger_uow  # noqa: E402
from billing_core.service import vendor_reconciliation as vr  # noqa: E402
from billing_core.service.pricing import ProductIn, add_product, set_price  # noqa: E402
from jobs.migrate import upgrade  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    schema = None
    if args.database_url.startswith("postgresql"):
        schema = f"lbbench_reconcile_{uuid.uuid4().hex[:6]}"
        admin = make_engine(args.database_url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine(args.database_url,
                             connect_args={"options": f"-csearch_path={schema}"})
    else:
        tmp = tempfile.mkdtemp()
        engine = make_engine(args.database_url or f"sqlite:///{tmp}/bench.db")
    try:
        run(engine, args.accounts, args.lines)
    finally:
        engine.dispose()
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def run(engine, n_accounts: int, n_lines: int) -> None:
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(accounts), [
            {"ext_source": "local", "ext_object": "account", "ext_id": f"tenant-{i:06d}",
             "name": f"Customer {i}", "currency": "USD", "created_at": now, "updated_at": now}
            for i in range(n_accounts)])
    with ledger_uow(engine) as uow:
        for k in range(20):
            pid = add_product(uow, ProductIn(sku=f"CFQ7TTC0{k:04d}:0001", name=f"P{k}",
                                             kind="recurring", billing_period="month"))
            set_price(uow, pid, "USD", date(2020, 1, 1), "10")
        uow.commit()
    rnd = random.Random(1)
    rows = ["CustomerId,ProductId,SkuId,BillableQuantity,Subtotal,Currency,SubscriptionId"]
    for i in range(n_lines):
        rows.append(f"tenant-{rnd.randrange(n_accounts * 11 // 10):06d},"
                    f"CFQ7TTC0{rnd.randrange(20):04d},0001,{rnd.randrange(1, 50)},"
                    f"{rnd.randrange(100, 99999) / 100:.2f},USD,sub-{i}")
    data = ("\n".join(rows) + "\n").encode()
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        with ledger_uow(engine) as uow:
            report = vr.reconcile_vendor_file(uow, data, period="2026-03", file_name="bench.csv")
            uow.commit()
        timings.append(time.perf_counter() - started)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{engine.dialect.name}: {n_accounts:,} accounts, {n_lines:,} lines "
          f"({len(data) / 1e6:.1f} MB): import and report {timings[0]:.2f} s, the same file "
          f"again {timings[1]:.2f} s; unmatched {report['summary']['unmatched']['count']:,}; "
          f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
