"""The dispatch loop: claims, leases, the hold re-check, failures and retries, quantity changes
and cancellations through the gate, and several workers on PostgreSQL."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from credit_helpers import RecordingProvisioner, licence_order, make_account, make_products
from sqlalchemy import insert, select

from billing_core.adapters.provisioners.base import ProvisionError
from billing_core.adapters.tables import hold_reasons, subscription_changes, subscriptions
from billing_core.domain.errors import InvalidState
from billing_core.service.accounts import set_crm_hold
from billing_core.service.gate import accept_order, cancel_order, change_quantity
from billing_core.service.provisioning import (
    claim,
    dispatch_pending,
    list_requests,
    mark_provisioned,
    retry_request,
)


def _setup(ledger, n_orders: int = 1, qty: int = 1):
    acc, products = ledger.run(lambda u: (make_account(u, "D1"), make_products(u)))
    order_ids = [ledger.run(lambda u, i=i: accept_order(
        u, licence_order(acc, f"q{i}", qty, products, ledger.clock.today)))
        for i in range(n_orders)]
    return acc, products, order_ids


def test_crash_between_send_and_record_resends_same_key_after_lease(ledger, clock):
    _setup(ledger)
    first = claim(ledger.engine, limit=10, now=clock.now, lease=timedelta(minutes=5))
    assert len(first) == 1 and first[0].attempt == 1
    # The worker dies here: nothing recorded. Within the lease nobody takes it again.
    assert claim(ledger.engine, limit=10, now=clock.now + timedelta(minutes=4)) == []
    clock.advance(1)
    provisioner = RecordingProvisioner()
    report = dispatch_pending(ledger.engine, provisioner, clock=clock)
    assert report.dispatched == [first[0].request_id]
    assert provisioner.sent[0].idempotency_key == first[0].idempotency_key
    assert provisioner.sent[0].attempt == 2
    ledger.run(lambda u: mark_provisioned(u, first[0].request_id))
    with ledger.engine.connect() as conn:
        assert [r["state"] for r in list_requests(conn)] == ["provisioned"]


def test_claim_rechecks_the_hold(ledger, clock):
    acc, _, _ = _setup(ledger)
    # A hold committed by someone else after the request went pending (no gate ran here).
    with ledger.engine.begin() as conn:
        conn.execute(insert(hold_reasons).values(account_id=acc, reason="manual", source="x",
                                                 placed_at=clock.now, details="{}"))
    assert ledger.request_states(acc) == ["pending"]
    assert claim(ledger.engine, limit=10, now=clock.now) == []


def test_failure_is_listed_and_retry_keeps_the_key(ledger, clock):
    acc, _, _ = _setup(ledger)

    def refuse(task):
        raise ProvisionError("HTTP 400: bad sku", retriable=False, status=400)

    report = dispatch_pending(ledger.engine, RecordingProvisioner(check=refuse), clock=clock)
    assert report.failed and not report.dispatched
    with ledger.engine.connect() as conn:
        (failed,) = list_requests(conn, state="failed")
    assert "bad sku" in failed["last_error"]
    with ledger.uow() as uow, pytest.raises(InvalidState):
        mark_provisioned(uow, failed["id"])
    ledger.run(lambda u: set_crm_hold(u, acc, True))
    assert ledger.run(lambda u: retry_request(u, failed["id"])) == "awaiting_hold_release"
    ledger.run(lambda u: set_crm_hold(u, acc, False))
    provisioner = RecordingProvisioner()
    dispatch_pending(ledger.engine, provisioner, clock=clock)
    assert [t.idempotency_key for t in provisioner.sent] == [failed["idempotency_key"]]
    with ledger.uow() as uow, pytest.raises(InvalidState, match="only a failed"):
        retry_request(uow, failed["id"])


def test_a_provisioner_bug_fails_its_request_and_the_batch_goes_on(ledger, clock):
    acc, _, _ = _setup(ledger, n_orders=3)

    def buggy(task):
        if task.order_ref == "q1":
            raise ValueError("boom")

    report = dispatch_pending(ledger.engine, RecordingProvisioner(check=buggy), clock=clock)
    assert len(report.dispatched) == 2 and len(report.failed) == 1
    assert ledger.request_states(acc) == ["dispatched", "failed", "dispatched"]
    with ledger.engine.connect() as conn:
        assert list_requests(conn, state="failed")[0]["last_error"] == "ValueError: boom"


def test_quantity_change_on_hold_waits_and_activates_on_release(ledger, clock):
    acc, _, (order_id,) = _setup(ledger, qty=3)
    with ledger.engine.connect() as conn:
        sub_id = conn.execute(select(subscriptions.c.id).where(
            subscriptions.c.order_id == order_id)).scalar_one()
    dispatch_pending(ledger.engine, RecordingProvisioner(), clock=clock)
    ledger.run(lambda u: set_crm_hold(u, acc, True))
    change_id = ledger.run(lambda u: change_quantity(u, sub_id, 5, clock.today))
    with ledger.engine.connect() as conn:
        assert conn.execute(select(subscription_changes.c.status).where(
            subscription_changes.c.id == change_id)).scalar() == "pending"
        assert conn.execute(select(subscriptions.c.quantity).where(
            subscriptions.c.id == sub_id)).scalar() == 3
    assert ledger.request_states(acc) == ["dispatched", "awaiting_hold_release"]
    ledger.run(lambda u: set_crm_hold(u, acc, False))
    with ledger.engine.connect() as conn:
        assert conn.execute(select(subscriptions.c.quantity).where(
            subscriptions.c.id == sub_id)).scalar() == 5
    provisioner = RecordingProvisioner()
    dispatch_pending(ledger.engine, provisioner, clock=clock)
    assert [str(t.quantity) for t in provisioner.sent] == ["5"]


def test_cancelled_order_is_never_provisioned(ledger, clock):
    acc, products = ledger.run(lambda u: (make_account(u, "C1", crm_hold=True), make_products(u)))
    order_id = ledger.run(lambda u: accept_order(u, licence_order(acc, "qc", 1, products,
                                                                  clock.today, setup=True)))
    assert ledger.run(lambda u: cancel_order(u, order_id)) == 2
    ledger.run(lambda u: set_crm_hold(u, acc, False))
    assert ledger.request_states(acc) == ["cancelled", "cancelled"]
    assert dispatch_pending(ledger.engine, RecordingProvisioner(), clock=clock).claimed == 0


def test_waiting_requests_go_out_in_creation_order(ledger, clock):
    acc, products = ledger.run(lambda u: (make_account(u, "O1", crm_hold=True), make_products(u)))
    for i in range(4):
        ledger.run(lambda u, i=i: accept_order(u, licence_order(acc, f"o{i}", i + 1, products,
                                                                clock.today)))
    ledger.run(lambda u: set_crm_hold(u, acc, False))
    provisioner = RecordingProvisioner()
    while dispatch_pending(ledger.engine, provisioner, limit=1, clock=clock).claimed:
        pass
    assert [t.order_ref for t in provisioner.sent] == ["o0", "o1", "o2", "o3"]


@pytest.mark.postgres
def test_two_workers_on_postgres_never_dispatch_the_same_request(pg_engine, clock):
    from credit_helpers import Ledger

    ledger = Ledger(pg_engine, clock)
    _setup(ledger, n_orders=30)
    lock = threading.Lock()
    sent: list[int] = []
    barrier = threading.Barrier(4)

    class Shared(RecordingProvisioner):
        def provision(self, task):
            with lock:
                sent.append(task.request_id)
            return "dispatched"

    def worker(n: int) -> None:
        barrier.wait()
        while dispatch_pending(pg_engine, Shared(), limit=3, worker_id=f"w{n}",
                               clock=clock).claimed:
            pass

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 30
    assert set(ledger.request_states()) == {"dispatched"}


@pytest.mark.postgres
def test_concurrent_evaluations_of_the_same_accounts_place_each_reason_once(pg_engine, clock):
    """Four transactions re-evaluate the same eight over-limit accounts at once: the account
    row lock serialises them, so nobody fails on the unique reason and history has one row."""
    from credit_helpers import Ledger, post_invoice

    from billing_core.adapters.db import UnitOfWork
    from billing_core.adapters.tables import hold_history

    ledger = Ledger(pg_engine, clock)
    with UnitOfWork(pg_engine, clock=clock) as uow:     # no hooks: nothing evaluated yet
        ids = [make_account(uow, f"R{i}", limit="1.00") for i in range(8)]
        for acc in ids:
            post_invoice(uow, acc, 500, issue=clock.today, due=clock.today + timedelta(30))
        uow.commit()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            with ledger.uow() as uow:
                for acc in ids:
                    uow.touch(acc)
                barrier.wait()
                uow.commit()
        except Exception as exc:  # noqa: BLE001 (collected for the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pg_engine.connect() as conn:
        rows = conn.execute(select(hold_history.c.account_id)).all()
    assert sorted(r[0] for r in rows) == sorted(ids)


@pytest.mark.postgres
def test_racing_handoffs_of_one_quote_create_one_order_and_one_set_of_requests(pg_engine, clock):
    from credit_helpers import Ledger

    ledger = Ledger(pg_engine, clock)
    acc, products = ledger.run(lambda u: (make_account(u, "RACE"), make_products(u)))
    barrier = threading.Barrier(3)
    got: list[int] = []

    def handoff() -> None:
        with ledger.uow() as uow:
            barrier.wait()
            got.append(accept_order(uow, licence_order(acc, "sf:Q9:rev1", 2, products,
                                                       clock.today, setup=True)))
            uow.commit()

    threads = [threading.Thread(target=handoff) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3 and len(set(got)) == 1
    assert ledger.request_states(acc) == ["pending", "pending"]
