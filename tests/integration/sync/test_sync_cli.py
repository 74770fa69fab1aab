"""`ledgerbridge status`, `quarantine` and `sync` through the real CLI (click), on SQLite."""
from __future__ import annotations

import json
from decimal import Decimal

from click.testing import CliRunner
from fake_crm import FakeCRM

from jobs.cli import main
from sync.engine import run_cycle


def _invoke(db_url: str, *args: str):
    return CliRunner().invoke(main, ["--database-url", db_url, *args], catch_exceptions=False)


def test_status_is_zero_when_healthy_and_one_when_something_needs_attention(sqlite_engine):
    url = str(sqlite_engine.url)
    assert _invoke(url, "status").exit_code == 1          # no run recorded yet
    crm = FakeCRM()
    crm.seed_basic()
    run_cycle(sqlite_engine, crm)
    result = _invoke(url, "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["attention"] == [] and {r["object"] for r in data["runs"]} >= {"account"}
    crm.put("account", "BAD", name="Bad", currency="USD", credit_limit=Decimal(-1))
    run_cycle(sqlite_engine, crm)
    result = _invoke(url, "status")
    assert result.exit_code == 1 and "quarantine open: 1" in result.output


def test_quarantine_list_retry_and_drop(sqlite_engine):
    url = str(sqlite_engine.url)
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("account", "BAD", name="Bad", currency="XXX")
    crm.put("account", "BAD2", name="Bad", currency="XXX")
    run_cycle(sqlite_engine, crm)
    rows = json.loads(_invoke(url, "quarantine", "list", "--json").output)
    assert {r["crm_id"] for r in rows} == {"BAD", "BAD2"}
    retried = _invoke(url, "quarantine", "retry")
    assert "still refused" in retried.output
    assert retried.exit_code == 1                 # regression: a refused retry exited 0
    drop = _invoke(url, "quarantine", "drop", str(rows[1]["id"]))
    assert "dropped 1" in drop.output
    left = json.loads(_invoke(url, "quarantine", "list", "--json").output)
    assert [r["crm_id"] for r in left] == [rows[0]["crm_id"]]
    assert left[0]["attempts"] == 2


def test_dead_letters_are_listed_and_sent_again(sqlite_engine):
    from sync.engine import SyncOptions
    url = str(sqlite_engine.url)
    crm = FakeCRM()
    crm.seed_basic()
    crm.fail_write["A1"] = "STRING_TOO_LONG"
    run_cycle(sqlite_engine, crm, SyncOptions(push_max_attempts=1))
    rows = json.loads(_invoke(url, "outbox", "list", "--json").output)
    assert [(r["crm_id"], r["state"]) for r in rows] == [("A1", "dead")]
    assert "1 row(s)" in _invoke(url, "outbox", "retry").output
    crm.fail_write.clear()
    run_cycle(sqlite_engine, crm)
    assert json.loads(_invoke(url, "outbox", "list", "--json").output) == []
    assert ("account", "A1") in crm.pushed
