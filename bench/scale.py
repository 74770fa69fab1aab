"""The bill run shared by 1, 2 and 3 worker processes on one PostgreSQL ledger.

    .venv/bin/python bench/scale.py                                   # 1, 2 and 3 workers
    .venv/bin/python bench/scale.py --accounts 100000 --workers 1,3
    .venv/bin/python bench/scale.py --sync                            # and bench/scale_sync.py's part

For each number of workers: a fresh PostgreSQL schema holding ``bench/bill_run.py``'s data
(``--accounts`` accounts x 3 subscriptions + usage), then that many processes started at the
same instant (each waits for a "go" file, so imports and connecting are not timed), each
running the bill run of the same date through the production path (``run_bill_run`` with
credit control's commit hook, ``ledger_uow``): the first creates the run's work units, the
others join it, and they claim units until none is left.

Figures per number of workers: wall (from the go to the last worker's exit), CPU summed over
the workers (each process's user + system time from the go, with its reader process: a daemon
imports its code once, not per run), the CPU ratio to one worker's (target: at most 1.15),
accounts read twice (the accounts the workers read, summed, minus the accounts: must be 0),
units claimed more than once (must be 0: nobody died), and the chaos harness's checks on the
ledger (``bench/chaos_checks.py``: one live invoice per account and period, gapless invoice
numbers), plus the invoices each worker wrote. ``--reader``: on PostgreSQL the bill run reads
on a thread (``process`` is SQLite's choice; here it only changes what a worker starts).

The sync part (``--sync``): ``bench/scale_sync.py``'s ``run(workers) -> dict`` for each
number of workers, its figures printed as they come (that module owns them).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_URL = os.environ.get("LEDGERBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _schema_url(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def _cpu() -> float:
    """This process's CPU seconds and its reaped children's (the reader process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def worker(url: str, go: str, out: str, chunk: int, reader: str) -> None:
    """One worker process: wait for the go, bill, write its figures as JSON."""
    from bill_run import NOW, RUN_DATE

    from billing_core.adapters.db import make_engine
    from billing_core.service import ledger_uow
    from billing_core.service.bill_run import BillRunOptions, run_bill_run

    engine = make_engine(url)
    with engine.connect() as conn:          # connect before the go
        conn.exec_driver_sql("SELECT 1")
    while not os.path.exists(go):
        time.sleep(0.005)
    cpu0 = _cpu()                           # from the go: imports are not the run's
    t0 = time.perf_counter()
    opts = BillRunOptions(pipeline=reader != "none",
                          reader_url=url if reader == "process" else None, poll_seconds=0.1)
    if reader == "process":             # on PostgreSQL the bill run would choose a thread
        import billing_core.service.bill_run as module
        module.PROCESS_READER_DIALECTS = ("sqlite", "postgresql")
    result = run_bill_run(engine, RUN_DATE, chunk_size=chunk,
                          uow_factory=lambda: ledger_uow(engine, clock=lambda: NOW),
                          options=opts)
    wall = time.perf_counter() - t0
    Path(out).write_text(json.dumps({
        "run_id": result.run_id, "joined": result.joined, "wall": wall,
        "cpu": _cpu() - cpu0,
        "invoices": result.invoices_created, "accounts": result.accounts_seen,
        "already_billed": result.already_billed, "retried_chunks": result.retried_chunks,
        "errors": len(result.errors)}))
    engine.dispose()


def bill_run_part(n: int, *, accounts: int, usage: int, chunk: int, url: str,
                  reader: str) -> dict[str, Any]:
    """``n`` workers over one fresh ledger; the figures and the checks."""
    from bill_run import build
    from chaos_checks import gapless_numbers, one_live_invoice
    from sqlalchemy import func, select, text

    from billing_core.adapters.db import make_engine
    from billing_core.adapters.tables import work_units
    from jobs.migrate import upgrade

    schema = f"scale_{os.getpid()}_{n}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    child_url = _schema_url(url, schema)
    engine = make_engine(child_url)
    try:
        upgrade(engine)
        build(engine, accounts, usage)
        with tempfile.TemporaryDirectory(prefix="ledgerbridge-scale-") as tmp:
            go = os.path.join(tmp, "go")
            outs = [os.path.join(tmp, f"w{k}.json") for k in range(n)]
            procs = [subprocess.Popen([sys.executable, __file__, "--worker", child_url, go,
                                       out, str(chunk), reader]) for out in outs]
            time.sleep(3.0)                 # imports and connections, before the go
            Path(go).touch()
            t0 = time.perf_counter()
            codes = [p.wait() for p in procs]
            wall = time.perf_counter() - t0
            if any(codes):
                raise SystemExit(f"a worker failed: exit codes {codes}")
            figures = [json.loads(Path(o).read_text()) for o in outs]
        with engine.connect() as conn:
            checks = {"one live invoice per account and period": one_live_invoice(conn, None),
                      "gapless invoice numbers": gapless_numbers(conn, None)}
            reclaimed = int(conn.execute(select(func.count()).select_from(work_units).where(
                work_units.c.claims > 1)).scalar_one())
            units = int(conn.execute(select(func.count()).select_from(work_units))
                        .scalar_one())
        return {"workers": n, "wall": wall, "cpu": sum(f["cpu"] for f in figures),
                "invoices": sum(f["invoices"] for f in figures),
                "per_worker": [f["invoices"] for f in figures],
                "read_twice": sum(f["accounts"] for f in figures) - accounts,
                "claimed_twice": reclaimed, "units": units,
                "runs": len({f["run_id"] for f in figures}),
                "retried_chunks": sum(f["retried_chunks"] for f in figures),
                "violations": {k: v for k, v in checks.items() if v}}
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _print(r: dict[str, Any], base: dict[str, Any] | None) -> None:
    ratio = "" if base is None else f", CPU {r['cpu'] / base['cpu']:.2f}x one worker's, " \
        f"wall {r['wall'] / base['wall']:.2f}x"
    print(f"bill run, {r['workers']} worker(s): wall {r['wall']:.1f}s, CPU summed "
          f"{r['cpu']:.1f}s{ratio}; {r['invoices']:,} invoices ({r['per_worker']}), "
          f"{r['units']} units in {r['runs']} run(s); accounts read twice {r['read_twice']}, "
          f"units claimed twice {r['claimed_twice']}, chunks retried {r['retried_chunks']}; "
          f"checks: {'all hold' if not r['violations'] else r['violations']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        url, go, out, chunk, reader = argv[1:6]
        worker(url, go, out, int(chunk), reader)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=30_000,
                    help="accounts in the bill run (default 30,000: a few minutes here)")
    ap.add_argument("--usage-per-account", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=2000)
    ap.add_argument("--workers", default="1,2,3", help="numbers of workers, comma-separated")
    ap.add_argument("--database-url", default=PG_URL, help="a PostgreSQL database")
    ap.add_argument("--reader", choices=("process", "thread", "none"), default="thread",
                    help="each worker's reader (see bench/bill_run.py)")
    ap.add_argument("--sync", action="store_true",
                    help="also run bench/scale_sync.py's part for each number of workers")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    print(f"{args.accounts:,} accounts, chunk {args.chunk_size}, reader {args.reader}; load "
          f"average {os.getloadavg()[0]:.1f}", flush=True)
    bad = False
    done: list[dict[str, Any]] = []
    for n in counts:
        r = bill_run_part(n, accounts=args.accounts, usage=args.usage_per_account,
                          chunk=args.chunk_size, url=args.database_url, reader=args.reader)
        done.append(r)
        _print(r, None)
        bad |= bool(r["violations"]) or r["read_twice"] != 0 or r["claimed_twice"] != 0
    ones = [r for r in done if r["workers"] == 1]
    if ones and len(done) > len(ones):
        # against one worker's mean (the load of the machine moves between runs: give a
        # count twice, e.g. --workers 1,2,3,1, and the order's effect shows)
        base = {"cpu": sum(r["cpu"] for r in ones) / len(ones),
                "wall": sum(r["wall"] for r in ones) / len(ones)}
        print(f"against one worker (mean of {len(ones)} run(s): wall {base['wall']:.1f}s, "
              f"CPU {base['cpu']:.1f}s):")
        for r in done:
            if r["workers"] != 1:
                _print(r, base)
    if args.sync:
        import scale_sync  # bench/scale_sync.py: the sync side's own figures
        for n in counts:
            print(f"sync, {n} worker(s): {scale_sync.run(n)}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
