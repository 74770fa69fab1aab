"""Issue 17's convergence case, end to end: the sandbox CRM sends its change events with 30 %
dropped, 30 % duplicated and 30 % reordered (``NotifyConfig`` fault injection) to the daemon's
receivers over real HTTP, one account is committed an hour late (its stamp an hour before
the cursor), one is deleted; the events job reads back what arrived, and ONE drift sweep
brings the ledger to what the CRM holds, with nothing applied twice. Both databases."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_world import (
    EVENTS_HMAC,
    EVENTS_HMAC_ENV,
    EVENTS_KEY,
    EVENTS_KEY_ENV,
    World,
    events_config,
    free_port,
)
from sqlalchemy import Engine, func, select

import connectors.sandbox.server as sandbox_server
from billing_core.adapters.tables import accounts
from connectors.sandbox.notify import NotifyConfig
from jobs.api.app import build_app, serve_in_thread
from jobs.sweep import sweep
from sync.drift import last_sweep
from sync.tables import sync_records, sync_run_objects, sync_runs

pytestmark = pytest.mark.e2e
KEY, HMAC_SECRET = EVENTS_KEY, EVENTS_HMAC
EVENTS = events_config()
RENAMED = range(1, 21)       # twenty accounts renamed in the CRM
LATE, GONE = 24, 25          # committed an hour late; deleted


@pytest.fixture
def world(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv(EVENTS_KEY_ENV, KEY)
    monkeypatch.setenv(EVENTS_HMAC_ENV, HMAC_SECRET)
    port = free_port()
    notify = NotifyConfig(url=f"http://127.0.0.1:{port}", dataverse_key=KEY,
                          hmac_secret=HMAC_SECRET, salesforce_form="soap",
                          drop=0.3, duplicate=0.3, reorder=0.3, fault_seed=17,
                          batch_size=1)        # one record per message: a draw per event
    with sandbox_server.Sandbox(accounts=30, quotes=4, seed=7, notify=notify,
                                sides=("salesforce",)) as sbx:
        from jobs.cli.demo_crm import sandbox_config

        written, _ = sandbox_config(sbx, str(engine.url))
        w = World(sbx, engine, tmp_path,
                  extra="" if "[connections.sf.events]" in written else EVENTS)
        server = serve_in_thread(build_app(engine, w.settings), "127.0.0.1", port)
        try:
            yield w
        finally:
            server.stop()
            w.worker.close()


def _settle_events(world: World) -> None:
    assert world.sbx.notifier.flush(60)
    world.worker.process_events(limit=10**6, wait=True)


def _upserted_since(engine: Engine, run_id: int, obj: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(sync_run_objects.c.upserted), 0))
                                .join(sync_runs, sync_runs.c.id == sync_run_objects.c.run_id)
                                .where(sync_runs.c.id > run_id, sync_runs.c.connection == "sf",
                                       sync_run_objects.c.object == obj)).scalar_one())


def _crm_names(world: World) -> dict[str, str]:
    sf = world.sbx.salesforce_client()
    return {r["Id"]: r["Name"] for r in sf.query_all("SELECT Id, Name FROM Account")["records"]}


def _ledger_names(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        live = set(conn.execute(select(sync_records.c.crm_id).where(
            sync_records.c.connection == "sf", sync_records.c.object == "account",
            sync_records.c.deleted_at.is_(None))).scalars())
        return {str(e): str(n) for e, n in conn.execute(
            select(accounts.c.ext_id, accounts.c.name)) if e in live}


def test_lossy_events_and_a_late_commit_converge_after_one_sweep(world: World) -> None:
    [first] = world.cycle("sf")
    assert first.outcome == "ok"
    _settle_events(world)          # what the cycle's own pushes sent
    with world.engine.connect() as conn:
        baseline = int(conn.execute(select(func.max(sync_runs.c.id))).scalar_one())

    for i in RENAMED:
        world.sf("update", object="Account", index=i, fields={"Name": f"Renamed {i}"})
    late = world.sf("commit_late", object="Account", index=LATE, seconds_before=3600,
                    fields={"Name": "Committed Late"})["id"]
    gone = world.sbx.salesforce.account_id(GONE)
    world.sf("delete", object="Account", index=GONE)
    _settle_events(world)
    sent = world.sbx.notifier.counters()["total"]
    assert sent["dropped"] and sent["duplicated"] and sent["reordered"], sent   # they did happen

    before = _ledger_names(world.engine)
    assert before != _crm_names(world)                         # lost events: not converged yet

    [report] = sweep(world.worker, "sf", wait=True)
    assert report.outcome == "ok" and report.trigger == "sweep"
    crm = _crm_names(world)
    assert _ledger_names(world.engine) == crm                  # converged
    assert crm[late] == "Committed Late" and gone not in crm
    with world.engine.connect() as conn:
        assert conn.execute(select(sync_records.c.deleted_at).where(
            sync_records.c.crm_id == gone)).scalar() is not None
        found = last_sweep(conn, "sf")
    assert found is not None and found["total"]["changed"] >= 1

    # nothing applied twice: each of the 21 changed accounts was written once, whether its
    # event arrived (once, twice or out of order) or the sweep found it
    assert _upserted_since(world.engine, baseline, "account") == len(RENAMED) + 1
    [again] = sweep(world.worker, "sf", wait=True)
    assert again.outcome == "ok"
    with world.engine.connect() as conn:
        second = last_sweep(conn, "sf")
    assert second is not None and second["total"]["missing"] == second["total"]["deleted"] == 0
    assert _upserted_since(world.engine, baseline, "account") == len(RENAMED) + 1


def test_a_dataverse_sweep_repairs_a_missed_change_and_a_delete(engine: Engine,
                                                               tmp_path: Path) -> None:
    """The same path on Dataverse (``$select=<key>,modifiedon`` listings, ``$filter`` reads by
    id): a change no sync read and a deleted account, repaired by one sweep over HTTPS."""
    with sandbox_server.Sandbox(accounts=30, quotes=4, seed=7, sides=("dataverse",)) as sbx:
        w = World(sbx, engine, tmp_path)
        try:
            [first] = w.cycle("d365")
            assert first.outcome == "ok"
            # the cycle's push moved every account's stamp: a first sweep reads them back once
            assert sweep(w.worker, "d365", wait=True)[0].outcome == "ok"
            time.sleep(1.1)      # modifiedon is whole seconds: a change in a later one
            changed = w.dv("update", table="accounts", index=7,
                           values={"name": "Changed Unseen"})["accountid"]
            gone = w.dv("delete_account", index=8)["deleted"]
            [report] = sweep(w.worker, "d365", wait=True)
            assert report.outcome == "ok"
            with engine.connect() as conn:
                assert conn.execute(select(accounts.c.name).where(
                    func.lower(accounts.c.ext_id) == str(changed).lower())).scalar() \
                    == "Changed Unseen"
                assert conn.execute(select(sync_records.c.deleted_at).where(
                    func.lower(sync_records.c.crm_id) == str(gone).lower())).scalar() is not None
                found = last_sweep(conn, "d365")
            assert found is not None
            assert found["repairs"]["account"] == {"missing": 0, "changed": 1, "deleted": 1}
        finally:
            w.worker.close()
