"""Several workers, one ledger (issue 18): one connection is synced by one worker at a time,
different connections by different workers at once, and a worker that finds a connection
held skips it instead of waiting to read again what the other worker just read.

The connection locks are ``sync.locks.job_lock`` (PostgreSQL advisory locks on connections of
their own; a lock file on SQLite). The workers here are threads with connections of their own
from one engine, against the in-process sandbox CRM.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from billing_core.adapters.db import make_engine
from config.settings import load_settings
from connectors.registry import build_connector
from jobs.cli.configs import sandbox_config
from jobs.worker import Worker
from sync.locks import is_held, job_lock

sandbox_server = pytest.importorskip("connectors.sandbox.server")
WAIT = 60.0


@pytest.mark.postgres
def test_one_connection_on_one_worker_and_two_connections_at_once(pg_engine: Engine) -> None:
    """Thread A holds ``crm:sf``; thread B, on its own database connection, is refused
    ``crm:sf`` (without waiting) and takes ``crm:d365`` meanwhile; once A lets go, B gets it."""
    held, let_go, done = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with job_lock(pg_engine, "crm:sf") as got:
            assert got
            held.set()
            let_go.wait(WAIT)
        done.set()

    thread = threading.Thread(target=a)
    thread.start()
    try:
        assert held.wait(WAIT)
        assert is_held(pg_engine, "crm:sf")
        with job_lock(pg_engine, "crm:sf") as got_sf, job_lock(pg_engine, "crm:d365") as got_dv:
            assert (got_sf, got_dv) == (False, True)
    finally:
        let_go.set()
        thread.join(WAIT)
    assert done.is_set() and not is_held(pg_engine, "crm:sf")
    with job_lock(pg_engine, "crm:sf", wait=True, timeout=WAIT) as got:
        assert got


@pytest.mark.postgres
def test_the_same_lock_name_in_two_schemas_is_two_locks(pg_engine: Engine) -> None:
    """Advisory locks belong to the whole database: the key includes the schema, so another
    ledger (or test run) in another schema of the database never holds this one's lock."""
    other = make_engine(os.environ.get("LEDGERBRIDGE_TEST_PG_URL",
                                       "postgresql://postgres@127.0.0.1:5432/test"),
                        connect_args={"options": "-csearch_path=public"})
    try:
        with job_lock(pg_engine, "crm:sf") as mine, job_lock(other, "crm:sf") as theirs:
            assert (mine, theirs) == (True, True)
        with job_lock(pg_engine, "crm:sf") as mine:
            with job_lock(pg_engine, "crm:sf") as again:
                assert (mine, again) == (True, False)
    finally:
        other.dispose()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with sandbox_server.Sandbox(accounts=200, sides=("salesforce",)) as sbx:
        yield sbx


def _worker(sbx: Any, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            name: str) -> Worker:
    text, env = sandbox_config(sbx, str(engine.url), connections=("sf",))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(text, encoding="utf-8")
    return Worker(engine, load_settings(cfg),
                  connector_factory=lambda s: build_connector(s, sleep=lambda _s: None))


