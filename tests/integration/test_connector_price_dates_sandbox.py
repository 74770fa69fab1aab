"""A Salesforce price start date reaches billing's price rows (issue 14): the sandbox's
PricebookEntry carries a custom ``Price_Start_Date__c``, a user's field map reads it as
``price.effective_from``, and a changed price applies from that day instead of the sync day.
Real HTTPS against the sandbox CRM; SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from billing_core.adapters.tables import products
from billing_core.service.pricing import list_prices
from connectors.registry import build_connector
from connectors.settings import parse_connection
from sync.engine import SyncOptions, run_cycle
from sync.handlers.price import FIRST_PRICE_DATE

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")



@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=20, sides=("salesforce",)) as sbx:
        yield sbx


def _connector(sandbox: Any, overrides: Path) -> Any:
    creds = sandbox.salesforce.credentials
    settings = parse_connection("sf_dates", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "fieldmap_overrides": str(overrides),
        "credentials": {"client_id": creds.client_id, "client_secret": "env:S"}})
    return build_connector(settings, sleep=lambda s: None, environ={"S": creds.client_secret})


def _prices(engine: Engine, product_crm_id: str) -> list[tuple[date, Decimal]]:
    with engine.connect() as conn:
        pid = conn.execute(select(products.c.id).where(
            products.c.ext_id == product_crm_id)).scalar_one()
        return [(p.effective_from, p.unit_price) for p in list_prices(conn, pid)
                if p.currency == "USD"]


def test_a_mapped_price_start_date_dates_the_changed_price(sandbox: Any, engine: Engine,
                                                           tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """First sync: the entry's price P from 2000-01-01 (the first price prices all before).
    The CRM user sets the price to 123.45 with a start date of 16 March 2026: the next cycle
    adds 123.45 from 2026-03-16, not from the day of the sync."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    overrides = tmp_path / "my_fields.toml"
    overrides.write_text('[objects.price.fields]\n'
                         'effective_from = { field = "Price_Start_Date__c", type = "date" }\n')
    connector = _connector(sandbox, overrides)
    assert run_cycle(engine, connector, SyncOptions(push=False)).outcome == "ok"
    entry = connector.read_one("price", sandbox.salesforce.admin(
        "update", {"object": "PricebookEntry", "index": 0, "fields": {}})["id"])
    assert (entry["currency"], entry["effective_from"]) == ("USD", None)
    product = entry["product_crm_id"]
    [(first_day, first_price)] = _prices(engine, product)
    assert first_day == FIRST_PRICE_DATE
    sandbox.salesforce.admin("update", {"object": "PricebookEntry", "id": entry["crm_id"],
                                        "fields": {"UnitPrice": 123.45,
                                                   "Price_Start_Date__c": "2026-03-16"}})
    assert run_cycle(engine, connector, SyncOptions(push=False)).outcome == "ok"
    assert _prices(engine, product) == [(FIRST_PRICE_DATE, first_price),
                                        (date(2026, 3, 16), Decimal("123.45"))]
