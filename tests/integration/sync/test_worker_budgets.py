"""The worker reports each connection's API budget to /metrics (regression: the metric family
stayed empty because the worker offered no budgets)."""
from __future__ import annotations

from fake_crm import FakeCRM

from config.settings import load_settings
from jobs.api.metrics import ApiMetrics
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
