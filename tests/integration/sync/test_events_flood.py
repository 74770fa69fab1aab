"""The daemon's other jobs keep working under a flood of CRM change events (issue 17): while
senders post callouts without pause, a quote accepted in the CRM is pulled by the sync job,
handed off, and its provisioning request dispatched by the dispatch job; every event posted
is answered 200 and stored once. Outcomes only: no timing is asserted (the waits are safety
nets). On SQLite and PostgreSQL (``engine``)."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from events_config import DV_KEY, HMAC_ENV, HMAC_SECRET, KEY_ENV, events_config
from fake_crm import CountingCRM
from sqlalchemy import Engine, func, select

from billing_core.adapters.tables import orders, provisioning_requests
from config.settings import load_settings
from jobs.daemon import run_daemon
from jobs.worker import Worker
from sync.locks import job_lock
from sync.tables import event_inbox, sync_records

ACCOUNTS = [f"001{i:015d}" for i in range(40)]


def _until(cond: Callable[[], bool], what: str, safety: float = 90) -> None:
    deadline = time.monotonic() + safety          # a safety net, not a timed assertion
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_sync_and_dispatch_jobs_keep_working_during_an_event_flood(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HMAC_ENV, HMAC_SECRET)
    monkeypatch.setenv(KEY_ENV, DV_KEY)
    cfg = tmp_path / "flood.toml"
    # the sync job every 1.2 s, the dispatch job every 0.2 s, the events job woken by the
    # receivers (its interval an hour)
    cfg.write_text("[sync]\ninterval_minutes = 0.02\ndispatch_interval_seconds = 0.2\n"
                   "events_interval_seconds = 3600\n" + events_config(), encoding="utf-8")
    settings = load_settings(cfg)
    crm = CountingCRM()
    crm.seed_basic()
    for crm_id in ACCOUNTS:
        crm.put("account", crm_id, name=f"Flood {crm_id[-3:]}", currency="USD", country="US",
                credit_limit=Decimal(1000), credit_hold=False)
    worker = Worker(engine, settings, connector_factory=lambda s: crm)
    port = _port()
    ready = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(engine, settings), kwargs={
        "api": True, "port": port, "worker": worker, "on_ready": lambda w: ready.set()},
        daemon=True)
    stop_flood = threading.Event()
    answers: list[int] = []

    def flood(sender: int) -> None:
        session = requests.Session()
        for n in itertools.count():
            if stop_flood.is_set() or n >= 20_000:
                return
            raw = json.dumps({"sobject": "Account", "ids": [ACCOUNTS[n % len(ACCOUNTS)]],
                              "event_id": f"s{sender}-{n}"}).encode()
            sig = hmac.new(HMAC_SECRET.encode(), raw, hashlib.sha256).hexdigest()
            answer = session.post(f"http://127.0.0.1:{port}/events/salesforce/sf/json",
                                  data=raw, headers={"X-Signature": sig,
                                                     "Content-Type": "application/json"},
                                  timeout=60)
            answers.append(answer.status_code)

    senders = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(4)]
    daemon.start()
    try:
        assert ready.wait(60)

        def synced() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(select(func.count()).select_from(sync_records)
                                         .where(sync_records.c.object == "account")).scalar())

        _until(synced, "the start-up sync")
        for t in senders:
            t.start()
        _until(lambda: len(answers) >= 500, "the flood under way")
        # Finance's quote, accepted in the CRM during the flood (no event is sent for it:
        # only the sync job's cycle can pull it). Written under the connection's lock, so no
        # job reads the in-memory CRM while it changes.
        with job_lock(engine, "crm:sf", wait=True) as got:
            assert got
            crm.put("quote", "QF", account_crm_id="A1", status="Accepted", revision=1,
                    number="Q-F", start_date=date(2026, 12, 1))
            crm.put("quote_line", "LF", quote_crm_id="QF", product_crm_id="P1",
                    quantity=Decimal(2), unit_price=Decimal(100),
                    start_date=date(2026, 12, 1))
        posted_before = len(answers)

        def dispatched() -> bool:
            with engine.connect() as conn:
                return list(conn.execute(select(provisioning_requests.c.state).join(
                    orders, orders.c.id == provisioning_requests.c.order_id).where(
                    orders.c.source_ref.like("sf:QF:%"))).scalars()) == ["dispatched"]

        _until(dispatched, "the quote accepted during the flood dispatched")
        still_flooding = all(t.is_alive() for t in senders)
        posted_meanwhile = len(answers) - posted_before
    finally:
        stop_flood.set()
        for t in senders:
            t.join(120)
        worker.stop.set()
        daemon.join(60)
    assert still_flooding and posted_meanwhile > 0      # it was dispatched during the flood
    assert set(answers) == {200}                        # no event refused or lost meanwhile
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(event_inbox)).scalar()
    assert stored == len(answers)
