"""Concurrency on PostgreSQL: two payments racing for one invoice cannot over-apply it."""
from __future__ import annotations

import threading
import time

import pytest
from receivables_helpers import make_account, post_invoice
from sqlalchemy import text

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import InsufficientBalance
from billing_core.service import payments
from billing_core.service.documents import find

pytestmark = pytest.mark.postgres


def _wait_until_blocked(engine, deadline_s: float = 20.0) -> None:
    """Poll until another session waits on a row lock (the racing UPDATE)."""
    end = time.monotonic() + deadline_s
    with engine.connect() as conn:
        while time.monotonic() < end:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid != pg_backend_pid()")).scalar()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the second application never waited for the first one's lock")


def test_two_payments_racing_for_one_invoice(pg_engine):
    with UnitOfWork(pg_engine) as uow:
        account = make_account(uow)
        invoice = post_invoice(uow, account, 10000)
        first = payments.record_payment(uow, account, "100", reference="A")
        second = payments.record_payment(uow, account, "100", reference="B")
        uow.commit()
    target = [{"target": f"invoice:{invoice}", "amount": "100"}]
    outcome: dict[str, object] = {}

    def late_applier() -> None:
        with UnitOfWork(pg_engine) as uow:
            try:
                payments.apply_payment(uow, second, target)
                uow.commit()
                outcome["second"] = "applied"
            except InsufficientBalance as exc:
                outcome["second"] = exc

    with UnitOfWork(pg_engine) as holder:
        payments.apply_payment(holder, first, target)   # holds the invoice row until commit
        thread = threading.Thread(target=late_applier)
        thread.start()
        _wait_until_blocked(pg_engine)
        holder.commit()
    thread.join(timeout=30)
    assert isinstance(outcome["second"], InsufficientBalance)
    with UnitOfWork(pg_engine) as uow:
        row = find(uow.conn, "invoice", invoice)
        assert (row["applied_minor"], row["status"]) == (10000, "paid")
        assert payments.payment_view(uow.conn, second)["applied_minor"] == 0
        assert len(payments.payment_view(uow.conn, first)["applications"]) == 1


def test_free_race_exactly_one_wins(pg_engine):
    """No choreography: both start together; whatever the interleaving, one wins."""
    with UnitOfWork(pg_engine) as uow:
        account = make_account(uow)
        invoice = post_invoice(uow, account, 10000)
        pids = [payments.record_payment(uow, account, "100", reference=r) for r in "AB"]
        uow.commit()
    barrier = threading.Barrier(2)
    results: list[str] = []

    def apply(pid: int) -> None:
        with UnitOfWork(pg_engine) as uow:
            barrier.wait()
            try:
                payments.apply_payment(uow, pid, [{"target": f"invoice:{invoice}",
                                                   "amount": "100"}])
                uow.commit()
                results.append("ok")
            except InsufficientBalance:
                results.append("refused")

    threads = [threading.Thread(target=apply, args=(pid,)) for pid in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["ok", "refused"]
    with UnitOfWork(pg_engine) as uow:
        assert find(uow.conn, "invoice", invoice)["applied_minor"] == 10000
