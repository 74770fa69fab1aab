"""Several dispatchers share one provisioning queue (issue 18): each request is claimed by one
of them at a time, a late outcome of a claim taken back never overwrites the newer claim,
another host's claim waits for its lease, and on PostgreSQL three real processes dispatch
exactly what one does, each request once; a killed process's claims are finished by another.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
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
from sqlalchemy import Engine, select, update

from billing_core.adapters.tables import provisioning_requests as pr
from billing_core.service.gate import accept_order
from billing_core.service.provisioning import _record, claim, dispatch_pending

CHILD = Path(__file__).resolve().parent / "dispatch_child.py"
ROOT = Path(__file__).resolve().parents[3]


def _queue(ledger: Ledger, accounts: int, orders: int) -> None:
    """``accounts`` accounts with ``orders`` licence orders each (with a set-up fee every other
    order): one ``provision`` request per subscription and per one-time item."""
    products = ledger.run(make_products)
    for a in range(accounts):
        acc = ledger.run(lambda u, a=a: make_account(u, f"W{a}"))
        for o in range(orders):
            ledger.run(lambda u, a=a, o=o, acc=acc: accept_order(u, licence_order(
                acc, f"w{a}-{o}", 1 + o, products, ledger.clock.today, setup=o % 2 == 0)))


def _outcome(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(pr.c.id, pr.c.idempotency_key, pr.c.state, pr.c.attempts, pr.c.claimed_by,
                   pr.c.last_error).order_by(pr.c.id))]


def test_a_late_outcome_of_a_claim_taken_back_is_not_recorded(engine: Engine) -> None:
    """Dispatcher A's lease runs out while its send hangs; B takes the request back and claims
    it again (attempt 2). A's failure, arriving late, must not overwrite B's claim, and B's
    outcome is the one recorded."""
    clock = Clock()
    ledger = Ledger(engine, clock)
    _queue(ledger, 1, 1)                                   # a licence and a set-up fee
    first = claim(engine, limit=10, now=clock.now)
    assert [t.attempt for t in first] == [1, 1]
    later = clock.now + timedelta(minutes=11)              # A's lease (10 minutes) ran out
    second = claim(engine, limit=10, now=later)
    assert [t.attempt for t in second] == [2, 2]
    assert [t.idempotency_key for t in second] == [t.idempotency_key for t in first]
    assert not _record(engine, first[0], "failed", "timed out", later)
    assert {r[2] for r in _outcome(engine)} == {"dispatching"}
    assert all(_record(engine, t, "dispatched", None, later) for t in second)
    assert all(not _record(engine, t, "failed", "late", later) for t in first)
    assert {(r[2], r[3], r[5]) for r in _outcome(engine)} == {("dispatched", 2, None)}


def test_a_claim_of_another_host_waits_for_its_lease(engine: Engine) -> None:
    """A dispatcher on another machine cannot be seen to be gone: its claims are taken back
    only when their lease runs out, then sent again with their keys."""
    clock = Clock()
    ledger = Ledger(engine, clock)
    _queue(ledger, 1, 2)
    with engine.begin() as conn:
        conn.execute(update(pr).values(state="dispatching", attempts=1,
                                       claimed_by="4242@another-host.example/123",
                                       next_attempt_at=clock.now + timedelta(minutes=10)))
    assert dispatch_pending(engine, RecordingProvisioner(), clock=clock).claimed == 0
    clock.now += timedelta(minutes=10)
    sent = RecordingProvisioner()
    assert dispatch_pending(engine, sent, clock=clock).claimed == 3
    assert {t.attempt for t in sent.sent} == {2}
    assert {r[2] for r in _outcome(engine)} == {"dispatched"}


def _spawn(schema: str, out: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CHILD), schema, str(out), mode], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _together(procs: list[subprocess.Popen[str]]) -> list[int]:
    """Start the ``all`` dispatchers at once (each waits for its go after ``ready``); their
    exit codes."""
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.close()
    return [p.wait(120) for p in procs]


def _handed(out: Path) -> list[tuple[int, str, int, int]]:
    if not out.exists():
        return []
    rows = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
    return [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in rows]


@pytest.mark.postgres
def test_three_processes_dispatch_each_request_once_and_as_one_does(
        pg_engine: Engine, pg_schema_url: str, tmp_path: Path) -> None:
    """Three dispatcher processes on one PostgreSQL queue: every request handed out once, by
    one process, and the ledger ends exactly as it does after one dispatcher."""
    engine = pg_engine
    ledger = Ledger(engine, Clock())
    _queue(ledger, 6, 5)                              # 6 x (5 licences + 3 fees): 48
    alone = tmp_path / "alone.txt"
    assert _together([_spawn(pg_schema_url, alone, "all")]) == [0]
    one = _outcome(engine)
    assert len(one) == 48 and {r[2] for r in one} == {"dispatched"}
    with engine.begin() as conn:                      # the same queue again, untouched
        conn.execute(update(pr).values(state="pending", attempts=0, claimed_by=None,
                                       next_attempt_at=None, last_error=None))
    outs = [tmp_path / f"w{n}.txt" for n in range(3)]
    assert _together([_spawn(pg_schema_url, out, "all") for out in outs]) == [0, 0, 0]
    handed = [h for out in outs for h in _handed(out)]
    ids = [h[0] for h in handed]
    assert sorted(ids) == sorted(set(ids)) == [r[0] for r in one]    # each once, all of them
    assert _outcome(engine) == one
    assert {h[2] for h in handed} == {1}                  # no claim was ever taken back


@pytest.mark.postgres
def test_a_killed_dispatchers_claims_are_finished_by_another(
        pg_engine: Engine, pg_schema_url: str, tmp_path: Path) -> None:
    """A dispatcher process is killed (SIGKILL) while it holds a batch of claims; another
    dispatcher finds its process gone, takes its requests back at once and sends them with
    their keys; nothing is left ``dispatching`` and nothing is sent by both but the one
    request the killed process was sending (sent again with its key, as the rules say)."""
    engine = pg_engine
    clock = Clock()
    ledger = Ledger(engine, clock)
    _queue(ledger, 2, 4)                              # 12 requests
    out = tmp_path / "killed.txt"
    child = _spawn(pg_schema_url, out, "hang")
    assert child.stdout is not None and child.stdout.readline().strip() == "claimed"
    with engine.connect() as conn:
        held = [r.id for r in conn.execute(select(pr.c.id).where(
            pr.c.state == "dispatching", pr.c.claimed_by.like(f"{child.pid}@%")))]
    assert len(held) == 4                             # its batch
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    sent = RecordingProvisioner()
    report = dispatch_pending(engine, sent, limit=None, clock=clock)
    assert report.claimed == 12 and report.lost == []
    assert {t.request_id: t.attempt for t in sent.sent if t.request_id in held} == \
        dict.fromkeys(held, 2)
    again = _handed(out)
    assert [h[0] for h in again] == [held[0]]         # it was sending its first request
    assert next(t for t in sent.sent if t.request_id == held[0]).idempotency_key == again[0][1]
    assert {r[2] for r in _outcome(engine)} == {"dispatched"}
