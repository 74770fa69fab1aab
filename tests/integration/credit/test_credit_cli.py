"""``ledgerbridge holds`` and ``ledgerbridge provisioning`` (SQLite: the CLI's default store).
The CLI reads the real clock, so the ledger is set up relative to now."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from credit_helpers import Clock, Ledger, licence_order, make_account, make_products, post_invoice

from billing_core.service.gate import accept_order
from billing_core.service.provisioning import dispatch_pending
from jobs.cli import main


def _cli(engine, *args: str):
    runner = CliRunner(env={"COLUMNS": "200"})   # rich wraps tables at the terminal width
    return runner.invoke(main, ["--database-url", engine.url.render_as_string(False), *args],
                         catch_exceptions=False)


def test_holds_cli(sqlite_engine):
    ledger = Ledger(sqlite_engine, Clock(datetime.now(UTC)))
    today = ledger.clock.today
    acc = ledger.run(lambda u: make_account(u, "CLI1", limit="100.00", crm_hold=True))
    ledger.run(lambda u: post_invoice(u, acc, 15000, issue=today, due=today + timedelta(30)))

    out = _cli(sqlite_engine, "holds", "list", "--json")
    assert out.exit_code == 0 and json.loads(out.output)[0]["reasons"] == ["crm", "credit_limit"]
    assert _cli(sqlite_engine, "holds", "list", "--reason", "manual", "--json").output.strip() \
        == "[]"

    out = _cli(sqlite_engine, "holds", "place", "CLI1", "--note", "fraud check", "--admin", "ana")
    assert out.exit_code == 0, out.output
    shown = json.loads(_cli(sqlite_engine, "holds", "show", "CLI1", "--json").output)
    assert [r["reason"] for r in shown["reasons"]] == ["crm", "credit_limit", "manual"]
    assert shown["exposure_minor"] == 15000 and shown["credit_limit_minor"] == 10000
    assert [h["action"] for h in shown["history"]] == ["placed"] * 3
    table = _cli(sqlite_engine, "holds", "show", str(acc))
    assert "exposure 150.00 USD / limit 100.00 USD" in table.output
    assert "fraud check" in table.output

    out = _cli(sqlite_engine, "holds", "release", "CLI1", "--reason", "crm")
    assert out.exit_code == 2 and "only the CRM clears it" in out.output
    out = _cli(sqlite_engine, "holds", "release", "CLI1", "--admin", "bo")
    assert out.exit_code == 0
    assert "still on hold for: crm" in out.output and "credit_limit" in out.output
    out = _cli(sqlite_engine, "holds", "release", "CLI1")
    assert out.exit_code == 2 and "no manual hold" in out.output and "crm" in out.output
    out = _cli(sqlite_engine, "holds", "show", "NOPE")
    assert out.exit_code == 2 and "not_found" in out.output
    assert "0 account(s)" in _cli(sqlite_engine, "holds", "evaluate").output
    assert "1 account(s)" in _cli(sqlite_engine, "holds", "evaluate", "--all").output


def test_provisioning_cli(sqlite_engine):
    ledger = Ledger(sqlite_engine, Clock(datetime.now(UTC)))
    acc, products = ledger.run(lambda u: (make_account(u, "P1"), make_products(u)))
    ledger.run(lambda u: accept_order(u, licence_order(acc, "q1", 2, products,
                                                       ledger.clock.today, setup=True)))

    def refuse(task):
        from billing_core.adapters.provisioners.base import ProvisionError
        raise ProvisionError("HTTP 400: nope", retriable=False, status=400)

    from credit_helpers import RecordingProvisioner
    dispatch_pending(sqlite_engine, RecordingProvisioner(check=refuse), limit=1)
    rows = json.loads(_cli(sqlite_engine, "provisioning", "list", "--state", "failed",
                           "--json").output)
    assert len(rows) == 1 and rows[0]["last_error"] == "HTTP 400: nope"
    assert _cli(sqlite_engine, "provisioning", "retry", str(rows[0]["id"])).output.strip() \
        == f"request {rows[0]['id']}: pending"
    out = _cli(sqlite_engine, "provisioning", "retry", str(rows[0]["id"]))
    assert out.exit_code == 2 and "only a failed request" in out.output
    assert _cli(sqlite_engine, "provisioning", "retry", "999").exit_code == 2
    out = _cli(sqlite_engine, "provisioning", "dispatch")
    assert out.exit_code == 0 and "2 dispatched" in out.output
    assert "sku=LIC quantity=2" in out.output and "sku=SETUP quantity=1" in out.output
    assert "dispatched" in _cli(sqlite_engine, "provisioning", "list", "--account", "P1").output
    first = rows[0]["id"]
    out = _cli(sqlite_engine, "provisioning", "mark-provisioned", str(first))
    assert out.exit_code == 0 and out.output.strip() == f"request {first}: provisioned"
    states = {r["id"]: r["state"] for r in json.loads(
        _cli(sqlite_engine, "provisioning", "list", "--json").output)}
    assert states[first] == "provisioned" and sorted(states.values()) == [
        "dispatched", "provisioned"]
    assert _cli(sqlite_engine, "provisioning", "mark-provisioned", "999").exit_code == 2


def test_a_dispatch_with_failed_requests_exits_1(sqlite_engine, tmp_path, monkeypatch):
    """Exit-code contract: done, with something needing attention (a request the provisioner
    refused, listed by ``provisioning list --state failed``) is 1, not 0."""
    import socket

    ledger = Ledger(sqlite_engine, Clock(datetime.now(UTC)))
    acc, products = ledger.run(lambda u: (make_account(u, "F1"), make_products(u)))
    ledger.run(lambda u: accept_order(u, licence_order(acc, "qf", 1, products,
                                                       ledger.clock.today)))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    config = tmp_path / "c.toml"
    config.write_text(f'[provisioner]\nkind = "webhook"\nurl = "http://127.0.0.1:{port}/p"\n'
                      'secret_env = "LB_TEST_HOOK"\nmax_attempts = 1\ntimeout_seconds = 1.0\n')
    monkeypatch.setenv("LB_TEST_HOOK", "s")
    out = CliRunner(env={"COLUMNS": "200"}).invoke(main, [
        "--config", str(config), "--database-url", sqlite_engine.url.render_as_string(False),
        "provisioning", "dispatch"])
    assert out.exit_code == 1, out.output
    assert "1 failed" in out.output
