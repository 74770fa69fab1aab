"""The daemon's dispatch keeps up (issue 15, item 9): its job dispatches every releasable
request, in order, until none is left, instead of 50 a run; and the sync job dispatches what
its cycle released right after it.

Regression: ``Worker.dispatch`` took at most 50 requests a run (3,000 an hour at the default
interval), so a hold lift behind a queue of 759 waited ten minutes.
"""
from __future__ import annotations

from credit_helpers import Ledger, licence_order, make_account, make_products
from sqlalchemy import Engine, select

from billing_core.adapters.tables import provisioning_requests as pr
from billing_core.service.gate import accept_orders
from config.settings import load_settings
from jobs.worker import Worker


def _worker(engine: Engine, tmp_path) -> Worker:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[provisioner]\nkind = "log"\n')
    return Worker(engine, load_settings(cfg))


def _queue(ledger: Ledger, n: int) -> None:
    acc, products = ledger.run(lambda u: (make_account(u, "Q1"), make_products(u)))
    ledger.run(lambda u: accept_orders(u, [licence_order(acc, f"q{i}", 1, products,
                                                         ledger.clock.today)
                                           for i in range(n)]))


def test_one_dispatch_job_empties_the_queue_in_order(engine: Engine, tmp_path, ledger) -> None:
    _queue(ledger, 130)
    worker = _worker(engine, tmp_path)
    try:
        report = worker.dispatch()
    finally:
        worker.close()
    assert report is not None and report.claimed == 130
    with engine.connect() as conn:
        ids = list(conn.execute(select(pr.c.id).order_by(pr.c.id)).scalars())
        assert set(conn.execute(select(pr.c.state)).scalars()) == {"dispatched"}
    assert report.dispatched == ids                      # in creation order


def test_a_stopping_worker_stops_between_batches(engine: Engine, tmp_path, ledger) -> None:
    _queue(ledger, 60)
    worker = _worker(engine, tmp_path)
    worker.stop.set()
    try:
        report = worker.dispatch()
    finally:
        worker.close()
    assert report is not None and report.claimed == 0
