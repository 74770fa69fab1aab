"""The real worker against the sandbox CRM: assertions on both sides (database and CRM)."""
from __future__ import annotations

import threading
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from billing_core.adapters.tables import accounts, orders, provisioning_requests
from sync.tables import handoffs, outbox, quarantine

pytestmark = pytest.mark.e2e
OBJECTS = 5


def _count(engine: Any, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


def _sf_account(world: Any, crm_id: str) -> dict[str, Any]:
    client = world.sbx.salesforce_client()
    return dict(client.query(
        "SELECT Id, Billing_Hold__c, Billing_Hold_Reasons__c, Open_Balance__c, "
        f"Last_Invoice_Number__c FROM Account WHERE Id = '{crm_id}'")["records"][0])


def test_seed_story_hold_waiting_lifted_provisioned_once(world: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's story, and its step 5: revision 2 of the first account's quote in the CRM
    (100 -> 103 seats at 12.00 USD from the 20th of this period, bill cycle day 1) bills, on
    the next bill cycle day, the 3 seats for the 20th to the period's end and the next month at
    103 seats. In a 31-day month: 3 x 12.00 x 12/31 = 13.935... -> 13.94, and
    103 x 12.00 = 1236.00; nothing else (no second 100 or 103 seats)."""
    from jobs.cli.demo_crm import run_story
    facts = run_story(world.sbx, tmp_path / "demo")
    assert facts["a_reasons"] == [] and facts["c_reasons"] == []
    assert facts["a_requests"] == {"dispatched": 1}
    assert facts["c_requests"] == {"dispatched": 1}
    assert facts["invoices"] >= 1
    crm = _sf_account(world, facts["a"])
    assert crm["Billing_Hold__c"] is False
    assert crm["Last_Invoice_Number__c"].startswith("INV-")

    amended = facts["amendment"]
    assert amended["problems"] == []
    # step 7: 300 events through POST /usage/events, by region 150 / 300 / 450 units; the
    # first 100 of a region at 0.05, the rest at 0.02: 6.00, 9.00, 12.00 (one line each)
    assert facts["usage"]["problems"] == [] and facts["usage"]["accepted"] == 300
    assert facts["usage"]["usage_lines"] == [600, 900, 1200]
    when, end = amended["amended_from"], amended["next_bill_date"]
    start = when - timedelta(days=19)
    assert start.day == 1 and end.day == 1 and start < when < end     # mid-period
    days, in_period = (end - when).days, (end - start).days
    catch_up = (Decimal(3 * 12 * days) / in_period).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert amended["figure"] == f"3 seats x 12.00 x {days}/{in_period} = {catch_up} USD"
    assert sorted(amended["next_lines"]) == [("proration", int(catch_up * 100)),
                                             ("recurring", 103 * 1200)]
    out = capsys.readouterr().out
    assert f"amendment order {amended['amendment_order']} (active), amending ORD-" in out
    assert f"Cloud Workspace Standard 100 -> 103 from {when}" in out
    assert f"quantity 100 -> 103 from {when} to {end - timedelta(days=1)}" in out
    assert f"{when} to {end - timedelta(days=1)}: {amended['figure']}\n" in out
    assert "+ the next period at the new quantity: 103 seats x 12.00 = 1236.00 USD" in out
    assert "the invoice matches the worked figures to the cent" in out
    assert "DOES NOT HOLD" not in out


def test_the_demo_says_loudly_when_the_amendment_figure_does_not_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A next invoice that billed the added seats twice (a second proration line, as the
    project did when amendments stacked) is not told as a success: the story says so on the
    spot and ``ledgerbridge demo`` exits 1."""
    from billing_core.service import bill_run
    from jobs.cli import demo_crm, exits, main

    def twice(*args: Any, **kw: Any) -> Any:
        result = bill_run.run_bill_run(*args, **kw)
        for inv in result.invoices:
            inv.line_items += [ln for ln in inv.line_items if ln.kind == "proration"]
        return result
    monkeypatch.setattr(demo_crm, "run_bill_run", twice)
    res = CliRunner().invoke(main, ["demo", "--accounts", "6"])
    assert res.exit_code == exits.ATTENTION, res.output
    assert "!! THE STORY DOES NOT HOLD: the next invoice's lines" in res.stdout
    assert "attention: the story did not hold (1)" in res.stderr
    assert "matches the worked figures" not in res.stdout


def test_first_cycle_both_crms_then_a_quiet_cycle_costs_one_query_per_object(world: Any) -> None:
    reports = world.cycle()
    assert [r.outcome for r in reports] == ["ok", "ok"]
    assert _count(world.engine, accounts) == 60
    handed = sum(r.handed_off for r in reports)
    assert handed == _count(world.engine, orders) > 0
    world.cycle()                        # reads back our own pushes (unchanged, no writes)
    world.sbx.counters.reset()
    world.cycle()
    sf_reads = world.calls("salesforce", "queryAll") + world.calls("salesforce", "query")
    assert sf_reads == OBJECTS
    dv_reads = sum(world.calls("dataverse", t, "GET")
                   for t in ("accounts", "products", "quotes", "quotedetails"))
    assert dv_reads == OBJECTS             # products serve two objects (product, price)
    assert world.calls("salesforce", "composite/sobjects") == 0
    assert world.calls("dataverse", "$batch") == 0


def test_pushed_fields_arrive_in_both_crms(world: Any) -> None:
    world.cycle()
    a0 = world.sf("update", object="Account", index=0, fields={"Credit_Limit__c": 1})["id"]
    world.cycle("sf")
    crm = _sf_account(world, a0)
    with world.engine.connect() as conn:
        has_orders = conn.execute(select(func.count()).select_from(orders).join(
            accounts, accounts.c.id == orders.c.account_id).where(
            accounts.c.ext_id == a0)).scalar()
    assert crm["Billing_Hold__c"] is bool(has_orders)
    row = world.dv("get", table="accounts", index=0)
    assert row["new_billinghold"] is not None and row["new_openbalance"] is not None


def test_deletes_and_quarantine(world: Any) -> None:
    world.cycle("sf")
    gone = world.sf("delete_account", index=2)
    bad = world.sf("update", object="Account", index=3, fields={"Credit_Limit__c": -5})["id"]
    world.cycle("sf")
    with world.engine.connect() as conn:
        status = dict(conn.execute(select(accounts.c.ext_id, accounts.c.status)).all())
        q = conn.execute(select(quarantine).where(quarantine.c.crm_id == bad)).mappings().one()
    deleted_id = gone.get("id") or next(iter(gone.values()))
    assert status[deleted_id] == "crm_deleted"
    assert (q["field"], q["reason"], q["status"]) == ("credit_limit", "must not be negative",
                                                     "open")
    world.sf("update", object="Account", index=3, fields={"Credit_Limit__c": 500})
    world.cycle("sf")
    with world.engine.connect() as conn:
        assert conn.execute(select(quarantine.c.status).where(
            quarantine.c.crm_id == bad)).scalar() == "resolved"
        assert conn.execute(select(accounts.c.credit_limit_minor).where(
            accounts.c.ext_id == bad)).scalar() == 50000


def test_ties_and_late_rows_are_not_lost(world: Any) -> None:
    world.cycle("sf")
    ids = [world.sf("update", object="Account", index=i, fields={})["id"] for i in (4, 5, 6)]
    world.sf("stamp_together", object="Account", ids=ids, fields={"Credit_Limit__c": 777})
    world.sf("commit_late", object="Account", index=7, seconds_before=30,
             fields={"Credit_Limit__c": 778})
    world.cycle("sf")
    with world.engine.connect() as conn:
        limits = dict(conn.execute(select(accounts.c.ext_id, accounts.c.credit_limit_minor))
                      .all())
    assert [limits[i] for i in ids] == [77700] * 3
    late = world.sf("update", object="Account", index=7, fields={})["id"]
    assert limits[late] == 77800


def test_faults_429_503_and_expired_session_converge(world: Any) -> None:
    world.sbx.faults.add("salesforce", "query*", "429", count=3, retry_after=2)
    world.sbx.faults.add("dataverse", "*", "503", count=2)
    world.sf("expire_tokens")
    reports = world.cycle()
    assert [r.outcome for r in reports] == ["ok", "ok"]
    assert _count(world.engine, accounts) == 60
    world.dv("expire_tokens")
    world.sf("expire_tokens")
    assert [r.outcome for r in world.cycle()] == ["ok", "ok"]


def test_api_budget_stop_then_resume(world: Any) -> None:
    world.sf("set_api_usage", used=79_998, limit=100_000)
    report = world.cycle("sf")[0]
    assert report.outcome == "stopped: API budget"
    loaded = _count(world.engine, accounts)
    world.sf("set_api_usage", used=0, limit=100_000)
    report = world.cycle("sf")[0]
    assert report.outcome == "ok"
    assert _count(world.engine, accounts) == 30 >= loaded


def test_crash_between_page_commit_and_push_loses_nothing(world: Any) -> None:
    import subprocess
    import sys
    script = world.tmp / "crash.py"
    script.write_text(f"""
import os, sys
sys.path.insert(0, {str(Path.cwd())!r})
import sync.push
def die(*a, **k):
    os._exit(9)
sync.push.push = die
import sync.engine
sync.engine.push.push = die
from jobs.cli import main
main(["--config", {str(world.config)!r}, "sync", "--connection", "sf"])
""", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], env={**__import__("os").environ},
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    placed = _count(world.engine, orders)
    assert placed > 0 and _count(world.engine, outbox, outbox.c.state == "acked") == 0
    reports = world.cycle("sf")
    assert reports[0].outcome == "ok"
    with world.engine.connect() as conn:
        refs = [r[0] for r in conn.execute(select(orders.c.source_ref))]
        keys = [r[0] for r in conn.execute(select(provisioning_requests.c.idempotency_key))]
    assert len(refs) == len(set(refs)) == placed          # nothing twice
    assert len(keys) == len(set(keys))
    assert _count(world.engine, outbox, outbox.c.state != "acked") == 0   # nothing lost


def test_two_daemons_on_postgresql_hand_off_each_quote_once(sandbox: Any, pg_engine: Any,
                                                            tmp_path: Path,
                                                            monkeypatch: Any) -> None:
    from e2e_world import World
    from sqlalchemy import text

    from billing_core.adapters.db import make_engine
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    one = World(sandbox, pg_engine, tmp_path)
    with pg_engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
    other = make_engine(str(pg_engine.url), connect_args={"options": f"-csearch_path={schema}"})
    two = World(sandbox, other, tmp_path / "two") if (tmp_path / "two").mkdir() is None else None
    assert two is not None
    results: list[Any] = []
    threads = [threading.Thread(target=lambda w=w: results.append(w.cycle("sf")))
               for w in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ran = [r for batch in results for r in batch if r is not None]
    assert 1 <= len(ran) <= 2
    with pg_engine.connect() as conn:
        refs = [r[0] for r in conn.execute(select(orders.c.source_ref))]
        done = conn.execute(select(func.count()).select_from(handoffs)).scalar()
    assert len(refs) == len(set(refs)) > 0 and done >= len(refs)
    other.dispose()


def test_second_daemon_on_sqlite_refuses(world: Any) -> None:
    from jobs.daemon import DaemonRefused, run_daemon
    from sync.locks import job_lock
    with job_lock(world.engine, "daemon") as got:
        assert got
        with pytest.raises(DaemonRefused, match="already using this SQLite database"):
            run_daemon(world.engine, world.settings, once=True)


def test_resync_of_one_account_and_its_quotes(world: Any) -> None:
    quote = world.sf("create_quote", index=0, account_id=world.sf(
        "update", object="Account", index=9, fields={})["id"], status="Accepted",
        lines=[{"product_index": 0, "quantity": 2, "unit_price": 12}])
    account_id = world.sf("update", object="Account", index=9, fields={})["id"]
    report = world.worker.sync_connection("sf", world.worker.options(
        "manual", account=account_id), wait=True)
    assert report.outcome == "ok" and report.handed_off == 1
    assert _count(world.engine, accounts) == 1
    with world.engine.connect() as conn:
        assert conn.execute(select(orders.c.source_ref)).scalar() == f"sf:{quote['id']}:rev1"


def test_doctor_checks_config_database_and_both_connections(world: Any) -> None:
    from click.testing import CliRunner

    from jobs.cli import main
    result = CliRunner().invoke(main, ["--config", str(world.config), "doctor"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sf:" in result.output and "d365:" in result.output


def test_opt_in_crm_hold_flag_written_with_etag_in_dataverse_and_salesforce(
        sandbox: Any, sqlite_engine: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from e2e_world import World

    from billing_core.adapters.tables import hold_reasons
    sandbox.reset()
    world = World(sandbox, sqlite_engine, tmp_path, extra="[sync]\nwrite_crm_hold = true\n")
    try:
        world.cycle()
        with world.engine.connect() as conn:
            targets = dict(conn.execute(
                select(accounts.c.ext_source, accounts.c.ext_id)
                .join(orders, orders.c.account_id == accounts.c.id)
                .where(orders.c.status == "active").order_by(accounts.c.id)).all())
        assert {"sf", "d365"} <= set(targets)
        world.sf("update", object="Account", id=targets["sf"], fields={"Credit_Limit__c": 1})
        world.dv("set_creditlimit", id=targets["d365"], value=1)
        world.cycle()
        world.cycle()                    # reads billing's own flag back: not finance's hold
        sf_row = world.sbx.salesforce_client().query(
            f"SELECT Credit_Hold__c FROM Account WHERE Id = '{targets['sf']}'")["records"][0]
        dv_row = world.dv("get", table="accounts", id=targets["d365"])
        assert sf_row["Credit_Hold__c"] is True
        assert dv_row["creditonhold"] is True
        with world.engine.connect() as conn:
            reasons = {(r[0], r[1]) for r in conn.execute(
                select(accounts.c.ext_id, hold_reasons.c.reason)
                .join(hold_reasons, hold_reasons.c.account_id == accounts.c.id)
                .where(accounts.c.ext_id.in_(list(targets.values()))))}
        assert reasons == {(targets["sf"], "credit_limit"), (targets["d365"], "credit_limit")}
    finally:
        world.worker.close()


def test_full_resync_reports_what_disappeared_after_the_delete_log_was_purged(world: Any) -> None:
    from datetime import UTC, datetime, timedelta
    world.cycle("sf")
    gone = world.sf("delete_account", index=5)
    gone_id = gone.get("id") or next(iter(gone.values()))
    world.sf("purge_deleted", before=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    report = world.worker.sync_connection("sf", world.worker.options("manual", full=True),
                                          wait=True)
    assert f"account:{gone_id}" in report.disappeared
    with world.engine.connect() as conn:
        assert conn.execute(select(accounts.c.status).where(
            accounts.c.ext_id == gone_id)).scalar() == "crm_deleted"


def test_deletes_made_while_the_delta_token_was_expired_are_found(world: Any) -> None:
    """Dataverse refuses an expired delta token; the connector falls back to a full read in
    an ordinary (incremental) cycle, and what it no longer returns is reported as missing."""
    world.cycle("d365")
    gone = world.dv("delete_account", index=4)["deleted"]
    world.dv("expire_delta_tokens", table="accounts")
    [report] = world.cycle("d365")
    assert report.disappeared == [f"account:{gone}"]
    with world.engine.connect() as conn:
        assert conn.execute(select(accounts.c.status).where(
            accounts.c.ext_id == gone)).scalar() == "crm_deleted"
    assert _count(world.engine, accounts, accounts.c.ext_source == "d365",
                  accounts.c.status == "crm_deleted") == 1
