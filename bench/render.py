"""Document rendering benchmark: invoice PDFs per second on one core.

    .venv/bin/python bench/render.py                     # 1,000 PDFs of the demo's invoices
    .venv/bin/python bench/render.py --count 3000 --lines 20 --format html
    .venv/bin/python bench/render.py --profile           # cProfile, top 25

Setting: the billing demo's ledger (three accounts in USD, EUR and JPY, 3 to 6 lines each:
prorations, recurring, one-time, usage, a prepaid credit drawn, tax) billed on SQLite in a
temporary directory; each invoice's data is read once (``billing_core.service.rendering.load``,
not timed), then ``--count`` renders go round them in one process pinned to one CPU, with the
built-in templates. ``--lines N`` repeats each invoice's lines up to N (a longer invoice).
Prints the renders, seconds, documents/s by the wall clock and by CPU time, the average size,
whether every render of a document gave the same bytes, and the load average.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from billing_core.adapters.db import make_engine  # noqa: E402
from billing_core.documents.render import Renderer, RenderOptions, Seller  # noqa: E402
from billing_core.service import ledger_uow  # noqa: E402
from billing_core.service.bill_run import run_bill_run  # noqa: E402
from billing_core.service.invoices import list_invoices  # noqa: E402
from billing_core.service.rendering import load  # noqa: E402
from jobs.cli.demo import seed_demo_ledger  # noqa: E402
from jobs.migrate import upgrade  # noqa: E402

BILL_DATE = date(2026, 3, 10)


def invoices_of_the_demo(lines: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="lb-bench-render-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        with ledger_uow(engine) as uow:
            seed_demo_ledger(uow, BILL_DATE)
            uow.commit()
        run_bill_run(engine, BILL_DATE, uow_factory=lambda: ledger_uow(engine))
        with ledger_uow(engine, read_only=True) as uow:
            docs = [load(uow.conn, "invoice", r["number"])
                    for r in list_invoices(uow.conn) if r["number"]]
        engine.dispose()
    for doc in docs:
        while lines and len(doc["lines"]) < lines:
            doc["lines"] = (doc["lines"] * 2)[:lines]
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="renders (default 1000)")
    parser.add_argument("--lines", type=int, default=0, help="lines per invoice (default: as billed)")
    parser.add_argument("--format", choices=("pdf", "html"), default="pdf")
    parser.add_argument("--profile", action="store_true", help="cProfile the renders, top 25")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    docs = invoices_of_the_demo(args.lines)
    renderer = Renderer(RenderOptions(seller=Seller("Northwind Billing Ltd",
                                                    ("1 Main Street", "Dublin"), "IE1234567T")))
    first = {doc["number"]: renderer.render(doc, args.format) for doc in docs}   # warm-up
    same, size = True, 0
    profiler = cProfile.Profile() if args.profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for i in range(args.count):
        doc = docs[i % len(docs)]
        body = renderer.render(doc, args.format)
        size += len(body)
        same = same and body == first[doc["number"]]
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    lines = sorted({len(d["lines"]) for d in docs})
    print(f"{args.count} invoice {args.format.upper()}s ({len(docs)} invoices of {lines} lines) "
          f"in {wall:.2f} s on one core: {args.count / wall:.0f} docs/s "
          f"({args.count / cpu:.0f} docs/s of CPU time), {size / args.count / 1024:.1f} KiB "
          f"each, same bytes every time: {same}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
