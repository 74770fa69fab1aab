"""Claims whose process is gone are taken back at once (issue 13, item 5): a ``dispatching``
provisioning request, a ``sending`` outbox row and a ``running`` bill run name their process
(``claimed_by``); a later dispatcher, pusher or bill run on this host finds the process gone
and takes the claim back, without waiting for the lease. A live owner's claim is left alone.

The dead owner is a real process: a child that printed its own owner string and exited.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from credit_helpers import (
    Clock,
    Ledger,
    RecordingProvisioner,
    licence_order,
    make_account,
    make_products,
)
from sqlalchemy import Engine, func, insert, select, update

from billing_core.adapters import owner
from billing_core.adapters.provisioners.base import ProvisioningTask
from billing_core.adapters.tables import bill_runs, hold_reasons
from billing_core.adapters.tables import provisioning_requests as pr
from billing_core.service.bill_run import run_bill_run
from billing_core.service.gate import accept_order
from billing_core.service.provisioning import dispatch_pending
from billing_core.service.views import provisioning_status
from sync.push import push
from sync.states import OutboxState
from sync.status import overview
from sync.tables import outbox

ROOT = Path(__file__).resolve().parents[3]


def _dead_owner() -> str:
    """The owner string of a process that has exited."""
    out = subprocess.run([sys.executable, "-c",
                          "from billing_core.adapters import owner; print(owner.current())"],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=60)
    return out.stdout.strip()


def test_owner_strings_tell_a_gone_process_from_a_live_one() -> None:
    me = owner.current()
    pid, host, start = owner.parse(me) or (0, "", "")
    assert pid == os.getpid() and host and start       # this is Linux: /proc gives the start
    assert not owner.is_gone(me)
    assert owner.is_gone(_dead_owner())
    # The same pid started at another time is another process (a reused pid).
    assert owner.is_gone(f"{pid}@{host}/{int(start) + 1}")
    # Another host's process cannot be asked; nor can what is not an owner string.
    assert not owner.is_gone(f"999999@not-{host}/1")
    assert not owner.is_gone(None) and not owner.is_gone("garbage") and not owner.is_gone("")
    assert owner.gone_among([me, None, _dead_owner()]) != [] and me not in owner.gone_among([me])


def _requests(ledger: Ledger, n: int) -> int:
    acc, products = ledger.run(lambda u: (make_account(u, "OWN1"), make_products(u)))
    for i in range(n):
        ledger.run(lambda u, i=i: accept_order(
            u, licence_order(acc, f"own{i}", 1, products, ledger.clock.today)))
    return int(acc)


def _strand(engine: Engine, who: str, clock: Clock) -> list[str]:
    """Every request left ``dispatching`` by ``who``, its lease still 10 minutes away; returns
    their keys."""
    with engine.begin() as conn:
        conn.execute(update(pr).values(state="dispatching", attempts=1, claimed_by=who,
                                       next_attempt_at=clock.now + timedelta(minutes=10)))
        return list(conn.execute(select(pr.c.idempotency_key).order_by(pr.c.id)).scalars())


def test_requests_of_a_killed_dispatcher_are_sent_again_at_once_with_their_keys(
        engine: Engine) -> None:
    clock = Clock()
    ledger = Ledger(engine, clock)
    _requests(ledger, 3)
    keys = _strand(engine, _dead_owner(), clock)
    sent = RecordingProvisioner()
    report = dispatch_pending(engine, sent, clock=clock)        # same instant: lease unexpired
    assert report.claimed == 3 and [t.idempotency_key for t in sent.sent] == keys
    assert [t.attempt for t in sent.sent] == [2, 2, 2]
    with engine.connect() as conn:
        rows = conn.execute(select(pr.c.state, pr.c.claimed_by, pr.c.last_error)).all()
    assert {(r.state, r.claimed_by) for r in rows} == {("dispatched", None)}


def test_a_live_dispatchers_claim_is_left_to_its_lease(engine: Engine) -> None:
    clock = Clock()
    ledger = Ledger(engine, clock)
    _requests(ledger, 2)
    _strand(engine, owner.current(), clock)
    assert dispatch_pending(engine, RecordingProvisioner(), clock=clock).claimed == 0
    clock.now += timedelta(minutes=11)                           # the lease ran out
    assert dispatch_pending(engine, RecordingProvisioner(), clock=clock).claimed == 2


def test_a_stranded_request_of_an_account_now_on_hold_waits_for_the_release(
        engine: Engine) -> None:
    """The account went on hold while its request was ``dispatching`` and the dispatcher
    died: the request waits for the release (the CRM shows it), it is not left in progress."""
    clock = Clock()
    ledger = Ledger(engine, clock)
    acc = _requests(ledger, 1)
    _strand(engine, _dead_owner(), clock)
    with engine.begin() as conn:
        conn.execute(insert(hold_reasons).values(account_id=acc, reason="manual", source="t",
                                                 placed_at=clock.now, details="{}"))
    assert dispatch_pending(engine, RecordingProvisioner(), clock=clock).claimed == 0
    assert ledger.request_states(acc) == ["awaiting_hold_release"]
    assert provisioning_status(ledger.request_states(acc), "active") == \
        "waiting for hold release"


def test_a_large_dispatch_claims_in_small_batches(engine: Engine) -> None:
    """``dispatch --limit 10000`` works through the queue a batch at a time: a crash strands
    one batch, not the queue. Seen from inside the provisioner, never more than ``batch``
    requests are ``dispatching``."""
    clock = Clock()
    ledger = Ledger(engine, clock)
    _requests(ledger, 7)
    seen: list[int] = []

    def count(task: ProvisioningTask) -> None:
        with engine.connect() as conn:
            seen.append(int(conn.execute(select(func.count()).select_from(pr).where(
                pr.c.state == "dispatching")).scalar_one()))

    report = dispatch_pending(engine, RecordingProvisioner(check=count), limit=10000, batch=3,
                              clock=clock)
    assert report.claimed == 7 and len(report.dispatched) == 7
    assert max(seen) == 3 and seen == [3, 2, 1, 3, 2, 1, 1]


class _Acks:
    """A connector that acknowledges every write (what push needs of it)."""
    name = "acks"

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, obj: str, updates: list[dict[str, object]], redecide: object = None
              ) -> list[object]:
        self.written += [str(u["crm_id"]) for u in updates]
        return [type("Ok", (), {"ok": True, "code": None, "message": None})()] * len(updates)


def _sending(engine: Engine, who: str, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(insert(outbox), [
            {"connection": "sf", "object": "account", "crm_id": f"001{i}", "ledger_id": i,
             "payload": json.dumps({"balance": str(i)}), "hash": f"h{i}", "attempts": 0,
             "state": OutboxState.SENDING, "claimed_by": who,
             "next_attempt_at": now + timedelta(minutes=5), "updated_at": now}
            for i in range(3)])


@pytest.mark.parametrize("dead", [True, False])
def test_outbox_rows_of_a_killed_pusher_are_pushed_at_once(engine: Engine, dead: bool) -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    _sending(engine, _dead_owner() if dead else owner.current(), now)
    crm = _Acks()
    push(engine, crm, "sf", objects=("account",), clock=lambda: now)  # type: ignore[arg-type]
    with engine.connect() as conn:
        states = conn.execute(select(outbox.c.state, outbox.c.claimed_by)).all()
    if dead:
        assert crm.written == ["0010", "0011", "0012"]
        assert {tuple(s) for s in states} == {(OutboxState.ACKED, None)}
    else:                                   # a live pusher's rows wait for it (or its lease)
        assert crm.written == []
        assert {s.state for s in states} == {OutboxState.SENDING}


def test_a_killed_bill_run_is_flagged_then_closed_by_the_next(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(bill_runs), [
            {"run_date": date(2026, 12, 1), "started_at": now - timedelta(minutes=1),
             "status": "running", "claimed_by": _dead_owner()},
            {"run_date": date(2026, 12, 1), "started_at": now - timedelta(minutes=1),
             "status": "running", "claimed_by": owner.current()}])
    status = overview(engine, interval_minutes=15, now=now)
    assert status["abandoned_bill_runs"] == 1           # the live one is not abandoned
    assert "abandoned bill runs: 1" in status["attention"]
    result = run_bill_run(engine, date(2026, 12, 1))
    with engine.connect() as conn:
        rows = conn.execute(select(bill_runs.c.id, bill_runs.c.status, bill_runs.c.claimed_by)
                            .order_by(bill_runs.c.id)).all()
    assert [r.status for r in rows] == ["abandoned", "running", "finished"]
    assert rows[2].id == result.run_id and rows[2].claimed_by == owner.current()
    assert overview(engine, interval_minutes=15)["abandoned_bill_runs"] == 0


@pytest.mark.postgres
def test_three_dispatchers_never_send_one_request_twice(pg_engine: Engine) -> None:
    """Reclaiming stale claims inside the claim transaction keeps one owner per request when
    dispatchers run at once (PostgreSQL: SQLite serialises its writers by design)."""
    engine = pg_engine
    clock = Clock()
    ledger = Ledger(engine, clock)
    _requests(ledger, 20)
    _strand(engine, _dead_owner(), clock)
    sent = RecordingProvisioner()
    workers = [threading.Thread(target=dispatch_pending, args=(engine, sent),
                                kwargs={"clock": clock, "batch": 4}) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    keys = [t.idempotency_key for t in sent.sent]
    assert len(keys) == 20 and len(set(keys)) == 20
