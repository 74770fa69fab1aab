"""The drift sweep (issue 17, item 3): ids and stamps listed, compared with ``sync_records``,
and only what drifted read back through the targeted resync. On SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from fake_crm import FakeCRM
from sqlalchemy import Engine, func, select

from billing_core.adapters.tables import accounts, orders
from jobs.cli import exits
from sync.drift import last_sweep, sweep_connection
from sync.engine import Cycle, SyncOptions, run_cycle
from sync.tables import sync_records

PAGE = 2000


class DriftCRM(FakeCRM):
    """The in-memory CRM with a listing of ids and stamps (one call per 2,000 rows) and a
    batched read by id (one call per 200 ids), both counted."""

    def __init__(self) -> None:
        super().__init__("fake")
        self.listings: list[str] = []
        self.by_ids: list[tuple[str, list[str]]] = []

    def list_stamps(self, obj: str) -> Any:
        live = sorted((cid, rec["modstamp"]) for cid, (_, rec) in self.rows[obj].items()
                      if rec is not None)
        for start in range(0, max(len(live), 1), PAGE):
            self._call()
            self.listings.append(obj)
            yield from live[start:start + PAGE]

    def read_by_ids(self, obj: str, ids: list[str]) -> list[dict[str, Any]]:
        found = []
        for start in range(0, len(ids), 200):
            self._call()
            chunk = ids[start:start + 200]
            self.by_ids.append((obj, chunk))
            found += [dict(row[1]) for i in chunk
                      if (row := self.rows[obj].get(i)) is not None and row[1] is not None]
        return found

    # -- what the cursor misses --------------------------------------------------------------
    def put_late(self, obj: str, crm_id: str, *, late: timedelta = timedelta(hours=1),
                 **fields: Any) -> None:
        """A change committed ``late`` after its stamp: stamped before the cursor's position,
        so the incremental read (which starts after the cursor) never returns it."""
        self.put(obj, crm_id, **fields)
        _, record = self.rows[obj][crm_id]
        assert record is not None
        record["modstamp"] -= late
        self.rows[obj][crm_id] = (0, record)

    def changed_unseen(self, obj: str, crm_id: str, **fields: Any) -> None:
        """A change with a new stamp that the incremental read missed (an event lost, a
        read that failed over): the cursor is past it."""
        self.put(obj, crm_id, **fields)
        self.rows[obj][crm_id] = (0, self.rows[obj][crm_id][1])

    def purge(self, obj: str, crm_id: str) -> None:
        """Deleted with no trace in the change window (recycle bin emptied)."""
        del self.rows[obj][crm_id]


def _crm() -> DriftCRM:
    crm = DriftCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1")
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3))
    return crm


def _synced(engine: Engine) -> DriftCRM:
    crm = _crm()
    for _ in range(2):            # the second reads back what the first pushed
        assert run_cycle(engine, crm).outcome == "ok"
    return crm


def _sweep(engine: Engine, crm: DriftCRM) -> Any:
    return sweep_connection(Cycle(engine, crm, SyncOptions(trigger="sweep")))


def _repairs(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        found = last_sweep(conn, "fake")
    assert found is not None
    return found


def test_a_record_committed_an_hour_late_is_found_and_applied_by_one_sweep(engine):
    crm = _synced(engine)
    crm.put_late("account", "A3", name="Initech", currency="USD", country="US",
                 credit_limit=Decimal(5000), credit_hold=False)
    crm.put_late("quote", "Q2", account_crm_id="A3", status="Accepted", revision=1,
                 number="Q-2")
    crm.put_late("quote_line", "L2", quote_crm_id="Q2", product_crm_id="P1",
                 quantity=Decimal(2))
    assert run_cycle(engine, crm).outcome == "ok"          # the incremental pull misses them
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.id).where(accounts.c.ext_id == "A3")).first() \
            is None

    report = _sweep(engine, crm)

    assert report.outcome == "ok" and report.trigger == "sweep"
    assert exits.for_run(report) == exits.OK
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.name).where(accounts.c.ext_id == "A3")).scalar() \
            == "Initech"
        assert conn.execute(select(func.count()).select_from(orders)).scalar() == 2
    assert report.handed_off == 1
    found = _repairs(engine)
    assert found["run"] == report.run_id
    assert found["repairs"]["quote"] == {"missing": 1, "changed": 0, "deleted": 0}
    # the quote's account (and its lines) are read with it, as in every targeted resync, so
    # the comparisons of lines and accounts, which come after, may find them known already
    assert found["total"]["changed"] == found["total"]["deleted"] == 0
    with engine.connect() as conn:
        live = set(conn.execute(select(sync_records.c.crm_id).where(
            sync_records.c.deleted_at.is_(None))).scalars())
    assert {"A3", "Q2", "L2"} <= live
    # a second sweep finds nothing, and nothing is handed off twice
    again = _sweep(engine, crm)
    assert again.handed_off == 0 and _repairs(engine)["total"] == {
        "missing": 0, "changed": 0, "deleted": 0}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar() == 2


def test_a_record_deleted_outside_the_change_window_is_marked_deleted(engine):
    crm = _synced(engine)
    crm.purge("price", "P2-EUR")
    assert run_cycle(engine, crm).outcome == "ok"
    report = _sweep(engine, crm)
    assert report.outcome == "ok"
    assert report.objects["price"].deleted == 1
    with engine.connect() as conn:
        assert conn.execute(select(sync_records.c.deleted_at).where(
            sync_records.c.crm_id == "P2-EUR")).scalar() is not None
    assert _repairs(engine)["repairs"]["price"] == {"missing": 0, "changed": 0, "deleted": 1}


def test_a_changed_record_whose_change_was_missed_is_read_again(engine):
    crm = _synced(engine)
    crm.changed_unseen("account", "A1", name="Acme Renamed")
    assert run_cycle(engine, crm).outcome == "ok"
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.name).where(accounts.c.ext_id == "A1")).scalar() \
            == "Acme"
    crm.by_ids.clear()
    report = _sweep(engine, crm)
    assert report.outcome == "ok"
    assert crm.by_ids == [("account", ["A1"])]
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.name).where(accounts.c.ext_id == "A1")).scalar() \
            == "Acme Renamed"
    assert _repairs(engine)["repairs"]["account"] == {"missing": 0, "changed": 1, "deleted": 0}


def test_an_unchanged_ledger_costs_one_listing_per_object_and_no_read(engine):
    crm = _synced(engine)
    calls, writes = crm.calls, len(crm.writes)
    crm.listings.clear()
    report = _sweep(engine, crm)
    assert report.outcome == "ok" and exits.for_run(report) == exits.OK
    assert crm.listings == ["product", "price", "quote", "quote_line", "account"]
    assert crm.by_ids == [] and crm.calls - calls == 5 and len(crm.writes) == writes
    assert _repairs(engine)["total"] == {"missing": 0, "changed": 0, "deleted": 0}


def test_a_stamp_moved_without_a_change_billing_maps_is_read_once(engine):
    """Our own push (or a field billing does not map) moves the CRM's stamp: the record is
    read once, found unchanged, and its stamp kept, so the next sweep reads nothing."""
    crm = _synced(engine)
    crm.changed_unseen("account", "A2")                 # same fields, new stamp
    _sweep(engine, crm)
    assert crm.by_ids == [("account", ["A2"])]
    crm.by_ids.clear()
    assert _sweep(engine, crm).outcome == "ok"
    assert crm.by_ids == []


def test_a_budget_stop_mid_sweep_resumes_with_the_objects_left(engine):
    crm = _synced(engine)
    crm.put_late("account", "A3", name="Initech", currency="USD", country="US",
                 credit_limit=Decimal(5000), credit_hold=False)
    crm.budget_after = crm.calls + 2                    # products and prices listed, then no more
    crm.listings.clear()
    stopped = _sweep(engine, crm)
    assert stopped.outcome == "stopped: API budget"
    assert exits.for_run(stopped) == exits.ATTENTION
    assert crm.listings == ["product", "price"]
    assert _repairs(engine)["pending"] == ["quote", "quote_line", "account"]

    crm.budget_after = None
    crm.listings.clear()
    resumed = _sweep(engine, crm)
    assert resumed.outcome == "ok"
    assert crm.listings == ["quote", "quote_line", "account"]
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.id).where(accounts.c.ext_id == "A3")).first() \
            is not None
    assert _repairs(engine)["pending"] == []
    crm.listings.clear()
    _sweep(engine, crm)                                  # complete: the next starts over
    assert crm.listings == ["product", "price", "quote", "quote_line", "account"]


# -- the daemon's job ---------------------------------------------------------------------------
SF = ('[connections.fake]\ncrm = "salesforce"\nurl = "https://x.example"\n'
      '[connections.fake.credentials]\nclient_id = "id"\nclient_secret = "env:NOPE"\n')


def _worker(engine: Engine, tmp_path: Any, sync: str, crm: DriftCRM | None = None) -> Any:
    from config.settings import load_settings
    from jobs.worker import Worker

    cfg = tmp_path / "c.toml"
    cfg.write_text(SF + "[sync]\n" + sync)
    return Worker(engine, load_settings(cfg), connector_factory=lambda s: crm or DriftCRM())


def test_the_sweep_job_runs_daily_at_its_time_or_every_n_hours_or_not_at_all(sqlite_engine,
                                                                               tmp_path):
    from jobs.scheduler import build_scheduler, job_ids

    daily = _worker(sqlite_engine, tmp_path, 'drift_sweep_time = "04:15"\n')
    job = build_scheduler(daily).get_job("drift-sweep")
    assert str(job.trigger) == "cron[hour='4', minute='15']"
    every = _worker(sqlite_engine, tmp_path, "drift_sweep_interval_hours = 6\n")
    assert build_scheduler(every).get_job("drift-sweep").trigger.interval == timedelta(hours=6)
    off = _worker(sqlite_engine, tmp_path, "drift_sweep = false\n")
    assert "drift-sweep" not in job_ids(build_scheduler(off))
    for worker in (daily, every, off):
        worker.close()


def test_the_sweep_job_skips_a_connection_another_worker_holds(engine, tmp_path):
    from jobs.sweep import sweep
    from sync.locks import job_lock

    crm = _synced(engine)
    crm.put_late("account", "A3", name="Initech", currency="USD", country="US",
                 credit_limit=Decimal(5000), credit_hold=False)
    worker = _worker(engine, tmp_path, "", crm)
    try:
        with job_lock(engine, "crm:fake") as got:
            assert got
            calls = crm.calls
            assert sweep(worker) == [] and crm.calls == calls
        [report] = sweep(worker)
        assert report.outcome == "ok" and report.trigger == "sweep"
        assert _repairs(engine)["repairs"]["account"]["missing"] == 1
    finally:
        worker.close()


def test_status_and_metrics_show_the_last_sweeps_repairs(engine):
    from jobs.api.metrics import LedgerCollector
    from sync.status import overview

    crm = _synced(engine)
    crm.changed_unseen("account", "A1", name="Acme Renamed")
    crm.purge("price", "P2-EUR")
    report = _sweep(engine, crm)
    data = overview(engine, interval_minutes=5)
    shown = data["last_sweep"]["fake"]
    assert shown.startswith(f"run {report.run_id} ok ")
    assert shown.endswith(": missing 0, changed 1, deleted 1")
    assert data["last_sweep_repairs"] == {"fake": {"account": {"changed": 1},
                                                   "price": {"deleted": 1}}}
    family = next(f for f in LedgerCollector(engine).collect()
                  if f.name == "ledgerbridge_sweep_repairs")
    values = {(s.labels["object"], s.labels["kind"]): s.value for s in family.samples
              if s.labels["connection"] == "fake"}
    assert values[("account", "changed")] == 1 and values[("price", "deleted")] == 1
    assert values[("quote", "missing")] == 0


def test_a_repaired_record_refused_is_quarantined_once_not_read_at_every_sweep(engine):
    crm = _synced(engine)
    crm.put_late("account", "A3", name="Initech", currency="USD", country="US",
                 credit_limit=Decimal(-5), credit_hold=False)      # a negative limit: refused
    report = _sweep(engine, crm)
    assert report.outcome == "partial" and report.objects["account"].quarantined == 1
    assert exits.for_run(report) == exits.ATTENTION
    crm.by_ids.clear()
    assert _sweep(engine, crm).outcome == "ok"
    assert crm.by_ids == []                    # the quarantine has it: not read again
    crm.put("account", "A3", credit_limit=Decimal(5000))         # fixed in the CRM
    crm.rows["account"]["A3"] = (0, crm.rows["account"]["A3"][1])  # and the change missed
    assert _sweep(engine, crm).outcome == "ok"
    assert crm.by_ids == [("account", ["A3"])]
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.name).where(accounts.c.ext_id == "A3")).scalar() \
            == "Initech"


def test_a_record_listed_twice_is_compared_once(engine):
    crm = _synced(engine)
    crm.put_late("account", "A3", name="Initech", currency="USD", country="US",
                 credit_limit=Decimal(5000), credit_hold=False)
    listed = crm.list_stamps

    def twice(obj: str) -> Any:
        rows = list(listed(obj))
        return iter(rows + rows)

    crm.list_stamps = twice                              # type: ignore[method-assign]
    crm.by_ids.clear()
    assert _sweep(engine, crm).outcome == "ok"
    assert crm.by_ids == [("account", ["A3"])]
    assert _repairs(engine)["repairs"]["account"] == {"missing": 1, "changed": 0, "deleted": 0}


def test_an_update_committed_late_with_a_stamp_older_than_billings_is_read_again(engine):
    """A change whose stamp is older than the version billing has (the sandbox's
    ``commit_late`` an hour back): a stamp that differs, not only a newer one, is drift."""
    crm = _synced(engine)
    crm.put_late("account", "A2", name="Globex Late")
    crm.by_ids.clear()
    assert _sweep(engine, crm).outcome == "ok"
    assert crm.by_ids == [("account", ["A2"])]
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.name).where(accounts.c.ext_id == "A2")).scalar() \
            == "Globex Late"
    crm.by_ids.clear()
    _sweep(engine, crm)
    assert crm.by_ids == []                  # its stamp is billing's now: not read again
