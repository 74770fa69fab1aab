"""End to end: ``ledgerbridge run`` with the API (the real daemon, scheduler and worker) beside
the sandbox CRM over HTTPS, driven through the HTTP API over a real socket.

The seed's story through the API: an account with a limit of 1,000 accepts a 1,200 quote in
Salesforce; a resync triggered with ``POST /sync:run`` hands it off and puts the account on a
``credit_limit`` hold with provisioning waiting. A payment posted through the API lifts the
hold in the same transaction and releases provisioning; the next push shows it in the CRM.
SQLite only (the daemon's own PostgreSQL path is covered by the sync e2e tests).
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import eventually

pytestmark = pytest.mark.e2e
sandbox_server = pytest.importorskip("connectors.sandbox.server")

WAIT = 90.0   # seconds a background step may take on a loaded machine (a bound, not a target)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _eventually(what: str, probe: Callable[[], Any]) -> Any:
    return eventually(what, probe, wait=WAIT, every=0.2)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with sandbox_server.Sandbox(accounts=6, quotes=3, seed=7) as sbx:
        yield sbx


def test_payment_through_the_api_lifts_the_hold_and_the_crm_shows_it(
        sandbox: Any, sqlite_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from billing_core.service import ledger_uow
    from config.settings import load_settings
    from connectors.registry import build_connector
    from jobs.api.auth import create_token
    from jobs.cli.demo_crm import sandbox_config
    from jobs.daemon import run_daemon
    from jobs.worker import Worker

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    text, env = sandbox_config(sandbox, str(sqlite_engine.url), connections=("sf",),
                               extra="[sync]\npush_interval_seconds = 1\n"
                                     "dispatch_interval_seconds = 1\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "ledgerbridge.toml").write_text(text, encoding="utf-8")
    settings = load_settings(tmp_path / "ledgerbridge.toml")
    worker = Worker(sqlite_engine, settings,
                    connector_factory=lambda s: build_connector(s, sleep=lambda _s: None))
    with ledger_uow(sqlite_engine) as uow:
        token = create_token(uow, "e2e", ["admin"])[1]
        uow.commit()

    sf = sandbox.salesforce
    crm_id = sf.admin("update", {"object": "Account", "index": 0, "fields": {
        "Credit_Limit__c": 1000, "Credit_Hold__c": False, "CurrencyIsoCode": "USD"}})["id"]
    start = worker.clock().date().replace(day=1).isoformat()
    sf.admin("create_quote", {"account_id": crm_id, "status": "Accepted", "start_date": start,
                              "lines": [{"product_index": 0, "quantity": 100,
                                         "unit_price": 12}]})

    port = _free_port()
    ready = threading.Event()
    daemon = threading.Thread(target=run_daemon, name="e2e-daemon", daemon=True, kwargs={
        "engine": sqlite_engine, "settings": settings, "api": True, "host": "127.0.0.1",
        "port": port, "worker": worker, "on_ready": lambda _w: ready.set()})
    daemon.start()
    try:
        assert ready.wait(WAIT), "the daemon did not start"
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}",
                           headers={"Authorization": f"Bearer {token}"}, timeout=WAIT)
        assert api.get("/healthz").json()["status"] == "ok"
        assert _eventually("readiness", lambda: api.get("/readyz").status_code == 200)

        run = api.post("/sync:run", json={"connection": "sf"}, headers={
            "Idempotency-Key": "resync-1"})
        assert run.status_code == 202, run.text
        run_id = run.json()["run_id"]

        def run_done() -> dict[str, Any] | None:
            run = api.get(f"/sync/runs/{run_id}").json()
            return run if run["outcome"] != "running" else None

        finished = _eventually("the resync", run_done)
        assert finished["outcome"].startswith(("ok", "partial")), finished

        hold = api.get(f"/accounts/{crm_id}/hold").json()
        assert [r["reason"] for r in hold["reasons"]] == ["credit_limit"], hold
        account_id = hold["account_id"]
        waiting = api.get("/provisioning", params={"account_id": account_id}).json()["items"]
        assert waiting and {p["state"] for p in waiting} == {"awaiting_hold_release"}

        def crm_record() -> dict[str, Any]:
            return dict(sandbox.salesforce_client().query(
                "SELECT Id, Billing_Hold__c, Billing_Hold_Reasons__c FROM Account "
                f"WHERE Id = '{crm_id}'")["records"][0])

        _eventually("the hold in the CRM", lambda: crm_record()["Billing_Hold__c"] is True)

        paid = api.post("/billing/payments", json={
            "account_id": account_id, "amount": "500.00", "currency": "USD",
            "reference": "e2e-pay-1", "auto_apply": True}, headers={"Idempotency-Key": "pay-1"})
        assert paid.status_code == 201, paid.text
        hold = api.get(f"/accounts/{crm_id}/hold").json()
        assert hold["on_hold"] is False, hold
        released = api.get("/provisioning", params={"account_id": account_id}).json()["items"]
        assert all(p["state"] != "awaiting_hold_release" for p in released), released

        record = _eventually("the push of the lifted hold", lambda: (
            (rec := crm_record())["Billing_Hold__c"] is False and rec))
        assert not record["Billing_Hold_Reasons__c"]
        metrics = api.get("/metrics").text
        assert 'ledgerbridge_sync_runs_total{connection="sf"' in metrics
    finally:
        worker.stop.set()
        daemon.join(WAIT)
    assert not daemon.is_alive()
