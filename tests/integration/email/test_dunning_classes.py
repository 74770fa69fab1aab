"""Dunning schedules per account class (issue 16, item 4), on SQLite and PostgreSQL.

Worked dates: the bill run of 1 March 2027 posts INV-000001..3 (20.00 USD each, Net 30: due
31 March 2027) to Customer 0 (class ``enterprise``: offsets 10, 30), Customer 1 (no class: the
default -3, 7, 14) and Customer 2 (class ``partner``: ``enabled = false``, no reminders).
So: 28 March INV-000002 reminder_-3; 7 April INV-000002 reminder_7; 10 April INV-000001
reminder_10; 14 April INV-000002 reminder_14; 30 April INV-000001 reminder_30; INV-000003
never. An account whose class the config does not know (``gold``, as a CRM may send) gets the
default schedule and is named with the field and value.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from email_helpers import at, billed_ledger, settings_for
from sqlalchemy import Engine

from billing_core.domain.dunning import Schedules
from billing_core.domain.errors import ValidationError
from billing_core.service import ledger_uow
from billing_core.service.accounts import AccountIn, update_terms, upsert_accounts
from billing_core.service.audit import list_entries
from billing_core.service.dunning import (
    dunning_list,
    owed_reminders,
    queue_reminders,
    unknown_classes,
)
from billing_core.service.email_outbox import list_emails
from config.settings import ConfigError, parse_settings
from jobs.cli import main
from jobs.scheduler import run_dunning
from jobs.worker import Worker

SINCE = date(2027, 1, 1)
SCHEDULES = Schedules((-3, 7, 14), {"enterprise": (10, 30), "partner": ()})


def _classed(engine: Engine) -> list[int]:
    ids = billed_ledger(engine, 3)
    with ledger_uow(engine, clock=lambda: at(date(2027, 3, 2)), actor="cli:test") as uow:
        update_terms(uow, ids[0], account_class="Enterprise", known_classes=SCHEDULES.classes)
        update_terms(uow, ids[2], account_class="partner", known_classes=SCHEDULES.classes)
        uow.commit()
    return ids


def _queue(engine: Engine, day: date) -> list[tuple[str, str]]:
    with ledger_uow(engine, clock=lambda: at(day)) as uow:
        owed = queue_reminders(uow, day, SCHEDULES, SINCE, domain="northwind.test")
        uow.commit()
    return [(d["number"], d["kind"]) for d in owed]


def test_two_classes_each_on_its_own_schedule(engine: Engine) -> None:
    _classed(engine)
    first = {day: _queue(engine, day) for day in (
        date(2027, 3, 28), date(2027, 4, 7), date(2027, 4, 9), date(2027, 4, 10))}
    with ledger_uow(engine, read_only=True) as uow:
        listed = dunning_list(uow.conn, date(2027, 4, 12), SCHEDULES, SINCE)
    then = {day: _queue(engine, day) for day in (
        date(2027, 4, 14), date(2027, 4, 29), date(2027, 4, 30), date(2027, 6, 1))}
    assert first | then == {
        date(2027, 3, 28): [("INV-000002", "reminder_-3")],
        date(2027, 4, 7): [("INV-000002", "reminder_7")],
        date(2027, 4, 9): [],
        date(2027, 4, 10): [("INV-000001", "reminder_10")],
        date(2027, 4, 14): [("INV-000002", "reminder_14")],
        date(2027, 4, 29): [],
        date(2027, 4, 30): [("INV-000001", "reminder_30")],
        date(2027, 6, 1): [],
    }
    # INV-000003 (class partner: no reminders) is not listed either
    assert [(r["document"], r["account_class"], r["reminders"], r["next"]) for r in listed] == [
        ("INV-000001", "enterprise", "reminder_10 queued", "reminder_30 on 2027-04-30"),
        ("INV-000002", "", "reminder_-3 queued, reminder_7 queued",
         "reminder_14 on 2027-04-14")]


def test_a_class_the_config_does_not_know_gets_the_default_schedule(engine: Engine) -> None:
    ids = billed_ledger(engine, 2)
    with ledger_uow(engine) as uow:       # as the sync writes a CRM value: not checked
        upsert_accounts(uow, [AccountIn("Customer 0", "USD", "C0", country="US",
                                        account_class="Gold")])
        uow.commit()
    with ledger_uow(engine, read_only=True) as uow:
        owed = owed_reminders(uow.conn, date(2027, 3, 28), SCHEDULES, SINCE)
        unknown = unknown_classes(uow.conn, SCHEDULES)
    assert [(d["number"], d["account_class"], d["kind"]) for d in owed] == [
        ("INV-000001", "gold", "reminder_-3"), ("INV-000002", None, "reminder_-3")]
    assert [(r["id"], r["note"]) for r in unknown] == [
        (ids[0], "account_class='gold' is not a class in [dunning.classes]: the default "
                 "[dunning] offsets apply")]


def test_finance_may_set_only_a_configured_class_and_it_is_audited(engine: Engine) -> None:
    ids = _classed(engine)
    with ledger_uow(engine) as uow:
        with pytest.raises(ValidationError) as refused:
            update_terms(uow, ids[1], account_class="gold", known_classes=SCHEDULES.classes)
        with pytest.raises(ValidationError) as malformed:
            update_terms(uow, ids[1], account_class="Key Accounts")
    assert (refused.value.field, refused.value.value) == ("account_class", "gold")
    assert "known: enterprise, partner" in refused.value.problem
    assert (malformed.value.field, malformed.value.value) == ("account_class", "Key Accounts")
    with ledger_uow(engine, read_only=True) as uow:
        rows = [r for r in list_entries(uow.conn, account_id=ids[0], entity_type="account")
                if "account_class" in r["changes"]]
    assert [(r["actor"], r["changes"]["account_class"]) for r in rows] == [
        ("cli:test", [None, "enterprise"])]


def test_a_dunning_run_is_audited(engine: Engine) -> None:
    ids = _classed(engine)
    with ledger_uow(engine, clock=lambda: at(date(2027, 4, 10)), actor="cli:finance") as uow:
        queue_reminders(uow, date(2027, 4, 10), SCHEDULES, SINCE, domain="northwind.test")
        uow.commit()
    with ledger_uow(engine, read_only=True) as uow:
        queued = list_entries(uow.conn, entity_type="email")
        [run] = list_entries(uow.conn, entity_type="dunning")
    assert sorted((r["account_id"], r["entity_ref"], r["changes"]["kind"][1]) for r in queued) \
        == [(ids[0], "INV-000001", "reminder_10"), (ids[1], "INV-000002", "reminder_7")]
    assert all(r["actor"] == "cli:finance" and r["action"] == "queued" for r in queued)
    assert (run["actor"], run["action"], run["changes"]) == (
        "cli:finance", "run", {"date": [None, "2027-04-10"], "reminders": [None, 2],
                               "failed": [None, 0]})


CONFIG = ('[email]\nenabled = true\nsince = "2027-01-01"\n'
          'from_address = "billing@northwind.test"\n'
          '[dunning]\nenabled = true\noffsets = "-3, 7, 14"\n'
          '[dunning.classes.enterprise]\noffsets = [10, 30]\n'
          '[dunning.classes.partner]\nenabled = false\n')


def test_dunning_classes_from_the_cli(sqlite_engine: Engine, tmp_path: Path) -> None:
    billed_ledger(sqlite_engine, 2)
    config = tmp_path / "lb.toml"
    config.write_text(CONFIG)

    def cli(*args: str):  # noqa: ANN202
        return CliRunner().invoke(main, ["--config", str(config), "--database-url",
                                         str(sqlite_engine.url), *args])

    done = cli("accounts", "update", "C0", "--class", "enterprise")
    assert done.exit_code == 0, done.output
    assert "account_class = enterprise" in done.stdout
    bad = cli("accounts", "update", "C1", "--class", "gold")
    assert bad.exit_code == 2
    assert "account_class='gold'" in bad.stderr and "known: enterprise, partner" in bad.stderr
    dry = cli("dunning", "run", "--date", "2027-04-10", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert [(r["document"], r["account_class"], r["reminder"])
            for r in json.loads(dry.stdout)] == [("INV-000001", "enterprise", "reminder_10"),
                                                 ("INV-000002", "", "reminder_7")]


def test_class_settings() -> None:
    settings = parse_settings({"dunning": {"offsets": "-3, 7", "classes": {
        "enterprise": {"offsets": [30, 10, 10]}, "smb": {"offsets": "1, 2"},
        "partner": {"enabled": False}, "same": {}}}}, env={})
    assert settings.dunning.schedules() == Schedules(
        (-3, 7), {"enterprise": (10, 30), "smb": (1, 2), "partner": (), "same": (-3, 7)})
    for classes, message in (
            ({"Gold": {}}, "dunning.classes = 'Gold': a class name is lower-case"),
            ({"gold": {"ofsets": "1"}}, "dunning.classes.gold.ofsets = '1': unknown key "
                                        "(did you mean 'offsets'?)"),
            ({"gold": {"offsets": "soon"}}, "dunning.classes.gold.offsets = 'soon': must be "
                                            "whole days"),
            ({"gold": {"offsets": [1.5]}}, "dunning.classes.gold.offsets = [1.5]: must be a "
                                           "list of whole days"),
            ({"gold": {"enabled": "no"}}, "dunning.classes.gold.enabled = 'no': must be true "
                                          "or false")):
        with pytest.raises(ConfigError) as err:
            parse_settings({"dunning": {"classes": classes}}, env={})
        assert message in str(err.value), (classes, str(err.value))


def test_a_field_map_naming_an_unknown_class_refuses_to_start(tmp_path: Path) -> None:
    overrides = tmp_path / "classes.toml"
    overrides.write_text('[objects.account.fields]\naccount_class = { field = '
                         '"accountcategorycode", type = "choice", choices = { "1" = '
                         '"preferred", "2" = "standard" } }\n')
    connection = {"crm": "dynamics", "url": "https://org.crm.dynamics.com",
                  "tenant_id": "00000000-0000-0000-0000-000000000000",
                  "fieldmap_overrides": str(overrides),
                  "credentials": {"client_id": "c", "client_secret": "env:D365_SECRET"}}
    ok = parse_settings({"dunning": {"classes": {"preferred": {}, "standard": {}}},
                         "connections": {"d365": connection}}, env={})
    assert set(ok.dunning.classes or {}) == {"preferred", "standard"}
    with pytest.raises(ConfigError) as err:
        parse_settings({"dunning": {"classes": {"preferred": {}}},
                        "connections": {"d365": connection}}, env={})
    assert str(err.value) == (
        "connections.d365: field map account.account_class choice '2' = 'standard': not a "
        "class in [dunning.classes] (known: preferred)")


def test_the_daemon_job_uses_the_class_schedules_and_names_unknown_classes(
        sqlite_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    ids = _classed(sqlite_engine)
    with ledger_uow(sqlite_engine) as uow:
        update_terms(uow, ids[1], account_class="gold")       # as a CRM may send it
        uow.commit()
    settings = replace(settings_for(1), dunning=parse_settings(
        {"email": {"enabled": True, "since": "2027-01-01", "from_address": "b@northwind.test"},
         "dunning": {"enabled": True, "offsets": "-3, 7, 14", "classes": {
             "enterprise": {"offsets": [10, 30]}, "partner": {"enabled": False}}}},
        env={}).dunning)
    worker = Worker(sqlite_engine, settings, clock=lambda: at(date(2027, 4, 10)))
    try:
        with caplog.at_level("WARNING", logger="jobs.scheduler"):
            run_dunning(worker)
    finally:
        worker.close()
    with ledger_uow(sqlite_engine, read_only=True) as uow:
        queued = sorted((int(r["account_id"]), r["kind"]) for r in list_emails(uow.conn))
    # enterprise: its day-10 reminder; gold (unknown): the default's latest due, day 7
    assert queued == [(ids[0], "reminder_10"), (ids[1], "reminder_7")]
    assert f"account {ids[1]} (Customer 1): account_class='gold' is not a class" in caplog.text
