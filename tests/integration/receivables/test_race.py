"""Concurrency on PostgreSQL: two payments racing for one invoice cannot over-apply it, and
payments of one account posted together all land (no deadlock in credit control's hook)."""
from __future__ import annotations

import threading
import time

import pytest
from receivables_helpers import make_account, post_invoice
from sqlalchemy import text

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import InsufficientBalance
from billing_core.service import ledger_uow, payments
from billing_core.service.documents import find
from billing_core.service.receivables import open_balance_minor

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


# --- payments racing on one account with credit control's commit hook (as the API) -------

def test_a_payment_committing_while_another_is_open_waits_for_nobody(pg_engine):
    """Recording a payment inserts rows naming the account (a key-share lock on its row);
    credit control's hook then locks the account at commit. With ``FOR UPDATE`` there, the
    second transaction's hook waited on the first one's key-share lock and the first one's
    on the second's: PostgreSQL killed one as a deadlock (the API answered 503). With
    ``FOR NO KEY UPDATE`` the hooks take turns and neither waits for the inserts."""
    with ledger_uow(pg_engine) as uow:
        account = make_account(uow)
        uow.commit()
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            with ledger_uow(pg_engine) as uow:
                payments.record_payment(uow, account, "20", reference="B")
                uow.commit()
            outcome["second"] = "ok"
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            outcome["second"] = exc

    with ledger_uow(pg_engine) as first:
        payments.record_payment(first, account, "10", reference="A")   # open, not committed
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=10)     # commits without waiting for the open one
        assert outcome.get("second") == "ok"
        first.commit()
    with pg_engine.connect() as conn:
        assert open_balance_minor(conn, account) == -3000


@pytest.mark.parametrize("auto_apply", [False, True], ids=["recorded", "auto-applied"])
def test_payments_posted_together_on_one_account_all_land(pg_engine, auto_apply):
    """Six payments of one account at the same instant, as a payment system posts them: each
    lands once, none refused; applied oldest first, nothing over-applied."""
    with ledger_uow(pg_engine) as uow:
        account = make_account(uow)
        invoice = post_invoice(uow, account, 4500)
        uow.commit()
    barrier = threading.Barrier(6)
    failures: list[BaseException] = []

    def pay(n: int) -> None:
        try:
            with ledger_uow(pg_engine) as uow:
                barrier.wait(timeout=10)
                payments.record_payment(uow, account, "10.00", reference=f"P{n}",
                                        auto_apply=auto_apply)
                uow.commit()
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            failures.append(exc)

    threads = [threading.Thread(target=pay, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    with pg_engine.connect() as conn:
        assert open_balance_minor(conn, account) == 4500 - 6000
        row = find(conn, "invoice", invoice)
        assert row["applied_minor"] == (4500 if auto_apply else 0)
        assert sum(p["applied_minor"] for p in payments.list_payments(conn, account)) == \
            (4500 if auto_apply else 0)
