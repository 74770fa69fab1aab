"""The schedule of `ledgerbridge run`: explicit ids and the defaults every job runs with."""
from fake_crm import FakeCRM

from config.settings import load_settings
from jobs.scheduler import build_scheduler, job_ids
from jobs.worker import Worker


def test_jobs_have_explicit_ids_and_safe_defaults(sqlite_engine, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n[sync]\ninterval_minutes = 7\n')
    worker = Worker(sqlite_engine, load_settings(cfg), connector_factory=lambda s: FakeCRM("sf"))
    try:
        scheduler = build_scheduler(worker)
        assert job_ids(scheduler) == ["bill-run", "drift-sweep", "holds", "housekeeping",
                                      "outbox-push", "provisioning-dispatch", "sync:sf"]
        assert scheduler._job_defaults == {"coalesce": True, "max_instances": 1,
                                           "misfire_grace_time": 300}
        assert scheduler.get_job("sync:sf").trigger.interval.total_seconds() == 7 * 60
    finally:
        worker.close()


def test_worker_skips_a_connection_another_worker_holds(sqlite_engine, tmp_path):
    from sync.locks import job_lock
    cfg = tmp_path / "c.toml"
    cfg.write_text('[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n')
    crm = FakeCRM("sf")
    crm.seed_basic()
    worker = Worker(sqlite_engine, load_settings(cfg), connector_factory=lambda s: crm)
    try:
        with job_lock(sqlite_engine, "crm:sf") as got:
            assert got
            assert worker.sync_connection("sf") is None
            assert crm.calls == 0
        assert worker.sync_connection("sf").outcome == "ok"
    finally:
        worker.close()


def test_the_sync_job_dispatches_what_its_cycle_ordered(sqlite_engine, tmp_path):
    """The scheduled sync job runs the cycle and then the dispatch: an accepted quote's
    provisioning request is sent in the same job, not an interval later."""
    from datetime import date
    from decimal import Decimal

    from sqlalchemy import select

    from billing_core.adapters.tables import provisioning_requests
    cfg = tmp_path / "c.toml"
    cfg.write_text('[provisioner]\nkind = "log"\n'
                   '[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n')
    crm = FakeCRM("sf")
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1",
            start_date=date(2026, 12, 1))
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3),
            unit_price=Decimal(100), start_date=date(2026, 12, 1))
    worker = Worker(sqlite_engine, load_settings(cfg), connector_factory=lambda s: crm)
    try:
        scheduler = build_scheduler(worker)
        scheduler.get_job("sync:sf").func()
    finally:
        worker.close()
    with sqlite_engine.connect() as conn:
        states = list(conn.execute(select(provisioning_requests.c.state)).scalars())
    assert states == ["dispatched"]


def test_a_job_that_raises_is_counted_in_metrics_and_status_and_runs_again(engine, tmp_path):
    """The hold re-evaluation raises (here: a bug in its body) on one run and not on the
    next: the job's guard logs it and the daemon goes on; ``/metrics`` counts the failure
    (``ledgerbridge_job_failures_total{job="holds"}``, ``ledgerbridge_job_failing`` 1 then 0)
    and the API's ``/status`` names the job and its error. It was in the log only."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from billing_core.service import ledger_uow
    from jobs.api.app import build_app
    from jobs.api.auth import create_token

    cfg = tmp_path / "c.toml"
    cfg.write_text('[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n')
    worker = Worker(engine, load_settings(cfg), connector_factory=lambda s: FakeCRM("sf"))
    real, calls = worker.reevaluate_holds, []

    def holds():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("hold re-evaluation broke")
        return real()
    worker.reevaluate_holds = holds
    with ledger_uow(engine) as uow:
        token = create_token(uow, "ops", ["admin"])[1]
        uow.commit()
    try:
        scheduler = build_scheduler(worker)
        client = TestClient(build_app(engine, worker.settings, sync_runner=worker,
                                      scheduler_state=scheduler))
        auth = {"Authorization": f"Bearer {token}"}

        def metric(name):
            for family in text_string_to_metric_families(
                    client.get("/metrics", headers=auth).text):
                for sample in family.samples:
                    if sample.name == name and sample.labels.get("job") == "holds":
                        return sample.value
            return None

        job = scheduler.get_job("holds").func
        job()                                       # raises inside: logged, not raised
        assert metric("ledgerbridge_job_failures_total") == 1
        assert metric("ledgerbridge_job_failing") == 1
        status = client.get("/status", headers=auth).json()
        assert "hold re-evaluation broke" in status["scheduler"]["failures"]["holds"][
            "last_error"]
        job()                                       # the next run goes through
        assert len(calls) == 2
        assert metric("ledgerbridge_job_failures_total") == 1
        assert metric("ledgerbridge_job_failing") == 0
    finally:
        worker.close()
