"""Dispatch benchmark: a hold lift behind a queue of N provisioning requests.

    .venv/bin/python bench/dispatch.py                      # 5,000 queued + 1 held, SQLite
    .venv/bin/python bench/dispatch.py --queued 20000 --database-url postgresql://...

Setting: N requests are ``pending`` for other accounts (a first sync's backlog) when finance
lifts the manual hold of one more account whose one request waits (``awaiting_hold_release``).
Then one run of the daemon's dispatch job (``Worker.dispatch``, the log provisioner: the
ledger's own cost, no network). Prints how many requests that one job dispatched, where the
released request was (it must be among them: dispatched in the same job, behind the queue,
in order), the seconds it took and requests/s, CPU seconds and the load average. The data is
built through the service layer (orders through the gate), not timed. On PostgreSQL the
benchmark works in its own schema and drops it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, select, text  # noqa: E402

from billing_core.adapters.db import make_engine  # noqa: E402
from billing_core.adapters.tables import provisioning_requests as pr  # noqa: E402
from billing_core.service import ledger_uow  # noqa: E402
from billing_core.service.accounts import AccountIn, create_account  # noqa: E402
from billing_core.service.gate import accept_orders  # noqa: E402
from billing_core.service.holds import place_manual_hold, release_manual_hold  # noqa: E402
from billing_core.service.orders import OrderIn, SubscriptionItem  # noqa: E402
from billing_core.service.pricing import ProductIn, add_product, set_price  # noqa: E402
from config.settings import load_settings  # noqa: E402
from jobs.migrate import upgrade  # noqa: E402
from jobs.worker import Worker  # noqa: E402

DAY = date(2026, 12, 1)


def build(engine: Engine, queued: int) -> tuple[int, int]:
    """``queued`` pending requests (one account each, 100 orders per transaction), then one
    held account with one waiting request. Returns (held account, its request id)."""
    with ledger_uow(engine) as uow:
        product = add_product(uow, ProductIn(sku="SEAT", name="Seat", kind="recurring",
                                             needs_provisioning=True))
        set_price(uow, product, "USD", DAY, "10.00")
        uow.commit()
    done = 0
    while done < queued:
        with ledger_uow(engine) as uow:
            items = []
            for i in range(done, min(done + 100, queued)):
                acc = create_account(uow, AccountIn(name=f"A{i}", currency="USD",
                                                    ext_source="bench", ext_id=f"A{i}"))
                items.append(OrderIn(acc, f"bench:q{i}", DAY,
                                     subscriptions=[SubscriptionItem(product, 1, DAY)]))
            accept_orders(uow, items)
            uow.commit()
        done += len(items)
    with ledger_uow(engine) as uow:
        held = create_account(uow, AccountIn(name="Held", currency="USD", ext_source="bench",
                                             ext_id="HELD"))
        place_manual_hold(uow, held, "credit review", admin="bench")
        uow.commit()
    with ledger_uow(engine) as uow:
        accept_orders(uow, [OrderIn(held, "bench:held", DAY,
                                    subscriptions=[SubscriptionItem(product, 1, DAY)])])
        uow.commit()
    with engine.connect() as conn:
        request = conn.execute(select(pr.c.id).where(pr.c.account_id == held)).scalar_one()
    return held, int(request)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queued", type=int, default=5000)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lbbench-dispatch-") as tmp:
        schema = None
        url = args.database_url or f"sqlite:///{tmp}/ledger.db"
        if url.startswith("postgresql"):
            schema = f"lbbench_{uuid.uuid4().hex[:8]}"
            admin = make_engine(url)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = f"{url}?options=-csearch_path%3D{schema}"
        engine = make_engine(url)
        try:
            upgrade(engine)
            held, request = build(engine, args.queued)
            with ledger_uow(engine) as uow:
                release_manual_hold(uow, held, admin="bench")
                uow.commit()
            config = Path(tmp) / "c.toml"
            config.write_text('[provisioner]\nkind = "log"\n')
            worker = Worker(engine, load_settings(config))
            cpu0, t0 = time.process_time(), time.perf_counter()
            report = worker.dispatch()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            worker.close()
        finally:
            engine.dispose()
            if schema is not None:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                admin.dispose()
    assert report is not None
    where = report.dispatched.index(request) + 1 if request in report.dispatched else None
    print(f"database: {'postgresql' if schema else 'sqlite'}; queued {args.queued} + 1 "
          f"released by a hold lift")
    print(f"one dispatch job: {report.claimed} claimed, {len(report.dispatched)} dispatched, "
          f"{len(report.failed)} failed")
    print(f"released request: {'dispatched, #' + str(where) if where else 'NOT dispatched'}")
    print(f"time {seconds:.2f} s ({len(report.dispatched) / seconds:,.0f} requests/s), "
          f"CPU {cpu:.2f} s, load {os.getloadavg()[0]:.1f}")
    return 0 if where == args.queued + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
