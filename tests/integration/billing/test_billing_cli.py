"""The billing CLI over a SQLite file (the services underneath are tested on both databases)."""
from __future__ import annotations

import json
from datetime import date

from click.testing import CliRunner

from billing_core.adapters.db import UnitOfWork
from billing_core.service.orders import OrderIn, SubscriptionItem, activate_order, place_order
from jobs.cli import main


def _cli(url: str, *args: str):
    return CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)


def test_catalog_usage_bill_run_and_invoices(sqlite_engine, tmp_path) -> None:
    url = str(sqlite_engine.url)
    for args in (["products", "add", "--sku", "SEAT", "--name", "Seat"],
                 ["products", "add", "--sku", "API", "--name", "API", "--kind", "usage",
                  "--model", "volume"],
                 ["prices", "set", "SEAT", "--currency", "usd", "--from", "2026-01-01",
                  "--price", "10.00"],
                 ["prices", "set", "API", "--currency", "USD", "--from", "2026-01-01",
                  "--tier", "100:0.05", "--tier", "inf:0.01"],
                 ["tax-rates", "set", "US", "--region", "CA", "--rate", "0.0725",
                  "--from", "2020-01-01"],
                 ["accounts", "add", "--name", "Acme", "--currency", "USD", "--ext-id", "A1",
                  "--country", "US", "--region", "CA"]):
        res = _cli(url, *args)
        assert res.exit_code == 0, res.output
    csv = tmp_path / "usage.csv"
    csv.write_text("event_id,account,product,quantity,occurred_at\n"
                   "e1,A1,API,150,2026-03-02T00:00:00Z\n"
                   "e1,A1,API,150,2026-03-02T00:00:00Z\n"
                   "e2,A1,API,x,2026-03-02T00:00:00Z\n")
    res = _cli(url, "usage", "import", str(csv), "--json")
    assert res.exit_code == 1           # the good row landed; the refused one needs a look
    out = json.loads(res.output)
    assert (out["imported"], out["duplicates"], out["errors"][0]["field"]) == (1, 1, "quantity")

    dry = json.loads(_cli(url, "bill-run", "--date", "2026-04-01", "--dry-run", "--json").output)
    assert (dry["dry_run"], dry["invoices_created"], dry["run_id"]) == (True, 1, None)
    assert json.loads(_cli(url, "invoices", "list", "--json").output) == []
    run = json.loads(_cli(url, "bill-run", "--date", "2026-04-01", "--json").output)
    assert run["invoices_created"] == 1
    [inv] = json.loads(_cli(url, "invoices", "list", "--account", "A1", "--json").output)
    # volume: 150 units above 100 -> all at 0.01 = 1.50 ; tax 1.50 x 0.0725 = 0.10875 -> 0.11
    assert (inv["number"], inv["total_minor"], inv["tax_minor"]) == ("INV-000001", 161, 11)
    shown = json.loads(_cli(url, "invoices", "show", "INV-000001", "--json").output)
    assert [ln["kind"] for ln in shown["lines"]] == ["usage"] and shown["total"] == "1.61"
    people = _cli(url, "invoices", "show", "INV-000001")
    assert "total 1.61 USD" in people.output
    again = _cli(url, "bill-run", "--date", "2026-04-01")
    assert "created 0 invoices" in again.output


def test_bad_input_is_one_line_and_exit_2(sqlite_engine) -> None:
    url = str(sqlite_engine.url)
    res = _cli(url, "prices", "set", "NOPE", "--currency", "USD", "--from", "2026-01-01",
               "--price", "1")
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["error: not_found: product='NOPE': does not exist"]
    _cli(url, "products", "add", "--sku", "S", "--name", "S")
    res = _cli(url, "prices", "set", "S", "--currency", "XYZ", "--from", "2026-01-01",
               "--price", "1")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "currency='XYZ'" in res.output
    res = _cli(url, "invoices", "show", "INV-999999")
    assert res.exit_code == 2 and "invoice='INV-999999'" in res.output


def test_demo_runs_from_scratch() -> None:
    # the billing demo (``ledgerbridge billing-demo``; ``demo`` itself is the CRM demo's name)
    res = CliRunner().invoke(main, ["billing-demo", "--date", "2026-04-10"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "INV-000003 to Initech KK" in res.output
    assert "bills nothing: 0 new invoices" in res.output
    # an amendment is the CRM demo's (made in the CRM, through the sync cycle:
    # tests/e2e/test_e2e_sync.py), not a second copy here calling billing directly
    assert "Amendment" not in res.output and "`ledgerbridge demo`" in res.output


def test_bill_run_honours_tax_inclusive_from_the_config_file(sqlite_engine, tmp_path) -> None:
    url = str(sqlite_engine.url)
    config = tmp_path / "c.toml"
    config.write_text("[billing]\ntax_inclusive = true\n")
    for args in (["products", "add", "--sku", "SEAT", "--name", "Seat"],
                 ["prices", "set", "SEAT", "--currency", "EUR", "--from", "2026-01-01",
                  "--price", "119.00"],
                 ["tax-rates", "set", "DE", "--rate", "0.19", "--from", "2020-01-01"],
                 ["accounts", "add", "--name", "Gmbh", "--currency", "EUR", "--ext-id", "D1",
                  "--country", "DE"]):
        assert _cli(url, *args).exit_code == 0
    with UnitOfWork(sqlite_engine) as uow:      # a subscription from 1 April
        order = place_order(uow, OrderIn(1, "q1", date(2026, 4, 1), subscriptions=[
            SubscriptionItem(1, 1, date(2026, 4, 1))]))
        activate_order(uow, order)
        uow.commit()
    res = CliRunner().invoke(main, ["--config", str(config), "--database-url", url, "bill-run",
                                    "--date", "2026-04-01", "--json"], catch_exceptions=False)
    assert json.loads(res.output)["invoices_created"] == 1, res.output
    [inv] = json.loads(_cli(url, "invoices", "list", "--account", "D1", "--json").output)
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (10000, 1900, 11900)