def test_a_second_worker_skips_the_connection_and_then_reads_nothing_again(
        sandbox: Any, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A syncs ``sf`` (paused after its first page, holding the lock); worker B's
    scheduled sync of ``sf`` is skipped at once (no wait, no CRM call). After A's run (pull,
    hand-off, push of every account, read-back of its own writes), B's next run reads no
    record: the cursors A saved moved past everything, its own writes included."""
    sandbox.reset()
    first = _worker(sandbox, engine, tmp_path, monkeypatch, "a")
    second = _worker(sandbox, engine, tmp_path, monkeypatch, "b")
    paused, resume = threading.Event(), threading.Event()
    reports: list[Any] = []

    def progress(obj: str, n: int) -> None:
        if not paused.is_set():
            paused.set()
            resume.wait(WAIT)

    thread = threading.Thread(target=lambda: reports.append(first.sync_connection(
        "sf", first.options("schedule"), progress=progress)))
    thread.start()
    try:
        assert paused.wait(WAIT)
        calls = sandbox.counters.total("salesforce")
        assert second.sync_connection("sf") is None          # skipped, not waiting
        assert sandbox.counters.total("salesforce") == calls  # and asked the CRM nothing
    finally:
        resume.set()
        thread.join(WAIT)
    try:
        assert reports and reports[0] is not None and reports[0].outcome == "ok"
        assert reports[0].stats("account").read >= 200 and reports[0].stats("account").pushed
        again = second.sync_connection("sf")
        assert again is not None and again.outcome == "ok"
        assert {o: s.read for o, s in again.objects.items() if s.read} == {}
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_two_connections_pricing_one_product_at_once_both_apply(pg_engine: Engine) -> None:
    """Two connections whose products are one catalog product (same SKU) sync their prices at
    the same time on two workers: the second page waits for the first (a lock per product)
    and then updates the price the first wrote; before, it inserted the same (product,
    currency, date) and the record was quarantined as a duplicate (seen in
    bench/scale_sync.py with 3 workers)."""
    from fake_crm import FakeCRM
    from sqlalchemy import func, select, text

    from billing_core.service import ledger_uow
    from sync.engine import SyncOptions, run_cycle
    from sync.reconcile import apply_page
    from sync.tables import quarantine

    crms = [FakeCRM("sfa"), FakeCRM("sfb")]
    for crm in crms:
        crm.seed_basic()
        assert run_cycle(pg_engine, crm, SyncOptions(objects=("product",), push=False)
                         ).outcome == "ok"
    pages = [next(iter(crm.read_changes("price", None))) for crm in crms]
    results: list[Any] = []

    def second() -> None:
        with ledger_uow(pg_engine) as uow:
            results.append(apply_page(uow, "sfb", "price", pages[1].records,
                                      pages[1].deletions))
            uow.commit()

    with ledger_uow(pg_engine) as uow:
        results.append(apply_page(uow, "sfa", "price", pages[0].records, pages[0].deletions))
        thread = threading.Thread(target=second)
        thread.start()
        with pg_engine.connect() as conn:           # until the second page waits for a lock
            for _ in range(600):
                if conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                                ).scalar_one():
                    break
                thread.join(0.1)
        uow.commit()
    thread.join(WAIT)
    assert [r.quarantined for r in results] == [0, 0]
    assert [r.read for r in results] == [4, 4]
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(quarantine)).scalar_one() == 0


@pytest.mark.postgres
def test_three_pushers_at_once_send_each_outbox_row_once(pg_engine: Engine) -> None:
    """The push claims its rows (``SKIP LOCKED``, a lease, ``claimed_by``): three pushers of
    one connection at once, with no job lock between them, send every row exactly once."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from sync.push import push
    from sync.states import OutboxState
    from sync.tables import outbox

    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    with pg_engine.begin() as conn:
        conn.execute(insert(outbox), [
            {"connection": "sf", "object": "account", "crm_id": f"001{i:04d}", "ledger_id": i,
             "payload": json.dumps({"open_balance": str(i)}), "hash": f"h{i}", "attempts": 0,
             "state": OutboxState.PENDING, "next_attempt_at": now, "updated_at": now}
            for i in range(90)])
    guard = threading.Lock()
    written: list[str] = []
    start = threading.Barrier(3)

    class Acks:
        name = "acks"

        def write(self, obj: str, updates: list[dict[str, Any]], redecide: object = None
                  ) -> list[object]:
            with guard:
                written.extend(str(u["crm_id"]) for u in updates)
            ok = type("Ok", (), {"ok": True, "code": None, "message": None})()
            return [ok] * len(updates)

    def pusher() -> None:
        start.wait(WAIT)
        push(pg_engine, Acks(), "sf", objects=("account",),  # type: ignore[arg-type]
             batch_size=5, clock=lambda: now)

    threads = [threading.Thread(target=pusher) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(written) == sorted(set(written)) and len(written) == 90
    with pg_engine.connect() as conn:
        assert {tuple(r) for r in conn.execute(select(outbox.c.state, outbox.c.claimed_by))} \
            == {(OutboxState.ACKED, None)}


@pytest.mark.postgres
def test_two_connections_adding_one_sku_at_once_share_the_product(pg_engine: Engine) -> None:
    """Two connections add the same SKUs at the same time on two workers: the second page
    waits for the first (a lock per SKU) and links to its product; before, its insert hit the
    SKU's unique index and the record was quarantined (then its prices and quote lines as
    'unknown product': bench/scale_sync.py with 3 workers)."""
    from fake_crm import FakeCRM
    from sqlalchemy import func, select, text

    from billing_core.adapters.tables import products
    from billing_core.service import ledger_uow
    from sync.reconcile import apply_page
    from sync.tables import quarantine

    crms = [FakeCRM("sfa"), FakeCRM("sfb")]
    for crm in crms:
        crm.seed_basic()
    pages = [next(iter(crm.read_changes("product", None))) for crm in crms]
    results: list[Any] = []

    def second() -> None:
        with ledger_uow(pg_engine) as uow:
            results.append(apply_page(uow, "sfb", "product", pages[1].records,
                                      pages[1].deletions))
            uow.commit()

    with ledger_uow(pg_engine) as uow:
        results.append(apply_page(uow, "sfa", "product", pages[0].records,
                                  pages[0].deletions))
        thread = threading.Thread(target=second)
        thread.start()
        with pg_engine.connect() as conn:           # until the second page waits for a lock
            for _ in range(600):
                if conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                                ).scalar_one():
                    break
                thread.join(0.1)
        uow.commit()
    thread.join(WAIT)
    assert [(r.read, r.quarantined) for r in results] == [(2, 0), (2, 0)]
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(quarantine)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(products)).scalar_one() == 2
