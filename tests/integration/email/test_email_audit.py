"""Audit rows of the email outbox, prices and one-time charges (issue 16, item 5), on SQLite
and PostgreSQL: each action leaves its row with the actor (``cli:<user>``, ``api:<token>``,
``system``) and the changed fields.

Figures: ``billed_ledger`` (email_helpers): accounts Customer 0..n-1, one invoice of 20.00
USD each (INV-000001..n); the product SEAT at 10.00 USD from 2020-01-01.
"""
from __future__ import annotations

import getpass
from datetime import date
from pathlib import Path

from click.testing import CliRunner
from email_helpers import Inbox, at, billed_ledger, settings_for
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from billing_core.adapters.tables import products
from billing_core.service import ledger_uow
from billing_core.service.accounts import update_terms
from billing_core.service.audit import list_entries
from billing_core.service.email_outbox import cancel, list_emails
from billing_core.service.orders import OneTimeItem, OrderIn, place_order
from billing_core.service.pricing import ProductIn, add_product, set_price
from config.settings import Settings
from jobs.api.app import build_app
from jobs.api.auth import create_token
from jobs.cli import main
from jobs.mailer import queue, send_pending


def _audit(engine: Engine, **filters: object) -> list[dict]:
    with engine.connect() as conn:
        return list_entries(conn, limit=10_000, **filters)  # type: ignore[arg-type]


def test_sends_record_the_sender_and_the_outcome(engine: Engine,
                                                 smtp: tuple[Inbox, int]) -> None:
    _inbox, port = smtp
    ids = billed_ledger(engine, 2, no_email=(1,))
    report = send_pending(engine, settings_for(port), actor="cli:mailer")
    assert (report.sent, report.failed) == (1, 1)
    rows = _audit(engine, entity_type="email")
    assert [(r["actor"], r["action"], r["account_id"], r["entity_ref"], r["changes"]["state"])
            for r in rows] == [("cli:mailer", "sent", ids[0], "invoice INV-000001",
                                ["sending", "sent"])]


def test_retry_and_cancel_from_the_cli_and_the_api(engine: Engine, tmp_path: Path) -> None:
    ids = billed_ledger(engine, 3, no_email=(0, 1, 2))
    queue(engine, settings_for(1))                          # three failed: no address
    with ledger_uow(engine) as uow:
        rows = {int(r["account_id"]): int(r["id"]) for r in list_emails(uow.conn)}
        token = create_token(uow, "finance-bot", ["billing:write", "billing:read"])[1]
        uow.commit()
    assert len(rows) == 3
    if engine.dialect.name == "sqlite":
        config = tmp_path / "lb.toml"
        config.write_text("")
        cli = CliRunner().invoke(main, ["--config", str(config), "--database-url",
                                        str(engine.url), "email", "cancel",
                                        str(rows[ids[0]])])
        assert cli.exit_code == 0, cli.output
        assert f"cancelled by cli:{getpass.getuser()}" in cli.stdout
        cancelled_by = f"cli:{getpass.getuser()}"
    else:
        with ledger_uow(engine, actor="cli:someone") as uow:
            cancel(uow, rows[ids[0]])
            uow.commit()
        cancelled_by = "cli:someone"
    with ledger_uow(engine, clock=lambda: at(date(2027, 3, 2))) as uow:
        update_terms(uow, ids[1], billing_email="ap@one.example")
        uow.commit()
    app = build_app(engine, Settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        auth = {"Authorization": f"Bearer {token}"}
        retried = client.post(f"/billing/emails/{rows[ids[1]]}:retry", headers=auth)
        assert retried.status_code == 200, retried.text
        assert (retried.json()["state"], retried.json()["recipient"]) == ("queued",
                                                                          "ap@one.example")
        cancelled = client.post(f"/billing/emails/{rows[ids[2]]}:cancel", headers=auth)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "skipped"
        again = client.post(f"/billing/emails/{rows[ids[2]]}:cancel", headers=auth)
        assert again.status_code == 409, again.text
        missing = client.post("/billing/emails/999:retry", headers=auth)
        assert missing.status_code == 404, missing.text
        listed = client.get("/billing/emails?state=skipped", headers=auth)
        assert [r["id"] for r in listed.json()["items"]] == sorted(
            [rows[ids[0]], rows[ids[2]]])
    found = [(r["actor"], r["action"], r["account_id"], r["changes"])
             for r in _audit(engine, entity_type="email")]
    assert found == [
        (cancelled_by, "cancelled", ids[0], {"state": ["failed", "skipped"]}),
        ("api:finance-bot", "retried", ids[1], {"state": ["failed", "queued"],
                                                "recipient": [None, "ap@one.example"]}),
        ("api:finance-bot", "cancelled", ids[2], {"state": ["failed", "skipped"]}),
    ]


def test_prices_and_one_time_charges_are_audited(engine: Engine) -> None:
    ids = billed_ledger(engine, 1)
    with ledger_uow(engine, actor="cli:pricing") as uow:
        seat = int(uow.conn.execute(select(products.c.id).where(
            products.c.sku == "SEAT")).scalar_one())
        set_price(uow, seat, "USD", date(2020, 1, 1), "10.00")        # unchanged: no row
        set_price(uow, seat, "USD", date(2020, 1, 1), "12.50")        # changed
        set_price(uow, seat, "EUR", date(2027, 1, 1), "9")            # new
        setup = add_product(uow, ProductIn(sku="SETUP", name="Setup", kind="one_time"))
        set_price(uow, setup, "USD", date(2020, 1, 1), "500")
        place_order(uow, OrderIn(ids[0], "q-setup", date(2027, 3, 5), one_time_charges=[
            OneTimeItem(setup, 2, date(2027, 3, 5))]))
        uow.commit()
    prices = [(r["actor"], r["action"], r["entity_ref"], r["changes"])
              for r in _audit(engine, entity_type="price") if r["actor"] == "cli:pricing"]
    assert prices == [
        ("cli:pricing", "set", "SEAT USD from 2020-01-01", {"unit_price": ["10", "12.5"]}),
        ("cli:pricing", "set", "SEAT EUR from 2027-01-01", {
            "product": [None, "SEAT"], "currency": [None, "EUR"],
            "effective_from": [None, "2027-01-01"], "unit_price": [None, "9"],
            "tiers": [None, []]}),
        ("cli:pricing", "set", "SETUP USD from 2020-01-01", {
            "product": [None, "SETUP"], "currency": [None, "USD"],
            "effective_from": [None, "2020-01-01"], "unit_price": [None, "500"],
            "tiers": [None, []]}),
    ]
    [charge] = _audit(engine, entity_type="one_time_charge")
    assert (charge["actor"], charge["action"], charge["account_id"], charge["entity_ref"]) == (
        "cli:pricing", "created", ids[0], "q-setup")
    assert {k: v[1] for k, v in charge["changes"].items()} == {
        "order_id": charge["changes"]["order_id"][1], "product_id": setup, "quantity": "2",
        "charge_date": "2027-03-05"}
