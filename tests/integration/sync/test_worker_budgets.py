"""The worker and the CRM's API budget: it reports each connection's budget to /metrics
(regression: the metric family stayed empty because the worker offered no budgets), and its
connectors never take usage past the configured share, even fresh ones (sandbox Salesforce)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine

from config.settings import load_settings
from connectors.registry import build_connector
from jobs.api.metrics import ApiMetrics
from jobs.cli.demo_crm import sandbox_config
from jobs.worker import Worker


def test_metrics_show_the_api_budget_of_each_connection_spoken_to(sqlite_engine, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n')
    crm = FakeCRM("sf")
    worker = Worker(sqlite_engine, load_settings(cfg), connector_factory=lambda s: crm)
    try:
        assert worker.budgets() == {}
        worker.connector("sf")
        crm.calls = 7
        text = ApiMetrics(sqlite_engine, worker).render().decode()
    finally:
        worker.close()
    assert 'ledgerbridge_crm_api_budget_calls{connection="sf"} 7.0' in text


# -- the budget guard knows the usage before the first call (issue 13, item 6) -----------------
# Regression: a fresh connector's meter knew nothing until the CRM answered, and the worker
# drops its connector after a budget stop, so each later run made one call more: with a daily
# limit of 11 and a share of 0.8 the usage reached 11/11 instead of stopping at 8.

sandbox_server = pytest.importorskip("connectors.sandbox.server")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with sandbox_server.Sandbox(accounts=30) as sbx:
        yield sbx


@pytest.fixture
def crm(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    sandbox.salesforce.admin("set_api_usage", {"used": 0, "limit": 11})
    return sandbox


def _worker(sbx: Any, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            clock: Callable[[], datetime] | None = None) -> Worker:
    text, env = sandbox_config(sbx, str(engine.url), connections=("sf",))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = tmp_path / "ledgerbridge.toml"
    cfg.write_text(text, encoding="utf-8")
    return Worker(engine, load_settings(cfg), clock=clock or (lambda: datetime.now(UTC)),
                  connector_factory=lambda s: build_connector(s, sleep=lambda _s: None))


def _used(sbx: Any) -> int:
    return int(sbx.salesforce.usage.used)


def test_usage_never_passes_the_share_across_fresh_connectors_and_processes(
        crm: Any, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _worker(crm, engine, tmp_path, monkeypatch)
    seen = []
    try:
        for _ in range(3):     # each budget stop drops the connector: a fresh one follows
            report = first.sync_connection("sf", wait=True)
            assert report is not None and report.outcome == "stopped: API budget"
            seen.append(_used(crm))
    finally:
        first.close()
    again = _worker(crm, engine, tmp_path, monkeypatch)   # a new process: only the database
    try:
        for _ in range(2):
            report = again.sync_connection("sf", wait=True)
            assert report is not None and report.outcome == "stopped: API budget"
            seen.append(_used(crm))
    finally:
        again.close()
    assert max(seen) <= 8                                  # int(11 × 0.8)
    assert seen[-3:] == [8, 8, 8]                          # stopped, asking nothing more


def test_a_figure_older_than_a_day_is_learnt_again(
        crm: Any, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(crm, engine, tmp_path, monkeypatch)
    try:
        for _ in range(3):
            worker.sync_connection("sf", wait=True)
    finally:
        worker.close()
    assert _used(crm) == 8
    crm.salesforce.admin("set_api_usage", {"used": 0, "limit": 11})   # the window moved on
    later = _worker(crm, engine, tmp_path, monkeypatch,
                    clock=lambda: datetime.now(UTC) + timedelta(hours=25))
    try:
        report = later.sync_connection("sf", wait=True)
    finally:
        later.close()
    assert report is not None and report.api_used is not None   # it spoke to the CRM again
    assert 0 < _used(crm) <= 8


# -- the daemon's bill run waits for a manual one instead of skipping its day ------------------
# Regression: the scheduled bill run skipped when any run held the lock, so a manual
# `bill-run --date <another date>` running at the scheduled time cost the day its invoices.

def test_the_daemons_bill_run_waits_for_a_run_holding_the_lock(sqlite_engine, tmp_path):
    import threading

    from sync.locks import job_lock

    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    worker = Worker(sqlite_engine, load_settings(cfg), connector_factory=lambda s: FakeCRM())
    holding, release = threading.Event(), threading.Event()

    def manual_run() -> None:
        with job_lock(sqlite_engine, "bill-run") as got:
            assert got
            holding.set()
            release.wait(30)

    other = threading.Thread(target=manual_run)
    other.start()
    try:
        assert holding.wait(30)
        assert worker.bill_run(lock_wait_seconds=0.3) is None       # gave up, said so
        threading.Timer(0.3, release.set).start()
        result = worker.bill_run(lock_wait_seconds=60)               # waited, then ran
        assert result is not None and result.run_id is not None
    finally:
        release.set()
        other.join(30)
        worker.close()
