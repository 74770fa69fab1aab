"""A CRM price start date reaches billing's price rows (issue 14): the sandbox's Salesforce
PricebookEntry carries a custom ``Price_Start_Date__c`` and its Dataverse product a custom
``new_pricestartdate``; a user's field map reads either as ``price.effective_from``, and a
changed price applies from that day instead of the sync day. Real HTTPS against the sandbox
CRM; SQLite and PostgreSQL."""
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
    with sandbox_server.Sandbox(accounts=20) as sbx:
        yield sbx


def _overrides(tmp_path: Path, field: str) -> Path:
    path = tmp_path / "my_fields.toml"
    path.write_text(f'[objects.price.fields]\neffective_from = {{ field = "{field}", '
                    'type = "date" }\n')
    return path


def _dataverse(sandbox: Any, overrides: Path) -> Any:
    dv = sandbox.dataverse
    settings = parse_connection("dv_dates", {
        "crm": "dynamics", "url": sandbox.url, "tenant_id": dv.tenant,
        "authority_host": sandbox.url, "validate_authority": False,
        "ca_bundle": sandbox.ca_bundle, "fieldmap_overrides": str(overrides),
        "credentials": {"client_id": dv.client_id, "client_secret": "env:S"}})
    return build_connector(settings, sleep=lambda s: None, environ={"S": dv.client_secret})


def _connector(sandbox: Any, overrides: Path) -> Any:
    creds = sandbox.salesforce.credentials
    settings = parse_connection("sf_dates", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "fieldmap_overrides": str(overrides),
        "credentials": {"client_id": creds.client_id, "client_secret": "env:S"}})
    return build_connector(settings, sleep=lambda s: None, environ={"S": creds.client_secret})


def _prices(engine: Engine, product_crm_id: str,
            currency: str = "USD") -> list[tuple[date, Decimal]]:
    with engine.connect() as conn:
        pid = conn.execute(select(products.c.id).where(
            products.c.ext_id == product_crm_id)).scalar_one()
        return [(p.effective_from, p.unit_price) for p in list_prices(conn, pid)
                if p.currency == currency]


def test_a_mapped_price_start_date_dates_the_changed_price(sandbox: Any, engine: Engine,
                                                           tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """First sync: the entry's price P from 2000-01-01 (the first price prices all before).
    The CRM user sets the price to 123.45 with a start date of 16 March 2026: the next cycle
    adds 123.45 from 2026-03-16, not from the day of the sync."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    connector = _connector(sandbox, _overrides(tmp_path, "Price_Start_Date__c"))
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


def test_a_mapped_dataverse_price_start_date_dates_the_changed_price(
        sandbox: Any, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dataverse: the product's list price (``products.price``) with a custom date-only
    ``new_pricestartdate``. First sync: from 2000-01-01; the user sets 123.45 from 16 March
    2026: the next cycle adds 123.45 from 2026-03-16."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    connector = _dataverse(sandbox, _overrides(tmp_path, "new_pricestartdate"))
    assert run_cycle(engine, connector, SyncOptions(push=False)).outcome == "ok"
    guid = sandbox.dataverse.admin("guid", {"table": "products", "index": 0})["id"]
    entry = connector.read_one("price", guid)
    assert entry["effective_from"] is None
    product, currency = entry["product_crm_id"], entry["currency"]
    [(first_day, first_price)] = _prices(engine, product, currency)
    assert first_day == FIRST_PRICE_DATE
    sandbox.dataverse.admin("update", {"table": "products", "id": guid, "values": {
        "price": "123.45", "new_pricestartdate": "2026-03-16"}})
    assert run_cycle(engine, connector, SyncOptions(push=False)).outcome == "ok"
    assert _prices(engine, product, currency) == [(FIRST_PRICE_DATE, first_price),
                                                  (date(2026, 3, 16), Decimal("123.45"))]
