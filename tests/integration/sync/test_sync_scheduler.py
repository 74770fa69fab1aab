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
        assert job_ids(scheduler) == ["bill-run", "holds", "housekeeping", "outbox-push",
                                      "provisioning-dispatch", "sync:sf"]
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
